"""report.html: one self-contained page (inline SVG plots, no scripts, no network) from comparison.json.

Each plot's caption names the comparison.json fields it draws, and the table headers carry the field
names, so every number on the page can be traced back to the JSON embedded at the bottom. Quality comes
first, then cost in two tables, each narrow enough for a 1280-pixel screen; the confusion matrices are
table cells shaded by count (CSS only, so the page renders offline).
"""

from __future__ import annotations

import html
import io
import json

import matplotlib
from matplotlib.figure import Figure  # not pyplot: no backend to select, no global figure list to close

from domaintune.reporting.paired import significance_marks
from domaintune.reporting.tables import (
    COST_TABLES,
    MARKS,
    QUALITY_COLUMNS,
    feedback_lines,
    latency_notes,
    never_predicted,
    paired_cells,
    present,
    quality_cells,
    table_cells,
)

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin-bottom:.5em}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
th code{font-size:10px;color:#666}figure{display:inline-block;margin:0 1em 1em 0}
figcaption{font-size:12px;color:#444;max-width:520px}pre{white-space:pre-wrap;font-size:11px}
svg{max-width:100%;height:auto}tr.reference td{font-style:italic;color:#555}
.classes{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top}
td.count{text-align:right;min-width:2.5em}.note{font-size:13px;color:#333}"""


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(fig, caption: str) -> str:
    return f"<figure>{_svg(fig)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def loss_plot(curves: dict[str, list[dict]]) -> str | None:
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    for name, points in curves.items():
        ax.plot([p["step"] for p in points], [p["loss"] for p in points], marker=".", label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    return _figure(fig, "Training loss, overlaid: loss_curves.<run>[].loss against .step (from metrics.jsonl).")


def quality_cost_plot(rows: list[dict]) -> str | None:
    quality = "accuracy" if any(r.get("accuracy") is not None for r in rows) else "perplexity"
    costs = [("train_wall_seconds", "training time (s)"), ("peak_rss_generating_bytes", "peak memory generating (MiB)"),
             ("peak_rss_classifying_bytes", "peak memory classifying (MiB)"), ("weights_bytes", "size on disk (MiB)")]
    costs = [c for c in costs if any(r.get(c[0]) is not None and r.get(quality) is not None for r in rows)]
    if not costs:
        return None
    fig = Figure(figsize=(4 * len(costs), 3.2))
    axes = fig.subplots(1, len(costs), squeeze=False)
    for ax, (key, label) in zip(axes[0], costs, strict=True):
        for row in rows:
            value = row.get(key)
            if key == "train_wall_seconds":
                if row["variant"] == "lora-merged":
                    continue  # the same training as its unmerged row
                if row["variant"] == "base":
                    value = 0.0  # the base costs no training
            if value is None or row.get(quality) is None:
                continue
            x = value / 2**20 if key.endswith("bytes") else value
            ax.scatter([x], [row[quality]])
            ax.annotate(row["name"], (x, row[quality]), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel(quality)
    fig.tight_layout()
    names = ", ".join(k for k, _ in costs)
    return _figure(fig, f"Quality versus cost: rows[].{quality} against rows[].{{{names}}} (bytes shown in MiB).")


def latency_plot(rows: list[dict]) -> str | None:
    timed = [r for r in rows if r.get("latency_p50_ms") is not None]
    if not timed:
        return None
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    xs = range(len(timed))
    ax.bar([x - 0.2 for x in xs], [r["latency_p50_ms"] for r in timed], width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [r.get("latency_p95_ms") or 0 for r in timed], width=0.4, label="p95")
    ax.set_xticks(list(xs), [f"{r['name']}\n({r.get('latency_kind')})" for r in timed], rotation=20, fontsize=8)
    ax.set_ylabel("ms per request")
    ax.legend()
    return _figure(fig, "Latency per request: rows[].latency_p50_ms and rows[].latency_p95_ms, labelled with "
                        "rows[].latency_kind; bars of different kinds time different work (see the notes above).")


def grid_html(cells: list[list[str]], keys: list[str] | None = None, classes: list[str] | None = None,
              kind: str = "") -> str:
    """A table of text cells; `keys` adds each column's comparison.json field under its header."""
    # A field name may break after an underscore (<wbr>), so that a narrow column keeps its header readable.
    codes = [f"<br><code>{html.escape(k).replace('_', '_<wbr>')}</code>" for k in keys or []] or [""] * len(cells[0])
    head = "".join(f"<th>{html.escape(h)}{code}</th>" for h, code in zip(cells[0], codes, strict=True))
    classes = classes or [""] * (len(cells) - 1)
    body = "".join(f"<tr class='{kind}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for kind, row in zip(classes, cells[1:], strict=True))
    return f"<table class='{kind}'><tr>{head}</tr>{body}</table>"


def quality_html(report: dict) -> str:
    rows, references = report["rows"], report.get("reference_rows", [])
    cells = quality_cells(rows, references, significance_marks(report.get("paired_tests", [])))
    keys = [k for k, _, _ in present(QUALITY_COLUMNS, rows)]
    classes = [""] * len(rows) + ["reference"] * len(references)
    return grid_html(cells, ["rows[]." + k for k in keys[:1]] + [f"rows[].{k} + _ci" for k in keys[1:]], classes,
                     "quality")


def cost_html(rows: list[dict]) -> str:
    parts = []
    for title, columns in COST_TABLES:
        cells = table_cells(rows, columns)
        if len(cells[0]) > 1:
            parts += [f"<h3>{html.escape(title)}</h3>", grid_html(cells, [k for k, _, _ in present(columns, rows)],
                                                                   kind="cost")]
    return "".join(parts)


def heatmap_html(matrix: dict) -> str:
    """Gold rows, predicted columns; each cell shaded by its count against the largest count."""
    counts = matrix["rows_gold_cols_predicted"]
    largest = max((c for row in counts for c in row), default=0) or 1
    head = "<th>gold \\ predicted</th>" + "".join(f"<th>{html.escape(label)}</th>" for label in matrix["labels"])
    body = ""
    for label, row in zip(matrix["labels"], counts, strict=True):
        shaded = ""
        for count in row:
            alpha = count / largest
            ink = "#fff" if alpha > 0.55 else "#000"
            shaded += f"<td class='count' style='background:rgba(31,119,180,{alpha:.2f});color:{ink}'>{count}</td>"
        body += f"<tr><th>{html.escape(label)}</th>{shaded}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def per_class_html(rows: list[dict]) -> str:
    blocks = []
    for row in (r for r in rows if r.get("per_class")):
        cells = [["class", "precision", "recall", "F1", "support"]] + [
            [label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])]
            for label, c in row["per_class"].items()]
        matrix = heatmap_html(row["confusion_matrix"]) if row.get("confusion_matrix") else ""
        blocks.append(f"<div class='classes'><h3>{html.escape(row['name'])}</h3>{grid_html(cells)}{matrix}</div>")
    if not blocks:
        return ""
    return ("<h2>Per class</h2><p class='note'>Precision, recall, F1 and support per class "
            "(<code>rows[].per_class</code>), and the confusion matrix (<code>rows[].confusion_matrix</code>: "
            "gold rows, predicted columns, darker = more test rows).</p>" + "".join(blocks))


def feedback_html(feedback: dict | None) -> str:
    if not feedback:
        return ""
    return (f"<h2>Reviewers' votes</h2><p class='note'>Blind A/B votes from {html.escape(feedback['database'])} "
            f"(<code>feedback.pairs[]</code>); a win rate counts decisive votes, ties apart.</p>"
            + bullets(feedback_lines(feedback)))


def samples_html(rows: list[dict]) -> str:
    with_samples = [r for r in rows if r.get("samples") and r["variant"] != "lora-merged"]
    if not with_samples:
        return "<p>No generation samples (evaluate.samples=0).</p>"
    first = with_samples[0]["samples"]
    head = "<th>prompt <code>samples[].prompt</code></th><th>reference <code>samples[].reference</code></th>"
    head += "".join(f"<th>{html.escape(r['name'])} <code>samples[].output</code></th>" for r in with_samples)
    body = ""
    for i, sample in enumerate(first):
        outputs = "".join(
            f"<td>{html.escape(r['samples'][i]['output']) if i < len(r['samples']) else '-'}</td>"
            for r in with_samples
        )
        body += (f"<tr><td><pre>{html.escape(sample['prompt'][:600])}</pre></td>"
                 f"<td>{html.escape(str(sample['reference']))}</td>{outputs}</tr>")
    return f"<table><tr>{head}</tr>{body}</table>"


def bullets(lines: list[str]) -> str:
    return f"<ul class='note'>{''.join(f'<li>{html.escape(line)}</li>' for line in lines)}</ul>" if lines else ""


def quality_section(report: dict) -> str:
    """The quality table, its marks, the paired differences and the notes (never-predicted classes,
    folders without predictions, how the reference rows were made)."""
    paired = report.get("paired_tests", [])
    parts = ["<h2>Quality</h2>", quality_html(report), f"<p class='note'>{html.escape(MARKS)}</p>"]
    if paired:
        parts += ["<h3>Paired differences (model minus reference, on the same examples; <code>paired_tests[]</code>)"
                  "</h3>", grid_html(paired_cells(paired), kind="paired")]
    return "".join(parts) + bullets(never_predicted(report["rows"]) + report.get("notes", []))


def cost_section(report: dict) -> str:
    rows, settings = report["rows"], report.get("latency_settings")
    timing = ("Inference timed per request in a fresh process per model, "
              f"{settings['warmup']} warm-up requests excluded, tokenization excluded (latency_settings)."
              if settings else "Inference cost of the language models was not measured.")
    latency = latency_notes(rows)
    kinds = "<p>What one timed request is, by <code>latency_kind</code>:</p>" + bullets(latency) if latency else ""
    return (f"<h2>Cost</h2><p class='note'>{html.escape(timing)} Header codes are comparison.json field names "
            f"(rows[]).</p>{cost_html(rows)}{kinds}")


def render_html(report: dict) -> str:
    rows = report["rows"]
    # Labels are run names, which may hold "$": mathtext would draw "$x$" as math and fail on "$^$".
    with matplotlib.rc_context({"text.parse_math": False}):
        plots = [p for p in (loss_plot(report.get("loss_curves", {})), quality_cost_plot(rows), latency_plot(rows))
                 if p]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>domaintune comparison</title>",
        f"<style>{STYLE}</style></head><body><h1>domaintune comparison</h1>",
        quality_section(report), cost_section(report), per_class_html(rows), "<h2>Plots</h2>", *plots,
        "<h2>Generation samples</h2>", samples_html(rows), feedback_html(report.get("feedback")),
        "<h2>comparison.json</h2><details><summary>all figures</summary><pre>",
        html.escape(json.dumps(report, indent=1)), "</pre></details></body></html>",
    ]
    return "\n".join(parts)
