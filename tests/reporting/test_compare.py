"""compare, baseline, merge and the forgetting/sample parts of evaluate, on the tiny model.

One module fixture trains LoRA and full fine-tuning and evaluates base, both runs and the TF-IDF
baseline once; the tests then read those folders.
"""

import html
import io
import json
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_reviews, write_csv
from domaintune import load_config, run_baseline, run_compare, run_evaluate, run_generate, run_merge, run_prepare
from domaintune.core.errors import DomaintuneError
from domaintune.modeling.runs import load_run_model
from domaintune.reporting.compare import LatencySettings
from domaintune.reporting.tables import text_table
from domaintune.training.train import run_train
from exactness import UNIT_ROUNDOFF
from independent import assert_same_perplexity, perplexity_by_hand

LATENCY = LatencySettings(prompts=2, max_new_tokens=4, warmup=1, repeats=2, max_length=64)


def _common(tiny_model_dir, root):
    csv = root / "reviews.csv"
    if not csv.exists():
        write_csv(csv, make_reviews(60))
    return [
        f"model.name={tiny_model_dir}", f"data.source={csv}", f"data.output_dir={root / 'prepared'}",
        f"evaluate.base_output_dir={root / 'base'}", f"evaluate.baseline_output_dir={root / 'tfidf'}",
        "train.max_steps=2", "train.logging_steps=1", "train.batch_size=4", "train.max_length=64",
        "prompt.instruction=Classify.",
        "evaluate.max_length=64", "evaluate.max_examples=9", "evaluate.samples=2",
        "evaluate.sample_max_new_tokens=5", "threads=1", "train.precision=fp32",
    ]


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    common = _common(tiny_model_dir, root)
    lora = load_config(None, common + [f"train.output_dir={root / 'lora'}", "train.learning_rate=0.05"])
    full = load_config(None, common + [f"train.output_dir={root / 'full'}", "train.method=full"])
    run_prepare(lora)
    run_evaluate(lora)
    for cfg in (lora, full):
        run_evaluate(cfg, str(run_train(cfg)))
    run_baseline(lora)
    return root, lora


@pytest.fixture(scope="module")
def trained_in(evaluated, tiny_model_dir, tmp_path_factory):
    """`trained_in(precision)`: the folder holding a `lora` and a `full` run trained in that precision.

    fp32 is `evaluated`'s; the bf16 runs train on the same prepared data (2 steps, seconds even where
    bf16 is emulated), so the exactness tests of merge and export run in both precisions on every CPU.
    """
    root, _ = evaluated
    bf16_root = tmp_path_factory.mktemp("cmp-bf16")
    common = [*_common(tiny_model_dir, root), "train.precision=bf16"]
    run_train(load_config(None, common + [f"train.output_dir={bf16_root / 'lora'}", "train.learning_rate=0.05"]))
    run_train(load_config(None, common + [f"train.output_dir={bf16_root / 'full'}", "train.method=full"]))
    return {"fp32": root, "bf16": bf16_root}.__getitem__


def test_evaluate_keeps_greedy_samples_and_general_perplexity(evaluated):
    root, cfg = evaluated
    metrics = json.loads((root / "lora" / "metrics.json").read_text())
    assert len(metrics["samples"]) == 2 and metrics["general_text"] == "domaintune:data/general_text.txt"
    shipped = resources.files("domaintune").joinpath("data/general_text.txt").read_text(encoding="utf-8")
    passages = [line.strip() for line in shipped.splitlines() if line.strip()]
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(cfg.model.name), root / "lora" / "adapter")
    tok = AutoTokenizer.from_pretrained(cfg.model.name)
    by_hand = perplexity_by_hand(plain.eval(), tok, passages, cfg.evaluate.max_length)
    assert_same_perplexity(metrics, by_hand, prefix="general_")
    first = metrics["samples"][0]
    test_rows = [json.loads(line) for line in (root / "prepared" / "test.jsonl").read_text().splitlines()]
    assert first["prompt"] == test_rows[0]["text"] and first["reference"] == test_rows[0]["label"]
    assert first["output"] == run_generate(cfg, first["prompt"], str(root / "lora"), max_new_tokens=5)


def test_general_text_from_the_user_and_its_errors(evaluated, tmp_path):
    root, cfg = evaluated
    own = tmp_path / "general.txt"
    own.write_text("one plain sentence about the weather\n\nanother about trains\n")
    short = cfg.model_copy(deep=True)
    short.evaluate.general_text = str(own)
    short.evaluate.base_output_dir = str(tmp_path / "b")
    tok = AutoTokenizer.from_pretrained(cfg.model.name)
    # Two passages (the blank line is skipped), each scored from its second token on.
    expected = sum(len(tok(p, add_special_tokens=False)["input_ids"]) - 1
                   for p in ("one plain sentence about the weather", "another about trains"))
    assert run_evaluate(short)["general_tokens_scored"] == expected
    short.evaluate.general_text = ""
    assert "general_perplexity" not in run_evaluate(short)
    short.evaluate.general_text = str(tmp_path / "missing.txt")
    with pytest.raises(DomaintuneError, match="evaluate.general_text: file not found"):
        run_evaluate(short)


def test_tfidf_baseline_separates_the_tiny_data(evaluated):
    root, _ = evaluated
    metrics = json.loads((root / "tfidf" / "metrics.json").read_text())
    card = json.loads((root / "tfidf" / "run_card.json").read_text())
    # Each label of the tiny data has its own three phrases, so a bag of words gets every row right.
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
    assert card["method"] == "tfidf-logreg" and card["trainable_parameters"] == 3 * (card["vocabulary_size"] + 1)
    assert metrics["latency_p95_ms"] >= metrics["latency_p50_ms"] > 0


def test_tfidf_baseline_is_saved_without_pickle_and_predicts_alike(evaluated, tmp_path):
    import fractions

    import skops.io

    from domaintune.data.prepare import read_split
    from domaintune.evaluation.baseline import build_pipeline, load_baseline
    from domaintune.evaluation.baseline_search import one_blas_thread

    root, cfg = evaluated
    assert not (root / "tfidf" / "model.pkl").exists()
    loaded = load_baseline(root / "tfidf")
    train = read_split(cfg.data.output_dir, "train")[: cfg.train.max_train_rows]
    test = read_split(cfg.data.output_dir, "test")
    chosen = json.loads((root / "tfidf" / "run_card.json").read_text())["selection"]
    fresh = build_pipeline(cfg.seed, chosen["features"], chosen["C"], chosen["class_weight"])
    with one_blas_thread():  # as the baseline fits: a BLAS thread count can change a sum's rounding
        fresh.fit([r["text"] for r in train], [r["label"] for r in train])
    texts = [r["text"] for r in test] + ["an unseen text with no known words"]
    assert list(loaded.predict(texts)) == list(fresh.predict(texts))
    assert (loaded.predict_proba(texts) == fresh.predict_proba(texts)).all()

    shutil.copytree(root / "tfidf", tmp_path / "tampered")
    (tmp_path / "tampered" / "model.skops").write_bytes(skops.io.dumps({"x": fractions.Fraction(1, 3)}))
    with pytest.raises(DomaintuneError, match=r"tampered/model.skops: refused, .*fractions.Fraction"):
        load_baseline(tmp_path / "tampered")
    (tmp_path / "tampered" / "model.skops").unlink()
    with pytest.raises(DomaintuneError, match=r"tampered: model.skops is missing"):
        load_baseline(tmp_path / "tampered")


def test_compare_measures_every_model_and_writes_an_offline_report(evaluated):
    root, _ = evaluated
    folders = [root / n for n in ("base", "lora", "full", "tfidf")]
    report = run_compare(folders, root / "report", latency=LATENCY, threads=1)
    data = json.loads((root / "report" / "comparison.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["base", "lora", "lora-merged", "full", "tfidf"]
    for name in ("base", "lora", "lora-merged", "full"):
        row = rows[name]
        assert row["requests"] == 4 and row["max_new_tokens"] == 4 and row["latency_kind"] == "generate"
        assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0 and row["generated_tokens_per_second"] > 0
        assert row["peak_rss_generating_bytes"] >= row["rss_after_load_bytes"] > 0
        assert row["load_seconds"] > 0 and row["total_parameters"] > 0
    assert rows["lora"]["inference_parameters"] > rows["lora-merged"]["inference_parameters"]
    assert rows["lora-merged"]["inference_parameters"] == rows["base"]["inference_parameters"]
    assert rows["lora-merged"]["total_parameters"] == rows["base"]["total_parameters"]
    assert rows["lora-merged"]["accuracy"] == rows["lora"]["accuracy"] and rows["lora-merged"]["merge_seconds"] >= 0
    assert rows["full"]["trainable_parameters"] == rows["full"]["total_parameters"]
    assert rows["lora-merged"]["weights_bytes"] == rows["base"]["weights_bytes"] > rows["lora"]["weights_bytes"]
    assert "forgetting_pct" in rows["lora"] and rows["base"]["forgetting_pct"] == 0.0
    assert rows["tfidf"]["latency_kind"] == "tfidf-predict" and "latency_vs_base" not in rows["tfidf"]
    table = text_table(data["rows"])
    assert "generate: model.generate per request" in table and "exactly 4 new tokens" in table
    assert len(data["loss_curves"]["lora"]) == 2
    page = report.read_text()
    assert page.count("<svg") == 3 and "lora-merged" in page and "samples[].output" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page) and "<script" not in page
    assert not (root / "report" / ".latency").exists(), "the timing processes' files are cleaned up"


def test_repeated_compare_gives_identical_quality(evaluated):
    root, _ = evaluated
    folders = [root / "base", root / "lora"]
    rows = []
    for out in ("r1", "r2"):
        run_compare(folders, root / out, latency=None)
        rows.append(json.loads((root / out / "comparison.json").read_text())["rows"])
    assert rows[0] == rows[1]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_merged_model_has_the_adapters_logits(evaluated, trained_in, tmp_path, precision):
    root, cfg = evaluated
    run = trained_in(precision) / "lora"
    assert json.loads((run / "run_card.json").read_text())["precision"] == precision
    out = run_merge(run, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted, _ = load_run_model(str(run), cfg)
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        expected, got = adapted.eval()(input_ids=ids).logits, merged(input_ids=ids).logits
    # Training precision only changes how the fp32 master weights were reached; merging and evaluating are
    # fp32 either way. W + s*B@A is rounded once per weight (2^-24 relative) where the adapter path rounds its
    # own products; every logit is a chain of sums over hidden (32) and MLP (64) widths in 2 layers, so the
    # two differ by at most about (32 + 64) * 2 * u * max|logit|.
    bound = (32 + 64) * 2 * UNIT_ROUNDOFF["fp32"] * expected.abs().max().item()
    assert (expected - got).abs().max().item() <= bound
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name).eval()
    with torch.no_grad():
        assert (base(input_ids=ids).logits - got).abs().max().item() > 1e3 * bound, "the merge must change the base"


def test_merge_refuses_a_full_run(evaluated):
    root, _ = evaluated
    with pytest.raises(DomaintuneError, match=r"full: merge needs a LoRA run"):
        run_merge(root / "full")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_compare_errors_name_the_folder_and_what_is_missing(evaluated, tmp_path):
    root, _ = evaluated
    no_card = _copy(root / "lora", tmp_path / "nocard")
    (no_card / "run_card.json").unlink()
    with pytest.raises(DomaintuneError, match=r"nocard: run_card.json is missing"):
        run_compare([root / "base", no_card], tmp_path / "o", latency=None)

    half = _copy(root / "lora", tmp_path / "half")
    shutil.rmtree(half / "adapter")
    with pytest.raises(DomaintuneError, match=r"half: adapter/adapter_config.json is missing"):
        run_compare([half], tmp_path / "o", latency=None)

    other = _copy(root / "full", tmp_path / "other")
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps(dict(metrics, base_model="another-model")))
    with pytest.raises(DomaintuneError, match=r"other: trained from base model 'another-model'"):
        run_compare([root / "base", other], tmp_path / "o", latency=None)

    with pytest.raises(DomaintuneError, match=r"nowhere: folder not found"):
        run_compare([tmp_path / "nowhere"], tmp_path / "o", latency=None)

    unevaluated = _copy(root / "lora", tmp_path / "unevaluated")
    (unevaluated / "metrics.json").unlink()
    with pytest.raises(DomaintuneError, match=r"unevaluated: metrics.json is missing; run `domaintune evaluate"):
        run_compare([unevaluated], tmp_path / "o", latency=None)

    no_config = _copy(root / "lora", tmp_path / "noconfig")
    (no_config / "config.yaml").unlink()
    with pytest.raises(DomaintuneError, match=r"noconfig: config.yaml is missing; the folder is incomplete"):
        run_compare([no_config], tmp_path / "o", latency=None)

    no_model = _copy(root / "full", tmp_path / "nomodel")
    shutil.rmtree(no_model / "model")
    with pytest.raises(DomaintuneError, match=r"nomodel: model/config.json is missing"):
        run_compare([no_model], tmp_path / "o", latency=None)
    assert not (tmp_path / "o").exists(), "nothing half-written"


def _rebase(folder: Path, model_name: str, card_too: bool = True) -> Path:
    """Point a run folder at another base model: in config.yaml, and in run_card.json unless told not to."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["name"] = model_name
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if card_too:
        card = json.loads((folder / "run_card.json").read_text())
        (folder / "run_card.json").write_text(json.dumps(dict(card, base_model=model_name)))
    return folder


def _wider_model(tiny_model_dir: Path, folder: Path) -> Path:
    """A base model of the tiny one's family but hidden size 48, so that its adapters do not fit."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


BROKEN = {
    # name: (how the copy of the LoRA run is broken, the error expected from merge and export)
    "nowhere": (None, r"run folder not found: .*nowhere"),
    "nocard": (lambda f, _: (f / "run_card.json").unlink(),
               r"nocard: not a complete run folder \(run_card.json is missing\)"),
    "noconfig": (lambda f, _: (f / "config.yaml").unlink(),
                 r"noconfig: not a complete run folder \(config.yaml is missing\)"),
    "noadapter": (lambda f, _: shutil.rmtree(f / "adapter"), r"noadapter: adapter/adapter_config.json is missing"),
    "mixed": (lambda f, wider: _rebase(f, str(wider), card_too=False),
              r"mixed: run_card.json says the adapter was trained from '.*' but config.yaml names '.*wider'"),
    "otherbase": (lambda f, wider: _rebase(f, str(wider)),
                  r"otherbase: adapter/ does not fit base model '.*wider', it was trained from another base "
                  r"\(size mismatch for .*\)"),
    "orphan": (lambda f, _: _rebase(f, str(f.parent / "deleted-base")),
               r"orphan: the adapter's base model cannot be loaded: model '.*deleted-base"),
}


@pytest.mark.parametrize("verb", ["merge", "export"])
@pytest.mark.parametrize("broken", list(BROKEN))
def test_merge_and_export_name_the_folder_and_what_is_wrong(evaluated, tiny_model_dir, tmp_path, verb, broken):
    from domaintune import run_export

    root, _ = evaluated
    breaker, message = BROKEN[broken]
    folder = tmp_path / broken
    if breaker is not None:
        breaker(_copy(root / "lora", folder), _wider_model(tiny_model_dir, tmp_path / "wider"))
    with pytest.raises(DomaintuneError, match=message):
        run_merge(folder) if verb == "merge" else run_export(folder, "gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / f"{broken}-merged").exists(), "nothing half-written"


def test_compare_names_an_adapter_that_does_not_fit_its_base(evaluated, tiny_model_dir, tmp_path):
    root, _ = evaluated
    orphan = _rebase(_copy(root / "lora", tmp_path / "orphan"), str(tmp_path / "deleted-base"))
    with pytest.raises(DomaintuneError, match=r"orphan: the adapter's base model cannot be loaded"):
        run_compare([orphan], tmp_path / "o", latency=LATENCY, threads=1)
    other = _rebase(_copy(root / "lora", tmp_path / "other"), str(_wider_model(tiny_model_dir, tmp_path / "wider")))
    with pytest.raises(DomaintuneError, match=r"other: adapter/ does not fit base model '.*wider'"):
        run_compare([other], tmp_path / "o", latency=LATENCY, threads=1)


def test_export_refuses_what_has_no_gguf_form(evaluated, tmp_path):
    from domaintune import run_export

    root, _ = evaluated
    with pytest.raises(DomaintuneError, match=r"tfidf: export needs a training run; this folder is 'tfidf-logreg'"):
        run_export(root / "tfidf")
    head = _copy(root / "full", tmp_path / "head")
    card = json.loads((head / "run_card.json").read_text())
    (head / "run_card.json").write_text(json.dumps(dict(card, task="classification")))
    with pytest.raises(DomaintuneError, match=r"head: a classification run .* has no GGUF form"):
        run_export(head)


def test_gguf_export_reads_back_in_transformers(evaluated):
    from domaintune import run_export

    root, cfg = evaluated
    out = run_export(root / "lora", "gguf", root / "gguf")
    card = json.loads((out / "export_card.json").read_text())
    f16, q8 = card["files"]["model-f16.gguf"], card["files"]["model-q8_0.gguf"]
    assert f16["max_abs_logit_diff"] < 1e-2 and f16["top1_agreement"] == 1.0
    assert 0 < f16["mean_abs_logit_diff"] <= f16["max_abs_logit_diff"]
    assert 0.8 <= q8["top1_agreement"] <= 1.0 and q8["bytes"] < f16["bytes"]
    # Independently of the card: the f16 file's logits equal the merged adapter model's.
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file="model-f16.gguf", dtype=torch.float32).eval()
    adapted, tok = load_run_model(str(root / "lora"), cfg)
    gguf_tok = AutoTokenizer.from_pretrained(str(out), gguf_file="model-f16.gguf")
    text = "pain is gone and I feel good &amp; review number 7"
    assert gguf_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert gguf_tok.chat_template == tok.chat_template
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        diff = (loaded(input_ids=ids).logits - adapted.eval()(input_ids=ids).logits).abs().max()
    assert diff < 1e-2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gguf_f32_export_reads_back_with_exact_logits(trained_in, tmp_path, precision):
    from domaintune import run_export

    root = trained_in(precision)
    out = run_export(root / "full", "gguf", tmp_path / "gguf", types=("f32", "f16"))
    files = json.loads((out / "export_card.json").read_text())["files"]
    assert list(files) == ["model-f32.gguf", "model-f16.gguf"]
    f32, f16 = files["model-f32.gguf"], files["model-f16.gguf"]
    # The writer (q/k permutation, names, vocabulary) adds no error: f16's difference is weight rounding.
    assert f32["max_abs_logit_diff"] == 0.0 and f32["top1_agreement"] == 1.0
    assert f16["max_abs_logit_diff"] > 0 and f32["bytes"] > 1.5 * f16["bytes"]
    with pytest.raises(DomaintuneError, match=r"export --types: 'bf16' is not a type; choose from f32, f16, q8_0"):
        run_export(root / "full", types=("bf16",))


def test_gguf_writer_keeps_named_tensor_groups_in_f32(evaluated, tmp_path):
    import gguf

    from domaintune.export.gguf import write_gguf

    root, cfg = evaluated
    model, tok = load_run_model(str(root / "full"), cfg)
    path = tmp_path / "mixed.gguf"
    write_gguf(model, tok, path, "f16", "mixed", "gpt-2", keep_f32=("token_embd",))
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    assert types["token_embd.weight"] == "F32" and types["blk.0.attn_q.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_export_names_a_folder_that_is_no_run(tmp_path):
    from domaintune import run_export

    (tmp_path / "empty").mkdir()
    with pytest.raises(DomaintuneError, match=r"empty: not a complete run folder \(run_card.json is missing\)"):
        run_export(tmp_path / "empty")


@pytest.mark.parametrize("method, kind", [
    ("lora", "lora"), ("dora", "lora"), ("qlora", "lora"), ("pissa", "lora"), ("dpo", "lora"),
    ("full", "full"), ("freeze", "full"), ("base", "base"),
])
def test_every_adapter_method_is_served_unmerged_and_merged(method, kind):
    from domaintune.reporting.compare import serving_kind

    assert serving_kind(method) == kind


def test_report_of_hostile_run_names_and_texts(evaluated, tmp_path):
    """Run names are folder names and samples are model output: both reach matplotlib (where '$' starts
    mathtext, and an odd one was an error) and the HTML page (where they must stay text)."""
    root, _ = evaluated
    names = ["lo$ra.v2$", "<img src=x onerror=alert(1)>$^$"]
    for name, source in zip(names, ("lora", "full"), strict=True):
        shutil.copytree(root / source, tmp_path / name)
    metrics = json.loads((tmp_path / names[0] / "metrics.json").read_text())
    hostile = "</pre></td><script>alert(1)</script> $\\frac{1}{0}$ {{x}}"
    metrics["samples"] = [{**s, "output": hostile} for s in metrics["samples"]]
    (tmp_path / names[0] / "metrics.json").write_text(json.dumps(metrics))
    page = run_compare([root / "base", *(tmp_path / n for n in names)], tmp_path / "report").read_text()
    assert "<script" not in page.lower() and "<img" not in page.lower(), "names and samples must stay text"
    assert html.escape(names[1]) in page and html.escape(hostile) in page
    # '$' is drawn as itself, not taken as the start of math (SVG text is drawn with glyph outlines).
    import matplotlib.pyplot as plt

    figure, reference = plt.figure(), io.StringIO()
    figure.text(0, 0, "$", parse_math=False)
    figure.savefig(reference, format="svg")
    plt.close(figure)
    dollar = re.search(r'<path id="(DejaVuSans-\w+)"', reference.getvalue()).group(1)
    assert f'id="{dollar}"' in page
    assert [r["name"] for r in json.loads((tmp_path / "report" / "comparison.json").read_text())["rows"]] == \
        ["base", names[0], f"{names[0]}-merged", names[1]]
