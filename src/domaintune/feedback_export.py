"""`domaintune feedback export`: reviewers' votes -> training data for the next round.

Writes, as one folder that appears only when complete:
    preference.jsonl   {"prompt", "chosen", "rejected", ...} per decisive vote (ties carry no preference);
                       TRL's standard preference format, read by `train.method: dpo`
    sft.jsonl          {"prompt", "completion", ...} per answer whose every given rating is 4 or 5
    export_card.json   counts and where they came from
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from .errors import DomaintuneError
from .feedback_store import FeedbackStore
from .io import atomic_write_json, atomic_write_text
from .outputs import check_output, staged_output

GOOD_RATING = 4


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def preference_rows(voted: list) -> list[dict]:
    rows = []
    for v in voted:
        if v["choice"] == "tie":
            continue
        left_won = v["choice"] == "A"
        rows.append({
            "prompt": v["prompt"],
            "chosen": v["left_answer"] if left_won else v["right_answer"],
            "rejected": v["right_answer"] if left_won else v["left_answer"],
            "chosen_model": v["left_model"] if left_won else v["right_model"],
            "rejected_model": v["right_model"] if left_won else v["left_model"],
            "comparison_id": v["id"],
        })
    return rows


def sft_rows(voted: list) -> list[dict]:
    rows, seen = [], set()
    for v in voted:
        for side in ("left", "right"):
            ratings = {"quality": v[f"{side}_quality"], "domain_fit": v[f"{side}_domain_fit"]}
            given = [r for r in ratings.values() if r is not None]
            answer = v[f"{side}_answer"]
            if not given or min(given) < GOOD_RATING or (v["prompt"], answer) in seen:
                continue
            seen.add((v["prompt"], answer))
            rows.append({"prompt": v["prompt"], "completion": answer, "model": v[f"{side}_model"], **ratings,
                         "comparison_id": v["id"]})
    return rows


def run_feedback_export(db_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Export the votes in `db_path` into `out_dir`; returns the export card.

    An existing `out_dir` is replaced only if it is a feedback export, or with `overwrite` (outputs.py).
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise DomaintuneError(f"votes database not found: {db_path} (it is written by `domaintune serve`)")
    check_output(out_dir, "feedback-export", [db_path], overwrite, "--out")
    voted = FeedbackStore(db_path).voted_comparisons()
    preference, sft = preference_rows(voted), sft_rows(voted)
    card = {
        "database": str(db_path.resolve()),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "votes": len(voted),
        "ties": sum(v["choice"] == "tie" for v in voted),
        "preference_pairs": len(preference),
        "sft_rows": len(sft),
        "sft_rule": f"every rating given for the answer is >= {GOOD_RATING}",
    }
    with staged_output(out_dir, "feedback-export", overwrite) as folder:
        atomic_write_text(folder / "preference.jsonl", _jsonl(preference))
        atomic_write_text(folder / "sft.jsonl", _jsonl(sft))
        atomic_write_json(folder / "export_card.json", card)
    return card
