"""Scoring, metrics, the TF-IDF baseline, `evaluate`. May import: data, modeling, core.
"""
