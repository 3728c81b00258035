"""The comparison as tables: the columns (each a comparison.json field) and the terminal text.

Quality leads (every figure with its 95% interval and, for a model, whether it differs from the base);
cost follows, in a training table and a serving table, so that neither is wider than a laptop screen.
report.md (markdown.py) and report.html (html.py) render the same cells; all read them from here.
"""

from __future__ import annotations

import textwrap

from domaintune.reporting.paired import significance_marks

NAME = ("name", "model", "{}")
QUALITY_COLUMNS = [
    # (key in comparison.json rows, header, format); a quality key's interval is `<key>_ci`
    NAME,
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro-F1", "{:.3f}"),
    ("perplexity", "test ppl", "{:.3f}"),
    ("general_perplexity", "general ppl", "{:.2f}"),
]
TRAINING_COST_COLUMNS = [
    NAME,
    ("trainable_parameters", "trainable params", "{:,}"),
    ("total_parameters", "total params", "{:,}"),
    ("weights_bytes", "size on disk", "bytes"),
    ("train_wall_seconds", "train s", "{:.1f}"),
    ("train_tokens_per_second", "train tok/s", "{:.0f}"),
    ("peak_train_rss_bytes", "peak train mem", "bytes"),
]
SERVING_COST_COLUMNS = [
    NAME,
    ("latency_kind", "latency kind", "{}"),
    ("load_seconds", "load s", "{:.2f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p95_ms", "p95 ms", "{:.1f}"),
    ("requests_per_second", "req/s", "{:.1f}"),
    ("generated_tokens_per_second", "gen tok/s", "{:.1f}"),
    ("rss_after_load_bytes", "mem after load", "bytes"),
    ("peak_rss_generating_bytes", "peak mem generating", "bytes"),
    ("peak_rss_classifying_bytes", "peak mem classifying", "bytes"),
]
COST_TABLES = (("COST: training", TRAINING_COST_COLUMNS), ("COST: serving", SERVING_COST_COLUMNS))
MARKS = ("* differs from the base at 5% (paired test on the same examples: McNemar's exact test for accuracy, "
         "paired bootstrap otherwise); † no significant difference (p >= 0.05). [low, high]: 95% bootstrap "
         "interval (for accuracy differences it can exclude 0 where McNemar, exact on the few discordant "
         "examples, does not)")

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


def quality_cell(row: dict, key: str, fmt: str, marks: dict[tuple[str, str], str]) -> str:
    """The figure, its 95% interval where the folder kept predictions, and its mark against the base."""
    text = cell(row.get(key), fmt)
    if row.get(key) is None or key == "name":
        return text
    if row.get(f"{key}_ci"):
        low, high = row[f"{key}_ci"]
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    if row.get("computed") == "analytic expectation":
        text += " (expected)"
    return text + marks.get((row["name"], key), "")


def present(columns: list[tuple], rows: list[dict]) -> list[tuple]:
    return [c for c in columns if any(r.get(c[0]) is not None for r in rows)]


def table_cells(rows: list[dict], columns: list[tuple]) -> list[list[str]]:
    shown = present(columns, rows)
    return [[h for _, h, _ in shown]] + [[cell(r.get(k), f) for k, _, f in shown] for r in rows]


def quality_cells(rows: list[dict], references: list[dict], marks: dict) -> list[list[str]]:
    shown = present(QUALITY_COLUMNS, rows)
    body = [[quality_cell(r, k, f, marks) for k, _, f in shown] for r in rows]
    body += [[quality_cell(dict(r, name=f"{r['name']} (reference)"), k, f, {})
              for k, _, f in shown] for r in references]
    return [[h for _, h, _ in shown]] + body


def signed(value: float, fmt: str) -> str:
    return fmt.replace("{:", "{:+").format(value)


def difference_cell(test: dict | None, fmt: str) -> str:
    """`+0.120 [+0.050, +0.190] p=0.003 *`: the paired difference, its interval, p and the mark."""
    if test is None:
        return "-"
    low, high = test["difference_ci"]
    mark = "*" if test["significant"] else "†"
    p_value = "p<0.001" if test["p_value"] < 0.001 else f"p={test['p_value']:.3f}"
    return f"{signed(test['difference'], fmt)} [{signed(low, fmt)}, {signed(high, fmt)}] {p_value} {mark}"


def paired_cells(results: list[dict]) -> list[list[str]]:
    shown = [c for c in QUALITY_COLUMNS[1:] if any(c[0] in r["tests"] for r in results)]
    head = ["model", "minus"] + [h for _, h, _ in shown]
    return [head] + [[r["model"], r["against"]] + [difference_cell(r["tests"].get(k), f) for k, _, f in shown]
                     for r in results]


def never_predicted(rows: list[dict]) -> list[str]:
    """One line per model and label it never predicts on the test rows (a column of zeros)."""
    lines = []
    for row in rows:
        matrix = row.get("confusion_matrix")
        if not matrix:
            continue
        counts = matrix["rows_gold_cols_predicted"]
        for j, label in enumerate(matrix["labels"]):
            if not any(gold_row[j] for gold_row in counts):
                gold = sum(counts[j])
                lines.append(f"{row['name']} never predicts '{label}' (0 of {gold} {label} test rows)")
    return lines


def per_class_f1_line(row: dict) -> str:
    classes = ", ".join(f"{label} {c['f1']:.2f}" for label, c in row["per_class"].items())
    return f"{row['name']}: {classes}"


def feedback_lines(feedback: dict) -> list[str]:
    lines = []
    for p in feedback["pairs"]:
        rate = ("no decisive vote" if p["win_rate_a"] is None else
                f"{p['model_a']} win rate {p['win_rate_a']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}] (Wilson 95%)")
        lines.append(f"{p['model_a']} vs {p['model_b']}: {p['model_a']} wins {p['wins_a']}, {p['model_b']} wins "
                     f"{p['wins_b']}, ties {p['ties']}; {rate}; {p['votes']} votes by {p['reviewers']} reviewers")
    return lines or ["no votes yet"]


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


def aligned(cells: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def cost_lines(rows: list[dict]) -> list[str]:
    """The cost tables, then what a timed request is."""
    lines = []
    for title, columns in COST_TABLES:
        cells = table_cells(rows, columns)
        if len(cells[0]) > 1:
            lines += ["", title, *aligned(cells)]
    notes = latency_notes(rows)
    return lines + (["", "latency kind:"] + [f"  {n}" for n in notes] if notes else [])


def text_table(rows: list[dict]) -> str:
    """The quality table (figures with their intervals), then the cost tables."""
    return "\n".join(["QUALITY", *aligned(quality_cells(rows, [], {})), *cost_lines(rows)])


def text_report(report: dict) -> str:
    """compare's terminal output: quality with the reference rows and marks, the paired differences,
    per-class F1 and the classes never predicted, cost, the reviewers' votes and every note."""
    rows, paired = report["rows"], report.get("paired_tests", [])
    lines = ["QUALITY", *aligned(quality_cells(rows, report.get("reference_rows", []), significance_marks(paired))),
             *textwrap.wrap(MARKS, 110)]
    if paired:
        lines += ["", "PAIRED DIFFERENCES (model minus reference, same examples)", *aligned(paired_cells(paired))]
    with_classes = [r for r in rows if r.get("per_class")]
    if with_classes:
        lines += ["", "per-class F1:", *(f"  {per_class_f1_line(r)}" for r in with_classes)]
    lines += never_predicted(rows) + cost_lines(rows)
    if report.get("feedback"):
        lines += ["", f"reviewers' votes ({report['feedback']['database']}):",
                  *(f"  {line}" for line in feedback_lines(report["feedback"]))]
    notes = report.get("notes", [])
    return "\n".join(lines + ([""] + [f"note: {n}" for n in notes] if notes else []))
