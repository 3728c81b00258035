"""report.md: the cells of tables.py as markdown, with the per-class figures and confusion matrices."""

from __future__ import annotations

from domaintune.reporting.paired import significance_marks
from domaintune.reporting.tables import (
    COST_TABLES,
    MARKS,
    feedback_lines,
    latency_notes,
    never_predicted,
    paired_cells,
    quality_cells,
    table_cells,
)


def markdown_table(cells: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|",
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]), ""]


def per_class_lines(row: dict) -> list[str]:
    """Precision, recall, F1 and support per class, and the confusion matrix (gold rows, predicted columns)."""
    lines = [f"### {row['name']}", ""]
    lines += markdown_table([["class", "precision", "recall", "F1", "support"]] + [
        [label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"])]
        for label, c in row["per_class"].items()])
    matrix = row.get("confusion_matrix")
    if matrix:
        labels = matrix["labels"]
        lines += markdown_table([["gold \\ predicted", *labels]] + [
            [label, *map(str, counts)] for label, counts in zip(labels, matrix["rows_gold_cols_predicted"],
                                                                strict=True)])
    return lines


def change_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row.get("perplexity_change_pct") is not None and row["variant"] != "base":
            line = f"- **{row['name']}**: test perplexity {row['perplexity_change_pct']:+.1f}% vs base"
            if row.get("forgetting_pct") is not None:
                line += f", general-text perplexity {row['forgetting_pct']:+.1f}% (forgetting)"
            lines.append(line)
    return lines


def render_markdown(report: dict) -> str:
    rows, paired = report["rows"], report.get("paired_tests", [])
    lines = ["# domaintune comparison", "", "## Quality", ""]
    lines += markdown_table(quality_cells(rows, report.get("reference_rows", []), significance_marks(paired)))
    lines += [MARKS, "", *change_lines(rows), ""]
    if paired:
        lines += ["## Paired differences (model minus reference, on the same examples)", ""]
        lines += markdown_table(paired_cells(paired))
    lines += [f"- {line}" for line in never_predicted(rows) + report.get("notes", [])]
    for title, columns in COST_TABLES:
        cells = table_cells(rows, columns)
        if len(cells[0]) > 1:
            lines += ["", f"## {title}", "", *markdown_table(cells)]
    lines += [f"- latency kind {note}" for note in latency_notes(rows)]
    with_classes = [r for r in rows if r.get("per_class")]
    if with_classes:
        lines += ["", "## Per class (test rows)", ""]
        for row in with_classes:
            lines += per_class_lines(row)
    if report.get("feedback"):
        lines += ["", f"## Reviewers' votes ({report['feedback']['database']})", ""]
        lines += [f"- {line}" for line in feedback_lines(report["feedback"])]
    lines += ["", "Every figure is a field of comparison.json; report.html has the plots and samples.", ""]
    return "\n".join(lines)
