"""Stage 2, train: the Trainer pipeline, DPO, batching, checkpoints, monitoring. May import: evaluation, data,
modeling, core.
"""
