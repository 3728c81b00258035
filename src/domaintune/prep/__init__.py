"""The steps of `domaintune prepare`, one module each: readers -> formats (mapping + cleaning) ->
filters -> dedup -> splits (+ leakage, weights) -> augment -> card. `domaintune.prepare` runs them."""
