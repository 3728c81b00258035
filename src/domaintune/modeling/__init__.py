"""Loading models and tokenizers, run folders, chat rendering, generation, the method wrappers. May import: core.
"""
