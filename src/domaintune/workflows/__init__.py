"""Workflows that chain stages: `demo` and `sweep`. May import every layer below the API.
"""
