"""Resumable checkpoints that never look complete when they are not.

transformers' Trainer writes `checkpoint-N/` file by file, so a kill while saving leaves a folder that
`get_last_checkpoint` would happily resume from. We add a marker file, written atomically after the
Trainer has finished the whole checkpoint, and resume only from marked checkpoints.

A run trains in `.<name>.partial/` beside its final folder; only a finished run is renamed into place,
so the previous complete run stays readable until the new one replaces it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from domaintune.core.io import atomic_write_text

MARKER = "domaintune_complete"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def work_dir(output_dir: str | Path) -> Path:
    output_dir = Path(output_dir)
    return output_dir.parent / f".{output_dir.name}.partial"


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Marked checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints_dir.iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found) if (p / MARKER).is_file()]


def last_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    done = complete_checkpoints(checkpoints_dir)
    return done[-1] if done else None


def remove_incomplete(checkpoints_dir: Path) -> list[str]:
    """Delete checkpoint folders without a marker (a kill hit them mid-save); returns their names."""
    removed = []
    if checkpoints_dir.is_dir():
        for path in checkpoints_dir.iterdir():
            if _STEP.match(path.name) and not (path / MARKER).is_file():
                shutil.rmtree(path)
                removed.append(path.name)
    return removed


class MarkCompleteCallback(TrainerCallback):
    """Runs after the Trainer has written every file of a checkpoint."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            atomic_write_text(folder / MARKER, f"{state.global_step}\n")
