"""compare's truth at a glance, on folders written by hand (no model runs): intervals, paired tests against
the base and the baseline, the majority and label-prior rows, per-class figures, never-predicted classes and
the reviewers' win rates.

The folders hold what `evaluate` and `baseline` write (metrics.json with *_ci keys, predictions.jsonl,
run_card.json, config.yaml; docs of issue 13's contract), over a prepared folder of 20 train and 40 test rows:

    train labels: negative 10, neutral 4, positive 6        test gold: negative 16, neutral 8, positive 16
    base:  every negative right; neutral 4 -> negative, 4 -> positive; positive 4 right, 12 -> negative (20 right)
    good:  every negative and positive right, neutral 4 right and 4 -> positive (36 right), lower token loss
    same:  base's predictions and losses, exactly
    tfidf: negative and positive right, every neutral -> negative (32 right)
"""

import json
import math
from pathlib import Path

import pytest

from cards import baseline_card_fields, data_card_fields, run_card_fields
from domaintune import load_config, run_compare
from domaintune.cli.main import main
from domaintune.core.config import save_config
from domaintune.evaluation.metrics import classification_metrics
from domaintune.evaluation.predictions import Prediction, write_predictions
from domaintune.evaluation.uncertainty import intervals
from domaintune.reporting.tables import text_report

LABELS = ["negative", "neutral", "positive"]
TEST_GOLD = ["negative"] * 16 + ["neutral"] * 8 + ["positive"] * 16
TRAIN_LABELS = ["negative"] * 10 + ["neutral"] * 4 + ["positive"] * 6
PREDICTED = {
    "base": ["negative"] * 16 + ["negative"] * 4 + ["positive"] * 4 + ["positive"] * 4 + ["negative"] * 12,
    "good": ["negative"] * 16 + ["neutral"] * 4 + ["positive"] * 4 + ["positive"] * 16,
    "tfidf": ["negative"] * 16 + ["negative"] * 8 + ["positive"] * 16,
}
PREDICTED["same"] = PREDICTED["base"]
PREDICTED["old"] = PREDICTED["good"]
NATS_PER_TOKEN = {"base": 3.0, "same": 3.0, "good": 2.0, "old": 2.0}  # tfidf: no language model, no loss
CARDS = {"good": "full", "same": "full", "old": "full", "tfidf": "tfidf-logreg"}


def _tokens(i: int) -> int:
    return 20 + (i * 7) % 13  # documents of different lengths, so a perplexity is no plain mean


@pytest.fixture
def folders(tmp_path, tiny_model_dir):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for split, labels in (("train", TRAIN_LABELS), ("test", TEST_GOLD)):
        rows = [{"id": f"{split[:2]}{i}", "text": f"review {i}", "label": label} for i, label in enumerate(labels)]
        (prepared / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (prepared / "data_card.json").write_text(json.dumps(data_card_fields(fingerprint="fp-1", labels=LABELS)))
    cfg = load_config(None, [f"model.name={tiny_model_dir}", f"data.output_dir={prepared}", "seed=7"])
    for name, predicted in PREDICTED.items():
        folder = tmp_path / name
        folder.mkdir()
        save_config(cfg, folder)
        rows = [Prediction("test", f"te{i}", gold, guess) for i, (gold, guess) in
                enumerate(zip(TEST_GOLD, predicted, strict=True))]
        metrics = {"target": "base" if name == "base" else str(folder),
                   "base_model": None if name == "tfidf" else str(tiny_model_dir), "data_dir": str(prepared),
                   "data_fingerprint": "fp-1", "test_rows": len(rows), **classification_metrics(TEST_GOLD, predicted,
                                                                                               LABELS)}
        if name in NATS_PER_TOKEN:
            for i, row in enumerate(rows):  # documents a little easier or harder: an interval of some width
                row.nll, row.tokens = NATS_PER_TOKEN[name] * _tokens(i) + (i % 5 - 2), _tokens(i)
            metrics["perplexity"] = round(math.exp(sum(r.nll for r in rows) / sum(r.tokens for r in rows)), 5)
        if name != "old":  # "old" was evaluated before predictions.jsonl and intervals were kept
            write_predictions(folder, rows)
            metrics |= intervals(rows, LABELS, cfg.evaluate.bootstrap_resamples, cfg.seed)
        if name in CARDS:
            card = (baseline_card_fields() if CARDS[name] == "tfidf-logreg" else
                    run_card_fields(method=CARDS[name], labels=LABELS, base_model=metrics["base_model"]))
            (folder / "run_card.json").write_text(json.dumps(card))
        if CARDS.get(name) == "full":
            (folder / "model").mkdir()
            (folder / "model" / "config.json").write_text("{}")
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def _compare(root, names, **kwargs):
    run_compare([root / n for n in names], root / "cmp", latency=None, **kwargs)
    return json.loads((root / "cmp" / "comparison.json").read_text())


def _test(report, model, against):
    return next(r for r in report["paired_tests"] if r["model"] == model and r["against"] == against)["tests"]


def test_paired_tests_mark_a_clear_gain_and_no_difference(folders):
    report = _compare(folders, ["base", "good", "same", "tfidf"])
    assert {(r["model"], r["against"]) for r in report["paired_tests"]} == {
        ("good", "base"), ("good", "tfidf"), ("same", "base"), ("same", "tfidf"), ("tfidf", "base")}
    good = _test(report, "good", "base")
    # McNemar: good alone is right on 16 rows, base alone on none: p = 2 * 0.5^16.
    assert good["accuracy"]["test"] == "McNemar exact" and good["accuracy"]["p_value"] == pytest.approx(2 * 0.5 ** 16,
                                                                                                          abs=1e-5)
    assert good["accuracy"]["difference"] == pytest.approx((36 - 20) / 40) and good["accuracy"]["significant"]
    assert good["macro_f1"]["significant"] and good["perplexity"]["significant"]
    ppl = {n: json.loads((folders / n / "metrics.json").read_text())["perplexity"] for n in ("base", "good")}
    assert good["perplexity"]["difference"] == pytest.approx(ppl["good"] - ppl["base"], abs=1e-4)
    for name, test in _test(report, "same", "base").items():
        assert (test["difference"], test["p_value"], test["significant"]) == (0.0, 1.0, False), name
    text = text_report(report)
    quality = {line.split()[0]: line for line in text.split("\n\n")[0].splitlines()}
    ci = json.loads((folders / "good" / "metrics.json").read_text())["accuracy_ci"]
    assert f"0.900 [{ci[0]:.3f}, {ci[1]:.3f}]*" in quality["good"], "interval and the mark of a significant gain"
    assert "0.500 [" in quality["same"] and "]†" in quality["same"], "the same figures: marked not significant"
    assert "†" not in quality["base"] and "*" not in quality["base"].replace("macro", "")
    assert "† no significant difference (p >= 0.05)" in text
    md = (folders / "cmp" / "report.md").read_text()
    assert "## Paired differences" in md and "p=1.000 †" in md and "p<0.001 *" in md
    page = (folders / "cmp" / "report.html").read_text()
    assert f"0.900 [{ci[0]:.3f}, {ci[1]:.3f}]*" in page and "paired_tests[]" in page


def test_majority_and_label_prior_rows_by_hand(folders):
    report = _compare(folders, ["base", "good"])
    majority, prior = report["reference_rows"]
    # Majority of train is negative (10 of 20): 16 of 40 test rows right; F1(negative) = 2*0.4/(1.4), others 0.
    assert majority["predicts"] == "negative" and majority["accuracy"] == 0.4
    assert majority["macro_f1"] == pytest.approx((2 * 0.4 / 1.4) / 3, abs=1e-5) and len(majority["accuracy_ci"]) == 2
    # Prior q = (.5, .2, .3) against test shares p = (.4, .2, .4): accuracy sum p*q = .2 + .04 + .12.
    assert prior["accuracy"] == pytest.approx(0.36) and prior["computed"] == "analytic expectation"
    f1 = [2 * 0.4 * 0.5 / 0.9, 2 * 0.2 * 0.2 / 0.4, 2 * 0.4 * 0.3 / 0.7]
    assert prior["macro_f1"] == pytest.approx(sum(f1) / 3, abs=1e-5)
    text = text_report(report)
    shown = {line[:24].strip(): line[24:].split() for line in text.splitlines() if "(reference)" in line[:24]}
    assert shown["majority (reference)"][:2] == ["0.400", f"[{majority['accuracy_ci'][0]:.3f},"]
    assert shown["label prior (reference)"] == ["0.360", "(expected)", "0.329", "(expected)", "-"]
    assert "train split (20 rows), scored on the first 40 test rows" in text


def test_never_predicted_classes_and_confusion_matrix(folders):
    report = _compare(folders, ["base", "good", "tfidf"])
    text = text_report(report)
    assert "base never predicts 'neutral' (0 of 8 neutral test rows)" in text.splitlines()
    assert "tfidf never predicts 'neutral' (0 of 8 neutral test rows)" in text.splitlines()
    assert "good never predicts" not in text
    assert "  good: negative 1.00, neutral 0.67, positive 0.89" in text.splitlines(), "the per-class F1 line"
    md = (folders / "cmp" / "report.md").read_text()
    assert "| gold \\ predicted | negative | neutral | positive |" in md
    assert "| neutral | 4 | 0 | 4 |" in md and "| positive | 12 | 0 | 4 |" in md, "base's gold rows"
    assert "| neutral | 1.000 | 0.500 | 0.667 | 8 |" in md, "good's precision, recall, F1, support"
    page = (folders / "cmp" / "report.html").read_text()
    # The heatmap: cells shaded by count against the largest (16, base's negatives), no script, no network.
    assert "background:rgba(31,119,180,1.00);color:#fff'>16</td>" in page
    assert "background:rgba(31,119,180,0.25);color:#000'>4</td>" in page and "<script" not in page


def test_a_folder_without_predictions_compares_without_intervals(folders):
    report = _compare(folders, ["base", "old"])
    old = next(r for r in report["rows"] if r["name"] == "old")
    assert old["accuracy"] == 0.9 and "accuracy_ci" not in old
    assert report["paired_tests"] == []
    text = text_report(report)
    assert f"note: old: no predictions.jsonl (evaluated by an older domaintune), so its figures have no intervals " \
           f"or paired tests; evaluate {folders / 'old'} again" in text.splitlines()
    assert next(line for line in text.splitlines() if line.startswith("old ")).split()[1:3] == ["0.900", "0.852"]


def test_reviewers_win_rates_with_wilson_intervals(folders, capsys):
    from domaintune.serving.feedback_store import FeedbackStore

    store = FeedbackStore(folders / "feedback.sqlite")
    for i, choice in enumerate(["A", "A", "A", "B", "tie"]):  # good on the left: 3 wins, base 1, one tie
        c = store.add_comparison(f"prompt {i}", "typed", None, "good", "base", "g", "b", {}, reviewer="ann")
        store.add_vote(c.id, choice, {}, None, reviewer="ann")
    code = main(["compare", str(folders / "base"), str(folders / "good"), "--no-latency", "--out",
                 str(folders / "cmp"), "--feedback", str(folders / "feedback.sqlite")])
    out = capsys.readouterr().out
    assert code == 0
    [pair] = json.loads((folders / "cmp" / "comparison.json").read_text())["feedback"]["pairs"]
    # Pairs are kept in name order, so model_a is base: 1 win of 4 decisive votes. Wilson 95% for 1 of 4 is
    # 0.0456 to 0.6994 (1 minus the 0.3006 to 0.9544 of 3 of 4, Wilson 1927).
    assert (pair["model_a"], pair["wins_a"], pair["wins_b"], pair["ties"]) == ("base", 1, 3, 1)
    assert pair["ci_low"] == pytest.approx(0.0456, abs=1e-4) and pair["ci_high"] == pytest.approx(0.6994, abs=1e-4)
    assert ("base vs good: base wins 1, good wins 3, ties 1; base win rate 0.25 [0.05, 0.70] (Wilson 95%); "
            "5 votes by 1 reviewers") in out
    assert "Reviewers' votes" in (folders / "cmp" / "report.html").read_text()
    assert main(["compare", str(folders / "base"), "--no-latency", "--out", str(folders / "cmp2"),
                 "--feedback", str(folders / "nowhere.sqlite")]) == 2
    assert "nowhere.sqlite: feedback database not found" in capsys.readouterr().err
    assert not (folders / "cmp2").exists()


def test_folders_of_other_examples_are_compared_without_a_paired_test(folders):
    metrics = json.loads((folders / "same" / "metrics.json").read_text())
    rows = (folders / "same" / "predictions.jsonl").read_text().splitlines()
    (folders / "same" / "predictions.jsonl").write_text("\n".join(rows[:30]) + "\n")
    (folders / "same" / "metrics.json").write_text(json.dumps(dict(metrics, test_rows=30)))
    report = _compare(folders, ["base", "same"])
    assert report["paired_tests"] == []
    assert any(n.startswith("same vs base: no paired test: same (test) and base (test) were evaluated on different "
                            "examples (0 only in the first, 10 only in the second)") for n in report["notes"])


WIDE_COSTS = {  # every cost column filled, with figures as wide as a 1.7B model's
    "trainable_parameters": 1_711_376_384, "total_parameters": 1_711_376_384, "weights_bytes": 3_422_752_768,
    "train_wall_seconds": 12345.6, "train_tokens_per_second": 1234.0, "peak_train_rss_bytes": 23_000_000_000,
    "load_seconds": 12.34, "latency_kind": "generate", "latency_p50_ms": 1234.5, "latency_p95_ms": 2345.6,
    "requests_per_second": 0.8, "generated_tokens_per_second": 12.9, "rss_after_load_bytes": 7_000_000_000,
    "peak_rss_generating_bytes": 7_500_000_000, "peak_rss_classifying_bytes": 7_400_000_000, "max_new_tokens": 16,
}


def test_report_html_needs_no_sideways_scrolling_on_a_laptop(folders):
    """Every table of report.html fits a 1280-pixel window, with every cost column filled."""
    from playwright.sync_api import sync_playwright

    from domaintune.reporting.html import render_html

    chromium = Path("/usr/bin/chromium")  # Debian's, as tests/serving/test_browser.py drives (no download)
    if not chromium.is_file():
        pytest.fail(f"{chromium} is missing: install Debian's chromium (`make test` does it)")

    report = _compare(folders, ["base", "good", "same", "tfidf"])
    report["rows"] = [dict(r, **WIDE_COSTS, name=f"{r['name']}-with-a-long-run-name") for r in report["rows"]]
    page_path = folders / "wide.html"
    page_path.write_text(render_html(report))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(page_path.as_uri())
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        tables = page.evaluate("[...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().right)")
        # Readable, not merely squeezed in: no figure of the quality and cost tables is broken over two lines
        # (a long run name may wrap).
        figures = "table.quality td:not(:first-child), table.cost td:not(:first-child)"
        wrapped = page.evaluate(f"""[...document.querySelectorAll('{figures}')].filter(td => {{
            const range = document.createRange(); range.selectNodeContents(td);
            return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1;
        }}).map(td => td.textContent)""")
        browser.close()
    assert overflow <= 0 and max(tables) <= 1280, f"{overflow} px of sideways scrolling; table right edges {tables}"
    assert wrapped == [], "figures broken over lines"
