"""Stage 3, compare: the comparison table, HTML report, latency. May import: export, training, evaluation, data,
modeling, core.
"""
