"""`domaintune plan`: a training step's memory, per component, and whether it fits, without loading the model."""

from __future__ import annotations

from domaintune.cli.common import add_verb, overrides_only


def register(subparsers) -> None:
    parser = add_verb(subparsers, "plan", "estimate a training step's peak memory (weights, gradients, optimizer "
                      "state, activations) and whether it fits, from the model's config.json",
                      reads_config=True, writes=False)
    parser.set_defaults(run=run)


def run(ns) -> None:
    from domaintune import api

    plan = api.run_plan(api.load_config(ns.config, overrides_only(ns)))
    print(plan.table())
    plan.check_fits()  # a step that cannot fit answers like `train` would: one line, a non-zero exit
