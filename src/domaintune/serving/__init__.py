"""Stage 4: the OpenAI-compatible API, the blind review page and the feedback store and export. May import:
export, training, evaluation, data, modeling, core.
"""
