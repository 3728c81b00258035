"""The demo's LoRA training for a few steps: wall time, real tokens/s and peak RSS from its run card.

    PYTHONPATH=<checkout>/src python bench/demo_steps.py [--steps 6] [--all-logits]

Run from a folder where `domaintune demo` has prepared `runs/demo/prepared`. PYTHONPATH picks the code:
point it at another checkout's src (a `git worktree` of an older commit) to time two versions side by
side on the same data. `--all-logits` computes the LM head at every position instead of only where a
token is scored (the demo scores every token anyway, so this shows what the loss-position path costs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile

import domaintune
from domaintune import demo_config

try:
    from domaintune.training import train as training
except ImportError:  # a checkout from before the packages by layer
    from domaintune import train as training


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--all-logits", action="store_true")
    args = parser.parse_args()
    if args.all_logits:
        training.takes_loss_positions = lambda model: False
    out = tempfile.mkdtemp(prefix="demo_steps_")
    cfg = demo_config([f"train.max_steps={args.steps}", f"train.output_dir={out}/lora"])
    run = training.run_train(cfg)
    card = json.loads((run / "run_card.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    print(f"{domaintune.__file__}: {args.steps} steps{' (all logits)' if args.all_logits else ''}: "
          f"{card['train_wall_seconds']} s, {card['train_tokens_per_second']} real tokens/s, "
          f"peak RSS {card['peak_rss_bytes'] / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
