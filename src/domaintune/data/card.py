"""The data card (JSON + markdown), the token-length histogram, and the one-screen CLI summary.

The summary is rendered from the card itself, so the numbers printed and the numbers stored agree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from domaintune.core.data_card import DataCard, GarbledRows
from domaintune.data.hygiene import label_warning, pii_warning
from domaintune.data.store import Rows

HISTOGRAM = "token_lengths.png"


def fingerprint(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def token_stats(lengths: dict[str, np.ndarray]) -> dict[str, dict]:
    stats = {}
    for name, values in lengths.items():
        if len(values):
            arr = np.asarray(values)
            stats[name] = {
                "min": int(arr.min()), "p50": int(np.percentile(arr, 50)), "p95": int(np.percentile(arr, 95)),
                "max": int(arr.max()), "mean": round(float(arr.mean()), 1),
            }
    return stats


def write_histogram(lengths: dict[str, np.ndarray], tokenizer_name: str, path: Path) -> None:
    """One step histogram per split on shared bins, so the splits' shapes can be compared at a glance."""
    from matplotlib.figure import Figure  # not pyplot: no backend to select, nothing global to close

    longest = max((int(np.max(values)) for values in lengths.values() if len(values)), default=0)
    bins = np.linspace(0, longest + 1, 41)
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    for name, values in lengths.items():
        if len(values):
            share = np.full(len(values), 1 / len(values))  # bar height = share of the split's rows
            ax.hist(values, bins=bins, weights=share, histtype="step", linewidth=1.5, label=f"{name} ({len(values)})")
    ax.set_xlabel(f"tokens per row ({tokenizer_name})")
    ax.set_ylabel("share of rows")
    ax.set_title("Token lengths per split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def garbled_rows(rows: Rows) -> GarbledRows:
    """How many rows read look like mojibake (flagged by `filters.measure`), with a few examples, for the
    card. Counted before the filters, since a wrongly decoded Korean file can lose every row to
    `filters.script`."""
    found = np.flatnonzero(rows.arrays["garbled"])
    return GarbledRows(rows=len(found), examples=[rows.text(i)[:60] for i in found[:3]])


def garbled_warning(garbled: GarbledRows) -> str | None:
    if not garbled.rows:
        return None
    return (f"{garbled.rows} rows look garbled (mojibake such as {garbled.examples[0]!r}): a file was "
            "decoded with the wrong encoding; set data.encoding (cp949 for Korean Excel exports) or fix the "
            "export; see docs/troubleshooting.md#garbled-korean-text")


def leak_warning(card: DataCard) -> str | None:
    """Rows of train/val that repeat a later split's row and were kept (data.remove_leaks=false)."""
    leak = card.leakage
    kept = 0 if leak.removed else sum(leak.exact.values()) + sum(leak.near.values())
    if not kept:
        return None
    return (f"{kept} train/val rows repeat a val/test row and were kept (data.remove_leaks=false): "
            "test figures will flatter the model; see docs/troubleshooting.md#leaked-test-set")


def data_warnings(card: DataCard) -> list[str]:
    """What in the prepared data needs a look before training on it, one line each."""
    checks = (garbled_warning(card.garbled_rows), leak_warning(card), label_warning(card.label_near_misses),
              pii_warning(card.unmasked_pii))
    return [w for w in checks if w]


def _cell(text: str) -> str:
    """Text made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(card: DataCard) -> str:
    lines = ["# Data card", "", f"Fingerprint: `{card.fingerprint}` (inputs + config; config alone "
             f"`{card.config_fingerprint}`)", "", f"Format: `{card.format}`", "", "## Sources", "",
             "| source | sha256 | encoding | records | weight |", "|---|---|---|---|---|"]
    for origin, info in card.sources.items():
        lines.append(f"| `{origin}` | `{info.sha256[:16]}` | {info.encoding or '-'} | {info.records} | "
                     f"{info.weight} |")
    bad = card.bad_rows
    lines += [line for w in data_warnings(card) for line in ("", f"**Warning:** {w}")]
    lines += ["", "## Malformed rows", "", f"{bad.count} skipped."]
    if bad.count:
        lines += ["", "| reason | rows |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in bad.by_reason.items()]
        lines += ["", "| source | where | reason | content |", "|---|---|---|---|"]
        lines += [f"| {r.source} | {r.where} | {r.reason} | {_cell(r.sample or '')} |" for r in bad.rows[:50]]
        if len(bad.rows) > 50:
            lines.append(f"\n(first 50 shown; data_card.json lists {len(bad.rows)})")
    lines += ["", "## Steps", "", "| step | rows in | rows out | removed |", "|---|---|---|---|"]
    for step in card.steps:
        removed = ", ".join(f"{rule}: {n}" for rule, n in step.removed.items()) or "-"
        lines.append(f"| {step.step} | {step.rows_in} | {step.rows_out} | {removed} |")
    if card.removed_examples:
        lines += ["", "## Removed examples", ""]
        for rule, examples in card.removed_examples.items():
            lines.append(f"- **{rule}**")
            lines += [f"  - `{e}`".replace("\n", " ") for e in examples]
    leak = card.leakage
    verb = "removed" if leak.removed else "found (kept: data.remove_leaks is false)"
    lines += ["", "## Leakage between splits", "",
              "Rows of train that repeat a val/test row, and rows of val that repeat a test row, "
              + ("and rows of review that repeat a val/test row (review rows are also held out from train), "
                 if "review" in leak.exact else "")
              + f"{verb}:", "", "| split | exact | near |", "|---|---|---|"]
    lines += [f"| {name} | {leak.exact[name]} | {leak.near[name]} |"
              for name in ("train", "val", "review") if name in leak.exact]
    dedup = card.dedup
    lines += ["", f"Dedup: {dedup.exact} exact and {dedup.near} near duplicates removed "
              f"(Jaccard >= {dedup.threshold}, shingles `{dedup.shingle}`)."]
    if augmentation := card.augmentation:
        rejected = ", ".join(f"{reason}: {n}" for reason, n in augmentation.rejected.items()) or "none"
        lines += ["", "## Augmentation", "", f"Method `{augmentation.method}` (train only, after the leakage "
                  f"check): {augmentation.added} rows added; variants dropped: {rejected}."]
    lines += ["", "## Splits", "", "| split | rows | augmented | labels |", "|---|---|---|---|"]
    for name, n in card.rows.items():
        dist = (card.label_distribution or {}).get(name, {})
        aug = card.augmented_rows if name == "train" else 0
        lines.append(f"| {name} | {n} | {aug} | {', '.join(f'{k}: {v}' for k, v in sorted(dist.items()))} |")
    tokens = card.token_lengths
    lines += ["", "## Token lengths", ""]
    if tokens.error:
        lines.append(f"Not measured: {tokens.error}")
    else:
        lines += [f"Tokenizer: `{tokens.tokenizer}`", "", f"![token lengths]({HISTOGRAM})", "",
                  "| split | min | p50 | p95 | max | mean |", "|---|---|---|---|---|---|"]
        for name, t in (tokens.splits or {}).items():
            lines.append(f"| {name} | {t.min} | {t.p50} | {t.p95} | {t.max} | {t.mean} |")
    return "\n".join(lines) + "\n"


def summarize(card: DataCard) -> str:
    """A few lines for the terminal; every number is read from the card."""
    removed: dict[str, int] = {}
    for step in card.steps:
        for rule, n in step.removed.items():
            if n:
                removed[rule] = removed.get(rule, 0) + n
    leak = card.leakage
    leaked = sum(leak.exact.values()) + sum(leak.near.values())
    aug = card.augmentation
    lines = [
        f"read {sum(s.rows_in for s in card.steps if s.step in ('read', 'read_test_file'))} records "
        f"from {len(card.sources)} source(s); {card.bad_rows.count} malformed skipped",
        "removed: " + (", ".join(f"{rule} {n}" for rule, n in removed.items()) or "nothing"),
        f"leakage between splits: {leaked} rows ({'removed' if leak.removed else 'reported only'})",
        "splits: " + ", ".join(f"{name} {n}" for name, n in card.rows.items())
        + (f" (train includes {card.augmented_rows} augmented)" if card.augmented_rows else ""),
        *([f"augmentation ({aug.method}): {aug.added} added, {sum(aug.rejected.values())} variants dropped"]
          if aug else []),
        f"fingerprint {card.fingerprint}",
    ]
    return "\n".join(lines + [f"warning: {w}" for w in data_warnings(card)])
