"""Stage 1, prepare: sources, readers, cleaning, filters, dedup, splits, augmentation, the data card; also ships
the packaged data files. May import: modeling, core.
"""
