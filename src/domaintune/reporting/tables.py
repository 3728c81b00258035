"""The comparison as tables: the columns (each a comparison.json field), the terminal table, report.md.

report.html (html.py) renders the same columns; both read them from here.
"""

from __future__ import annotations

COLUMNS = [
    # (key in comparison.json rows, header, format)
    ("name", "model", "{}"),
    ("perplexity", "test ppl", "{:.3f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro-F1", "{:.3f}"),
    ("general_perplexity", "general ppl", "{:.2f}"),
    ("trainable_parameters", "trainable params", "{:,}"),
    ("total_parameters", "total params", "{:,}"),
    ("weights_bytes", "size on disk", "bytes"),
    ("train_wall_seconds", "train s", "{:.1f}"),
    ("train_tokens_per_second", "train tok/s", "{:.0f}"),
    ("peak_train_rss_bytes", "peak train mem", "bytes"),
    ("load_seconds", "load s", "{:.2f}"),
    ("latency_kind", "latency kind", "{}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p95_ms", "p95 ms", "{:.1f}"),
    ("requests_per_second", "req/s", "{:.1f}"),
    ("generated_tokens_per_second", "gen tok/s", "{:.1f}"),
    ("rss_after_load_bytes", "mem after load", "bytes"),
    ("peak_rss_generating_bytes", "peak mem generating", "bytes"),
    ("peak_rss_classifying_bytes", "peak mem classifying", "bytes"),
]

# What one timed request is, per `latency_kind`: printed under every table that shows latencies.
LATENCY_NOTES = {
    "generate": "model.generate per request (batch of one, greedy, exactly {max_new_tokens} new tokens); "
                "prompt tokenized before the clock, warm-up excluded, fresh process per model",
    "classify": "one forward pass of model + classification head per request (batch of one, pre-tokenized "
                "text of at most {input_tokens_max} tokens), warm-up excluded, fresh process per model; no "
                "token is generated, so it is not comparable with a generate row",
    "tfidf-predict": "TF-IDF transform + logistic-regression predict of one raw text per request "
                     "(vectorizing included), timed by `domaintune baseline` on the test rows; not comparable "
                     "with the language models' rows",
}


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "bytes":
        return human_bytes(value)
    return fmt.format(value)


def table_cells(rows: list[dict]) -> list[list[str]]:
    present = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    return [[h for _, h, _ in present]] + [[cell(r.get(k), f) for k, _, f in present] for r in rows]


def latency_notes(rows: list[dict]) -> list[str]:
    """One line per latency kind present: what a timed request of that kind is."""
    notes = []
    for kind, note in LATENCY_NOTES.items():
        timed = [r for r in rows if r.get("latency_kind") == kind]
        if timed:
            longest = max((r["input_tokens_max"] for r in timed if r.get("input_tokens_max")), default=None)
            notes.append(f"{kind}: " + note.format(max_new_tokens=timed[0].get("max_new_tokens"),
                                                   input_tokens_max=longest))
    return notes


def text_table(rows: list[dict]) -> str:
    cells = table_cells(rows)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = latency_notes(rows)
    return "\n".join(lines + (["", "latency kind:"] + [f"  {n}" for n in notes] if notes else []))


def render_markdown(rows: list[dict]) -> str:
    cells = table_cells(rows)
    lines = ["# domaintune comparison", "", "| " + " | ".join(cells[0]) + " |",
             "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    lines.append("")
    lines += [f"- latency kind {note}" for note in latency_notes(rows)]
    for row in rows:
        if row.get("perplexity_change_pct") is not None and row["variant"] != "base":
            line = f"- **{row['name']}**: test perplexity {row['perplexity_change_pct']:+.1f}% vs base"
            if row.get("forgetting_pct") is not None:
                line += f", general-text perplexity {row['forgetting_pct']:+.1f}% (forgetting)"
            lines.append(line)
    lines += ["", "Every figure is a field of comparison.json; report.html has the plots and samples.", ""]
    return "\n".join(lines)
