"""Load test of `domaintune serve` on 127.0.0.1: N concurrent clients for D seconds.

    PYTHONPATH=src python bench/serve_load.py --clients 50 --seconds 60
    PYTHONPATH=src python bench/serve_load.py --model smollm2 --clients 16 --seconds 60 --max-tokens 32

Builds the tests' tiny random Llama (or, with `--model smollm2`, takes the embedded SmolLM2-135M-Instruct),
trains one short LoRA run on it (3 steps; 1 step on SmolLM2), starts the real CLI
(`domaintune serve RUN --base`) in a subprocess, and lets every client loop over a mix of requests:
a chat completion, a streamed chat completion, and a review-page comparison followed by a vote. A client
that gets 429 waits for Retry-After and carries on. Reported: status counts (any 5xx is a failure),
votes acknowledged against vote rows in the database (must be equal), requests per second, and
p50/p95 latency per kind. Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' tiny model builder and synthetic reviews

from conftest import build_tiny_model, tiny_overrides_at  # noqa: E402

CHAT = [{"role": "user", "content": "this drug worked great, no side effects"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_run(root: Path, model: str) -> Path:
    from domaintune import load_config, run_prepare, run_train

    if model == "tiny":
        overrides = tiny_overrides_at(build_tiny_model(root / "tiny"), root)
    else:  # the embedded SmolLM2 on the same small synthetic reviews: the load, not the training, is measured
        overrides = [o for o in tiny_overrides_at(Path("unused"), root) if not o.startswith("model.name=")]
        overrides += ["model.name=smollm2-135m", "data.val_fraction=0", "train.batch_size=2",
                      "train.max_train_rows=4", "train.max_steps=1"]
    overrides.append(f"train.output_dir={root / 'runs' / 'lora'}")
    run_prepare(load_config(None, overrides))
    return run_train(load_config(None, overrides))


@contextlib.contextmanager
def serving(run: Path, db: Path, clients: int, threads: int | None, *flags: str) -> Iterator[str]:
    """`domaintune serve RUN --base` on 127.0.0.1 in a subprocess, with `flags` added; yields its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("DOMAINTUNE_API_KEY", None)
    server = subprocess.Popen(
        # All clients share one address here, where on a network each user has their own: the
        # per-address cap is set to the client count so that it does not stand in for the queue limit.
        [sys.executable, "-m", "domaintune", "serve", str(run), *([f"threads={threads}"] if threads else []),
         "--base", "--host", "127.0.0.1", "--port", str(port), "--db", str(db), "--max-per-client", str(clients),
         *flags], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not come up")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


class Tally:
    def __init__(self) -> None:
        self.status: Counter = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.votes_acknowledged = 0
        self.errors: Counter = Counter()

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.status[status] += 1
        if status == 200:
            self.latency[kind].append(seconds)


async def timed(tally: Tally, kind: str, call) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call()
    except httpx.HTTPError as exc:
        tally.errors[f"{kind}: {type(exc).__name__}"] += 1
        return None
    tally.record(kind, response.status_code, time.perf_counter() - started)
    if response.status_code == 429:
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
    return response


async def client_loop(http: httpx.AsyncClient, tally: Tally, stop_at: float, index: int,
                      tokens: tuple[int, int, int]) -> None:
    step = index  # clients start at different points of the mix
    while time.monotonic() < stop_at:
        kind = ("chat", "stream", "review")[step % 3]
        step += 1
        if kind == "chat":
            await timed(tally, kind, lambda: http.post("/v1/chat/completions", json={
                "model": "lora", "messages": CHAT, "max_tokens": tokens[0], "temperature": 0.7}))
        elif kind == "stream":
            async def stream():
                async with http.stream("POST", "/v1/chat/completions", json={
                        "model": "base", "messages": CHAT, "max_tokens": tokens[1], "stream": True}) as response:
                    body = await response.aread()
                    if response.status_code == 200 and not body.rstrip().endswith(b"data: [DONE]"):
                        tally.errors["stream: no [DONE]"] += 1
                    return response
            await timed(tally, kind, stream)
        else:
            made = await timed(tally, "comparison", lambda: http.post("/review/api/comparisons", json={
                "max_tokens": tokens[2], "models": ["lora", "base"]}))
            if made is None or made.status_code != 200:
                continue
            vote = {"comparison_id": made.json()["id"], "choice": ("A", "B", "tie")[step % 3],
                    "ratings": {"A": {"quality": 1 + step % 5}}}
            voted = await timed(tally, "vote", lambda v=vote: http.post("/review/api/votes", json=v))
            if voted is not None and voted.status_code == 200:
                tally.votes_acknowledged += 1


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def drive(url: str, clients: int, seconds: float, tokens: tuple[int, int, int]) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(client_loop(http, tally, started + seconds, i, tokens) for i in range(clients)))
        wall = time.monotonic() - started
    return tally, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="answer length of every kind (default: 16 for chats, 8 per comparison answer)")
    parser.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: all)")
    parser.add_argument("--out", default=None, help="write the results as JSON here too")
    args = parser.parse_args()
    tokens = (args.max_tokens,) * 3 if args.max_tokens else (16, 16, 8)

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        run = make_run(root, args.model)
        db = root / "feedback.sqlite"
        with serving(run, db, args.clients, args.threads) as url:
            tally, wall = asyncio.run(drive(url, args.clients, args.seconds, tokens))
            healthy_after = httpx.get(f"{url}/health", timeout=10).status_code == 200
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT comparison_id) FROM votes").fetchone()

    answered = sum(tally.status.values())
    result = {
        "model": args.model,
        "server_threads": args.threads or "all",
        "max_tokens": {"chat": tokens[0], "stream": tokens[1], "comparison answer": tokens[2]},
        "clients": args.clients,
        "seconds": round(wall, 1),
        "responses": answered,
        "status_counts": {str(k): v for k, v in sorted(tally.status.items())},
        "server_errors_5xx": sum(v for k, v in tally.status.items() if k >= 500),
        "transport_errors": dict(tally.errors),
        "votes_acknowledged": tally.votes_acknowledged,
        "vote_rows_in_db": rows[0],
        "distinct_voted_comparisons": rows[1],
        "ok_requests_per_second": round(sum(len(v) for v in tally.latency.values()) / wall, 2),
        "latency_seconds": {
            kind: {"n": len(v), "p50": round(percentile(v, 50), 3), "p95": round(percentile(v, 95), 3)}
            for kind, v in sorted(tally.latency.items())
        },
        "healthy_after": healthy_after,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    ok = (result["server_errors_5xx"] == 0 and not tally.errors and healthy_after
          and tally.votes_acknowledged == rows[0] == rows[1])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
