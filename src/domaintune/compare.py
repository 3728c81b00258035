"""Stage 4, compare: metrics.json (+ run_card.json) of several folders -> one table and report.md."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import DomaintuneError
from .io import atomic_write_json, atomic_write_text, read_json

COLUMNS = [
    # (key, header, format)
    ("name", "model", "{}"),
    ("perplexity", "test perplexity", "{:.3f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro-F1", "{:.3f}"),
    ("trainable_parameters", "trainable params", "{:,}"),
    ("weights_bytes", "weights on disk", "{}"),
    ("train_wall_seconds", "train time (s)", "{:.1f}"),
    ("train_tokens_per_second", "train tok/s", "{:.0f}"),
]


def comparison_row(folder: str | Path, name: str | None = None) -> dict:
    folder = Path(folder)
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise DomaintuneError(f"{folder}: metrics.json is missing; run `domaintune evaluate {folder}` first")
    row = {"name": name or folder.name, "folder": str(folder)}
    row.update(read_json(metrics_path))
    card_path = folder / "run_card.json"
    if card_path.is_file():
        card = read_json(card_path)
        row.update({k: card.get(k) for k in (
            "method", "trainable_parameters", "total_parameters", "weights_bytes",
            "train_wall_seconds", "train_tokens_per_second", "peak_rss_bytes")})
    else:
        row.update({"method": "base", "trainable_parameters": 0})
    return row


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "{}" and isinstance(value, int):
        return human_bytes(value)
    return fmt.format(value)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def markdown_table(rows: list[dict]) -> str:
    header = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(r.get(k), f) for k, _, f in COLUMNS) + " |" for r in rows]
    return "\n".join([header, rule, *body])


def text_table(rows: list[dict]) -> str:
    cells = [[h for _, h, _ in COLUMNS]] + [[_cell(r.get(k), f) for k, _, f in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_compare(folders: list[str | Path], output_dir: str | Path, names: list[str] | None = None) -> Path:
    """Write report.md and comparison.json for the given evaluated folders; returns the report path."""
    if not folders:
        raise DomaintuneError("compare needs at least one evaluated folder (a run folder or runs/base)")
    rows = [comparison_row(f, names[i] if names else None) for i, f in enumerate(folders)]
    output_dir = Path(output_dir)
    atomic_write_json(output_dir / "comparison.json", rows)
    report = render_report(rows)
    path = atomic_write_text(output_dir / "report.md", report)
    return path


def render_report(rows: list[dict]) -> str:
    lines = ["# domaintune comparison", "", markdown_table(rows), ""]
    base = next((r for r in rows if r.get("method") == "base"), None)
    for row in rows:
        if base is None or row is base or row.get("perplexity") is None:
            continue
        change = (row["perplexity"] / base["perplexity"] - 1) * 100
        line = f"- **{row['name']}**: test perplexity {change:+.1f}% vs {base['name']}"
        if row.get("accuracy") is not None and base.get("accuracy") is not None:
            line += f", accuracy {row['accuracy'] - base['accuracy']:+.3f}"
            line += f", macro-F1 {row['macro_f1'] - base['macro_f1']:+.3f}"
        lines.append(line)
    lines += ["", "Perplexity is token-weighted over the test documents' text; accuracy and macro-F1 come from "
              "scoring each label's log-likelihood as the assistant's answer.", "",
              "<details><summary>raw figures</summary>", "", "```json", json.dumps(rows, indent=2), "```",
              "", "</details>", ""]
    return "\n".join(lines)
