"""Shared fixtures: a tiny random Llama with a tokenizer built here, and small data files.

The tiny model is saved once per session so that every test (base, LoRA, full) starts from the same
weights, as the real comparisons do.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

POSITIVE = ["this drug worked great", "pain is gone and I feel good", "excellent results, no side effects"]
NEGATIVE = ["terrible side effects", "it made my headache worse", "awful, I stopped after a week"]
NEUTRAL = ["it was okay I guess", "some days better, some worse", "no real change so far"]


def make_reviews(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("positive", "negative", "neutral")[i % 3]
        phrases = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[label]
        text = f"{rng.choice(phrases)} &amp; review number {i} for drug {rng.randint(1, 50)}"
        rows.append({"review": text, "rating": label, "drugName": f"drug{i % 7}"})
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer and a ChatML template (also used by bench/)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [r["review"] for r in make_reviews(60)] + ["Classify the sentiment. Answer with one word."] * 5
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, vocabulary: list[str], lowercase: bool = True) -> Path:
    """A 2-layer BERT encoder (hidden 32) with a WordPiece tokenizer over `vocabulary` (whole words and
    `##` continuations). Korean needs `lowercase=False`: BERT's lowercasing also strips accents through
    NFD, which splits every Hangul syllable into jamo that a syllable vocabulary does not hold."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text("\n".join(specials + sorted(set(vocabulary))) + "\n", encoding="utf-8")
    # `vocab=` (transformers 5 ignores the old `vocab_file=` and leaves only the special tokens).
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=lowercase,
                                  strip_accents=None if lowercase else False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def reviews_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "reviews.csv", make_reviews(60))


@pytest.fixture
def tiny_overrides(tiny_model_dir, reviews_csv, tmp_path) -> list[str]:
    """Overrides that point a config at the tiny model and the small CSV, with tiny budgets.

    fp32 is named, not left to `auto`: auto picks bf16 on CPUs with AVX512-BF16 and fp32 on AVX2-only ones,
    and a suite whose numbers depend on the CPU gives two verdicts for one commit. Tests about bf16 say so.
    """
    return [
        f"model.name={tiny_model_dir}",
        f"data.source={reviews_csv}",
        f"data.output_dir={tmp_path / 'prepared'}",
        f"train.output_dir={tmp_path / 'runs' / 'lora'}",
        f"evaluate.base_output_dir={tmp_path / 'runs' / 'base'}",
        "train.max_steps=3",
        "train.batch_size=4",
        "train.max_length=96",
        "train.precision=fp32",
        "prompt.instruction=Classify the sentiment.",
        "train.logging_steps=1",
        "evaluate.max_length=96",
        "evaluate.max_examples=12",
    ]


def tiny_overrides_at(model_dir: Path, root: Path) -> list[str]:
    """Like `tiny_overrides` (fp32 too), for fixtures that outlive one test."""
    csv_path = write_csv(root / "reviews.csv", make_reviews(60))
    return [
        f"model.name={model_dir}",
        f"data.source={csv_path}",
        f"data.output_dir={root / 'prepared'}",
        f"evaluate.base_output_dir={root / 'runs' / 'base'}",
        "train.max_steps=3",
        "train.batch_size=4",
        "train.max_length=96",
        "train.precision=fp32",
        "prompt.instruction=Classify the sentiment.",
        "evaluate.max_length=96",
    ]


def slow_steps_cli(seconds: float) -> str:
    """`python -c` source for the CLI with each training step slowed, so a test can kill it part-way
    (production code has no test hook)."""
    return f"""
import sys, time
from transformers import Trainer
step = Trainer.training_step
def slow(self, *a, **k):
    time.sleep({seconds})
    return step(self, *a, **k)
Trainer.training_step = slow
from domaintune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_cli_after_checkpoint(args: list[str], output_dir: Path, step: int, seconds_per_step: float) -> Path:
    """Run `domaintune train ARGS` in a child, SIGKILL it once checkpoint-STEP is marked complete, and return
    the work folder's checkpoints; asserts the kill came part-way and left no run folder behind."""
    from domaintune.training.checkpoints import MARKER, work_dir

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", slow_steps_cli(seconds_per_step), "train", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = work_dir(output_dir) / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / f"checkpoint-{step}" / MARKER).exists() and child.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the child must be killed part-way, not finish"
    assert not output_dir.exists(), "an interrupted run must not look complete"
    return checkpoints


@pytest.fixture(scope="session")
def served_runs(tiny_model_dir, tmp_path_factory) -> tuple[list[str], list[Path]]:
    """Two LoRA runs (`alpha`, `beta`) of the tiny model, trained hard enough that their answers differ."""
    from domaintune import load_config, run_prepare, run_train

    root = tmp_path_factory.mktemp("served")
    overrides = tiny_overrides_at(tiny_model_dir, root)
    run_prepare(load_config(None, overrides))
    runs = []
    for name, seed in (("alpha", 1), ("beta", 2)):
        cfg = load_config(None, overrides + [f"seed={seed}", "train.learning_rate=0.05",
                                             f"train.output_dir={root / 'runs' / name}"])
        runs.append(run_train(cfg))
    return overrides, runs


@pytest.fixture(scope="session")
def served_pool(served_runs):
    """`alpha`, `beta` and `base` loaded once, as `domaintune serve alpha beta --base` would."""
    from domaintune.core.config import load_config
    from domaintune.serving.pool import ModelPool

    overrides, runs = served_runs
    return ModelPool([str(r) for r in runs], include_base=True, cfg=load_config(None, overrides))


class Brake:
    """Slows or holds every forward pass of the served model and counts them (one per generated token of
    a batch), so that a test can keep the model busy for as long as it needs and see how many tokens a
    generation really produced."""

    def __init__(self):
        self.calls, self.delay = 0, 0.0
        self.running = threading.Event()  # set: forward passes go through
        self.running.set()
        self.entered = threading.Event()

    def __call__(self, module, args):
        self.calls += 1
        self.entered.set()
        self.running.wait(timeout=60)
        time.sleep(self.delay)


@pytest.fixture
def brake(served_pool):
    brake = Brake()
    handle = served_pool.get("alpha").model.get_base_model().register_forward_pre_hook(brake)
    yield brake
    brake.running.set()
    handle.remove()


def settled(app, seconds: float = 30) -> None:
    """Wait until no generation runs or waits (the place of a request that ended is given back)."""
    deadline = time.monotonic() + seconds
    while app.state.gate.pending:
        assert time.monotonic() < deadline, "a generation never gave its place back"
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_server(served_pool, tmp_path):
    """Starts real uvicorn servers on 127.0.0.1 (a free port each), configured as `domaintune serve`
    runs them, in threads; all are stopped at the end of the test. Returns (url, app)."""
    import uvicorn

    from domaintune.serving.app import ServeSettings, create_app
    from domaintune.serving.http_server import uvicorn_config

    started = []

    def start(**settings):
        port = _free_port()
        chosen = ServeSettings(**{"db_path": tmp_path / "feedback.sqlite", "port": port, "seed": 5, **settings})
        app = create_app(served_pool, chosen)
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, chosen.head_timeout))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}", app

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive()


@pytest.fixture
def live_server(start_server):
    """A real uvicorn server on 127.0.0.1 with the default settings."""
    return start_server()


def local_client(app):
    """A TestClient that calls the app as a browser on this machine would (Host 127.0.0.1, not
    'testserver', which the Host check refuses without an API key)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1")
