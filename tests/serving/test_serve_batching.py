"""`domaintune serve` decodes concurrent requests in batches: answers as if each were decoded alone.

Batches are made deterministic with `brake` (conftest): a first request holds the model, the requests
under test queue behind it, and when the model is released the batcher takes them all as one batch
(their oldest has waited past the batch window). `batcher.recent_batches` says which rows shared a batch.
"""

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from conftest import settled
from domaintune.serving.batcher import Batcher, RowRequest
from domaintune.serving.decode import GenParams, Row, decode_batch
from domaintune.serving.pool import ModelPool, pad_id
from exactness import UNIT_ROUNDOFF

# Three prompts of different lengths, so that every batch pads.
PROMPTS = ["this drug worked great", "terrible side effects, it made my headache worse after a week",
           "no real change so far"]
MODELS = ["alpha", "beta", "base"]
MAX_NEW = 24

# Logits computed in a batch and alone are the same arithmetic in other orders: GEMM blocking depends on
# the number of rows, padded keys add exact zeros to the attention sums, and peft applies each adapter to
# its sub-batch. Two orders of a length-n fp32 sum differ by at most 2·n·u·Σ|terms| (the γ_n bound); the
# longest sum in this model is the MLP's (n = 64), its terms are of the logits' size (RMS-normed
# activations, weights of std 0.02 scaled back up by the norms), and the two layers with their residual
# adds compound it a few times: ROUNDOFF_BOUND relative to the largest |logit| (measured here: ~3e-7).
ROUNDOFF_BOUND = 4 * 2 * 64 * UNIT_ROUNDOFF["fp32"]


def _chat(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def _alone(pool: ModelPool, name: str, ids: list[int], max_new: int) -> tuple[list[int], torch.Tensor]:
    """The greedy answer of `name` decoded alone, with its logits at every step."""
    served = pool.get(name)
    with pool.lock, pool.selected(served), torch.no_grad():
        x = torch.tensor([ids])
        out = served.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new,
                                    do_sample=False, pad_token_id=pad_id(served.tokenizer),
                                    output_scores=True, return_dict_in_generate=True)
    return out.sequences[0, len(ids):].tolist(), torch.cat(out.scores)


def _logits_in_a_batch(pool: ModelPool, names: list[str], sequences: list[list[int]]) -> list[torch.Tensor]:
    """Teacher-forced logits of every row of one left-padded, adapter-mixed batch (positions numbered from
    the attention mask, as generate() numbers them)."""
    model = pool.get(names[0]).model
    width = max(map(len, sequences))
    ids = torch.tensor([[0] * (width - len(s)) + s for s in sequences])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with pool.lock, torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       adapter_names=[pool.get(n).adapter or "__base__" for n in names]).logits
    return [logits[i, width - len(s):] for i, s in enumerate(sequences)]


def test_batched_greedy_equals_greedy_alone_token_for_token(served_pool):
    """Greedy decoding can only come out differently where two logits are closer than the roundoff
    between the two evaluations. So: measure that roundoff (teacher-forced, batch against alone) and
    bound it from fp32's unit roundoff; check that no reference step is that close to a tie; then the
    tokens must be exactly equal, and any difference is a real error (a position counted from the
    padding moves logits by ~1e-1, a wrong adapter by more)."""
    pool = served_pool
    cases = [(name, pool.chat_ids(name, _chat(p))) for p in PROMPTS for name in MODELS]
    alone = [_alone(pool, name, ids, MAX_NEW) for name, ids in cases]

    batched = _logits_in_a_batch(pool, [n for n, _ in cases], [ids + tokens for (_, ids), (tokens, _) in
                                                                   zip(cases, alone, strict=True)])
    for (_, ids), (tokens, logits), in_batch in zip(cases, alone, batched, strict=True):
        step_logits = in_batch[len(ids) - 1: len(ids) - 1 + len(tokens)]
        bound = ROUNDOFF_BOUND * float(logits.abs().max())
        assert float((step_logits - logits).abs().max()) <= bound
        top2 = logits.topk(2, dim=-1).values
        assert float((top2[:, 0] - top2[:, 1]).min()) > 2 * bound, "a near tie: choose another prompt"

    rows = [Row(ids, GenParams(MAX_NEW, temperature=0), pool.get(name).tokenizer) for name, ids in cases]
    model = pool.get("alpha").model
    with pool.lock:
        decode_batch(model, rows, pad_id(pool.get("alpha").tokenizer), [pool.get(n).adapter or "__base__"
                                                                          for n, _ in cases])
    assert [row.ids for row in rows] == [tokens for tokens, _ in alone]
    assert len({tuple(row.ids) for row in rows}) > len(PROMPTS), "the adapters must change the answers"


def _post(url: str, path: str, body: dict) -> dict:
    response = httpx.post(url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _held_batch(url: str, app, brake, send: list) -> list:
    """Run `send` (callables) concurrently while a first request holds the model, then release it, so
    that all of them are queued when the next batch is made: they share it."""
    brake.running.clear()
    brake.entered.clear()
    with ThreadPoolExecutor(len(send) + 1) as workers:
        holder = workers.submit(_post, url, "/v1/completions", {"model": "alpha", "prompt": "drug", "max_tokens": 1})
        assert brake.entered.wait(30)
        futures = [workers.submit(call) for call in send]
        deadline = time.monotonic() + 30
        while app.state.gate.pending < len(send) + 1:
            assert time.monotonic() < deadline, "the requests did not all arrive"
            time.sleep(0.02)
        brake.running.set()
        holder.result()
        return [f.result() for f in futures]


def test_mixed_adapters_in_one_batch_answer_as_each_alone(start_server, brake, served_pool):
    """Greedy chats of every model (equal as the test above establishes for these prompts), a stop
    string, a short max_tokens and a seeded sampled completion, all in one batch of three models."""
    solo_url, _ = start_server(max_batch_size=1)
    url, app = start_server(max_batch_size=8, batch_window=0.05)
    chats = [("/v1/chat/completions", {"model": name, "messages": _chat(PROMPTS[i % 3]), "temperature": 0,
                                       "max_tokens": MAX_NEW}) for i, name in enumerate(MODELS)]
    first = _post(solo_url, *chats[1])["choices"][0]["message"]["content"]
    assert len(first) > 6, first
    requests = [*chats,
                ("/v1/chat/completions", {**chats[1][1], "stop": [first[3:5]]}),
                ("/v1/chat/completions", {**chats[2][1], "max_tokens": 3}),
                ("/v1/completions", {"model": "alpha", "prompt": "review number 4", "temperature": 1.0,
                                     "max_tokens": MAX_NEW, "seed": 7})]
    # Alone: one at a time. A seeded row draws from its own generator, so its batch neighbours cannot move
    # its draws (only roundoff in its probabilities could, at a draw within ~1e-7 of a boundary).
    alone = [_post(solo_url, path, body) for path, body in requests]
    together = _held_batch(url, app, brake, [lambda r=r: _post(url, *r) for r in requests])
    assert sorted(app.state.batcher.recent_batches[-1]) == sorted(body["model"] for _, body in requests)
    assert [(c["choices"], c["usage"]) for c in together] == [(c["choices"], c["usage"]) for c in alone]
    for (_, body), answer in zip(chats, together[: len(chats)], strict=True):  # as transformers decodes alone
        served = served_pool.get(body["model"])
        tokens, _ = _alone(served_pool, body["model"], served_pool.chat_ids(body["model"], body["messages"]), MAX_NEW)
        assert answer["choices"][0]["message"]["content"] == served.tokenizer.decode(tokens, skip_special_tokens=True)
    assert alone[3]["choices"][0]["message"]["content"] == first[: first.find(first[3:5])]
    assert alone[4]["choices"][0]["finish_reason"] == "length"


def _stream(url: str, body: dict, leave_after_first_piece: bool = False) -> tuple[str, list[float], str | None]:
    """The streamed text, the arrival time of each content piece, and the finish reason."""
    text, times, finish = "", [], None
    with httpx.Client(timeout=120) as http, http.stream("POST", url + "/v1/chat/completions",
                                                        json={**body, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choice = json.loads(line[len("data: "):])["choices"][0]
            if choice["delta"].get("content"):
                text += choice["delta"]["content"]
                times.append(time.monotonic())
                if leave_after_first_piece:
                    return text, times, None  # closing the connection mid-answer
            finish = choice["finish_reason"] or finish
    return text, times, finish


def test_each_stream_gets_its_own_tokens_while_the_batch_decodes(start_server, brake):
    url, app = start_server(max_batch_size=8, batch_window=0.05)
    short = {"model": "alpha", "messages": _chat(PROMPTS[0]), "temperature": 0, "max_tokens": 6}
    long = {"model": "beta", "messages": _chat(PROMPTS[1]), "temperature": 0, "max_tokens": MAX_NEW}
    whole = [_post(url, "/v1/chat/completions", body)["choices"][0] for body in (short, long)]
    assert whole[1]["finish_reason"] == "length", "the long answer must outlast the short one"
    brake.delay = 0.05  # a token every 50 ms, so that the pieces' arrival times tell the steps apart
    (short_text, short_times, short_end), (long_text, long_times, long_end) = _held_batch(
        url, app, brake, [lambda: _stream(url, short), lambda: _stream(url, long)])
    assert sorted(app.state.batcher.recent_batches[-1]) == ["alpha", "beta"]
    assert (short_text, short_end) == (whole[0]["message"]["content"], whole[0]["finish_reason"])
    assert (long_text, long_end) == (whole[1]["message"]["content"], "length")
    # Both streams received pieces during the same decode, and the short one was over before the long one.
    assert long_times[0] < short_times[-1] < long_times[-1]


def test_a_client_that_leaves_stops_its_row_and_the_others_complete(start_server, brake):
    url, app = start_server(max_batch_size=8, batch_window=0.05)
    bodies = [{"model": name, "messages": _chat(PROMPTS[1]), "temperature": 0, "max_tokens": MAX_NEW}
              for name in MODELS]
    whole = [_post(url, "/v1/chat/completions", body)["choices"][0] for body in bodies]
    assert all(c["finish_reason"] == "length" for c in whole), "every answer must run to max_tokens"
    brake.delay = 0.1  # a step every 100 ms, so that the client's leaving is seen within a few steps
    steps_when_it_ended: list[int] = []

    def watch() -> None:  # the leaver's place in the queue comes back when its row has ended
        deadline = time.monotonic() + 60
        while app.state.gate.pending < len(MODELS) + 1 and time.monotonic() < deadline:  # all behind the holder
            time.sleep(0.005)
        while app.state.gate.pending > len(MODELS) - 1 and time.monotonic() < deadline:  # one of them ended
            time.sleep(0.005)
        steps_when_it_ended.append(brake.calls)

    watcher = threading.Thread(target=watch, daemon=True)

    def leave() -> tuple:
        watcher.start()
        return _stream(url, bodies[0], leave_after_first_piece=True)

    brake.calls = 0
    results = _held_batch(url, app, brake, [leave, *(lambda b=b: _stream(url, b) for b in bodies[1:])])
    watcher.join()
    settled(app)
    assert sorted(app.state.batcher.recent_batches[-1]) == sorted(MODELS)
    # Forward passes so far: the holder's one, the batch's prompt, then one per step of the batch.
    assert steps_when_it_ended[0] < MAX_NEW / 2, "the leaver's row must end a few steps after it left"
    assert brake.calls >= MAX_NEW + 1, "the others decoded on to their max_tokens"
    assert [(text, end) for text, _, end in results[1:]] == [(c["message"]["content"], "length") for c in whole[1:]]


def test_limits_hold_with_batches(start_server, brake):
    """A full batch decodes; behind it, max_waiting requests queue and time out with 503 (never decoded);
    beyond them 429 at once."""
    url, app = start_server(max_batch_size=2, max_waiting=3, queue_timeout=1.0, batch_window=5)
    brake.running.clear()
    body = {"model": "alpha", "messages": _chat(PROMPTS[0]), "temperature": 0, "max_tokens": 2}
    with ThreadPoolExecutor(6) as workers:
        futures = [workers.submit(httpx.post, url + "/v1/chat/completions", json=body, timeout=60) for _ in range(6)]
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < 4:  # two refused at once, two timed out in the queue
            assert time.monotonic() < deadline, "the queue did not turn requests away"
            time.sleep(0.02)
        refused = sorted(f.result().status_code for f in futures if f.done())
        brake.running.set()
        statuses = sorted(f.result().status_code for f in futures)
    assert refused == [429, 429, 503, 503] and statuses == [200, 200, 429, 429, 503, 503]
    settled(app)
    assert list(app.state.batcher.recent_batches) == [("alpha", "alpha")], "the timed-out requests never decode"


@pytest.fixture(scope="module")
def dora_pool(served_runs):
    """`alpha` (LoRA), `dora` (DoRA, which peft cannot mix in a batch) and `base` on one shared base."""
    from domaintune import load_config, run_train

    overrides, runs = served_runs
    dora = run_train(load_config(None, overrides + ["train.method=dora", "train.learning_rate=0.05",
                                                   f"train.output_dir={runs[0].parent / 'dora'}"]))
    return ModelPool([str(runs[0]), str(dora)], include_base=True, cfg=load_config(None, overrides))


def test_adapters_that_cannot_mix_get_batches_of_their_own(dora_pool):
    assert {name: dora_pool.get(name).mixes for name in dora_pool.models} == {"alpha": True, "dora": False,
                                                                              "base": True}
    requests = [RowRequest(name, dora_pool.chat_ids(name, _chat(PROMPTS[1])), GenParams(MAX_NEW, temperature=0))
                for name in ("alpha", "dora", "base")]

    async def together():
        batcher = Batcher(dora_pool, max_batch_size=8, batch_window=0.2)
        jobs = [batcher.submit([request]) for request in requests]
        return [(await job.results())[0] for job in jobs], list(batcher.recent_batches)

    answers, batches = asyncio.run(together())
    # The oldest request's group first: alpha with base (mixed), then dora alone, selected model-wide.
    assert batches == [("alpha", "base"), ("dora",)]
    assert answers == [dora_pool.generate(r.model, r.prompt_ids, r.params) for r in requests]
    assert len({a.text for a in answers}) == 3
