"""Merged models and GGUF files. May import: evaluation, data, modeling, core.
"""
