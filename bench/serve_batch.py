"""Batching against one request at a time: `domaintune serve` on the embedded SmolLM2 under concurrent clients.

    PYTHONPATH=src python bench/serve_batch.py --clients 16 --seconds 60 --max-tokens 64 --threads 1

Trains a 1-step LoRA run on SmolLM2-135M-Instruct (`serve_load.make_run`), then serves it with `--base`
through the real CLI twice, one server after the other on the same run: `--max-batch-size 1` (one
request at a time, as before batching) and `--max-batch-size N` (default: the client count). Every client
loops over chat completions for `lora` and `base` in turn (so batches mix the adapter and the base),
streamed every other time, `--max-tokens` new tokens at temperature 0.7 with a seed per request (the
same seeds in both modes). Both servers get `--queue-timeout 600`, so that the one-at-a-time queue is
measured rather than cut off with 503. The clock stops when the last request started before
`--seconds` is answered. Reported per mode: successful requests per second, completion tokens per
second (non-streamed answers report their length), p50/p95 latency, status counts and 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import Tally, make_run, percentile, serving, timed  # noqa: E402

PROMPTS = [
    "Explain in detail how ibuprofen relieves pain and what side effects people report.",
    "Write a long review of a blood pressure medicine from a patient's point of view.",
    "Describe, step by step, how a doctor decides between two antidepressants.",
    "List the questions a pharmacist should ask before recommending a sleeping aid, and why.",
]


async def client_loop(http: httpx.AsyncClient, tally: Tally, tokens: list[int], stop_at: float, index: int,
                      max_tokens: int) -> None:
    k = 0
    while time.monotonic() < stop_at:
        body = {"model": ("lora", "base")[(index + k) % 2], "max_tokens": max_tokens, "temperature": 0.7,
                "seed": index * 1000 + k, "messages": [{"role": "user", "content": PROMPTS[(index + k) % 4]}]}
        if k % 2:
            async def stream(body=body):
                async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                    text = await response.aread()
                    if response.status_code == 200 and not text.rstrip().endswith(b"data: [DONE]"):
                        tally.errors["stream: no [DONE]"] += 1
                    return response
            await timed(tally, "stream", stream)
        else:
            response = await timed(tally, "chat", lambda body=body: http.post("/v1/chat/completions", json=body))
            if response is not None and response.status_code == 200:
                tokens.append(response.json()["usage"]["completion_tokens"])
        k += 1


async def drive(url: str, clients: int, seconds: float, max_tokens: int) -> tuple[Tally, list[int], float]:
    tally, tokens = Tally(), []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(client_loop(http, tally, tokens, started + seconds, i, max_tokens)
                               for i in range(clients)))
        wall = time.monotonic() - started
    return tally, tokens, wall


def measure(run: Path, root: Path, args: argparse.Namespace, batch_size: int) -> dict:
    flags = ("--max-batch-size", str(batch_size), "--queue-timeout", "600", "--max-tokens", str(args.max_tokens))
    with serving(run, root / f"feedback-{batch_size}.sqlite", args.clients, args.threads, *flags) as url:
        tally, tokens, wall = asyncio.run(drive(url, args.clients, args.seconds, args.max_tokens))
    latencies = [s for kind in tally.latency.values() for s in kind]
    ok = len(latencies)
    return {
        "max_batch_size": batch_size,
        "wall_seconds": round(wall, 1),
        "status_counts": {str(k): v for k, v in sorted(tally.status.items())},
        "server_errors_5xx": sum(v for k, v in tally.status.items() if k >= 500),
        "transport_errors": dict(tally.errors),
        "ok_requests": ok,
        "ok_requests_per_second": round(ok / wall, 3),
        "mean_completion_tokens_non_streamed": round(sum(tokens) / len(tokens), 1) if tokens else None,
        "completion_tokens_per_second_non_streamed": round(sum(tokens) / wall, 1),
        "latency_p50_s": round(percentile(latencies, 50), 2) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 95), 2) if latencies else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="the batching server's (default: --clients)")
    parser.add_argument("--threads", type=int, default=None, help="both servers' torch threads (default: all)")
    parser.add_argument("--run", default=None, help="a LoRA run folder of SmolLM2 to serve (default: train one "
                        "in a temporary folder, about 2 minutes on a busy CPU)")
    parser.add_argument("--out", default=None, help="write the results as JSON here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-batch-") as tmp:
        root = Path(tmp)
        run = Path(args.run) if args.run else make_run(root, "smollm2")
        results = [measure(run, root, args, size) for size in (1, args.batch_size or args.clients)]
    one, batched = results
    summary = {
        "clients": args.clients, "max_tokens": args.max_tokens, "threads": args.threads or "all",
        "modes": results,
        "speedup_requests_per_second": round(batched["ok_requests_per_second"] / one["ok_requests_per_second"], 2),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["server_errors_5xx"] == 0 and not r["transport_errors"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
