"""The steps of `domaintune prepare`, one module each: readers -> formats (mapping + cleaning) ->
filters -> dedup -> splits (+ leakage, weights) -> augment (EDA, paraphrase) -> card. `store` holds the
rows (memory-mapped Arrow) that the steps work on; `domaintune.prepare` runs them in order."""
