"""`domaintune feedback export`: reviewers' votes -> training data for the next round.

Writes, as one folder that appears only when complete:
    preference.jsonl   {"prompt", "chosen", "rejected", ...} per distinct decisive ballot (ties carry no
                       preference); TRL's standard preference format, read by `train.method: dpo`
    sft.jsonl          {"prompt", "completion", ...} per answer whose every given rating is 4 or 5
    export_card.json   counts, per reviewer and per prompt source, and where they came from

Every row carries where its prompt came from (`source_split`: val, review or typed; `source_id`: the
prepared row's id, null when typed) and who voted, so training can refuse prompts that repeat a test
row (`feedback_leaks.py`). A (prompt, chosen, rejected) triple is written once however many reviewers
cast it; `reviewers` lists them.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json, atomic_write_text
from domaintune.core.outputs import check_output, staged_output
from domaintune.serving.feedback_store import FeedbackStore

GOOD_RATING = 4


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _provenance(vote) -> dict:
    return {"source_split": vote["source"], "source_id": vote["source_id"], "comparison_id": vote["id"]}


def preference_rows(voted: list) -> list[dict]:
    rows: dict[tuple[str, str, str], dict] = {}
    for v in voted:
        if v["choice"] == "tie":
            continue
        won, lost = ("left", "right") if v["choice"] == "A" else ("right", "left")
        triple = (v["prompt"], v[f"{won}_answer"], v[f"{lost}_answer"])
        if triple in rows:
            if v["reviewer"] not in rows[triple]["reviewers"]:
                rows[triple]["reviewers"].append(v["reviewer"])
            continue
        rows[triple] = {"prompt": triple[0], "chosen": triple[1], "rejected": triple[2],
                        "chosen_model": v[f"{won}_model"], "rejected_model": v[f"{lost}_model"],
                        **_provenance(v), "reviewers": [v["reviewer"]]}
    return list(rows.values())


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
                         **_provenance(v), "reviewer": v["reviewer"]})
    return rows


def reviewer_counts(voted: list) -> dict[str, dict[str, int]]:
    """Votes and decisive votes per reviewer, most votes first: one reviewer carrying most of the
    preference data is worth knowing before training on it."""
    votes = Counter(v["reviewer"] for v in voted)
    decisive = Counter(v["reviewer"] for v in voted if v["choice"] != "tie")
    return {name: {"votes": n, "decisive": decisive[name]} for name, n in votes.most_common()}


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
    ties = sum(v["choice"] == "tie" for v in voted)
    card = {
        "database": str(db_path.resolve()),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "votes": len(voted),
        "ties": ties,
        "preference_pairs": len(preference),
        "duplicate_pairs_merged": len(voted) - ties - len(preference),
        "reviewers": reviewer_counts(voted),
        "votes_by_source_split": dict(Counter(v["source"] for v in voted)),
        "sft_rows": len(sft),
        "sft_rule": f"every rating given for the answer is >= {GOOD_RATING}",
    }
    with staged_output(out_dir, "feedback-export", overwrite) as folder:
        atomic_write_text(folder / "preference.jsonl", _jsonl(preference))
        atomic_write_text(folder / "sft.jsonl", _jsonl(sft))
        atomic_write_json(folder / "export_card.json", card)
    return card
