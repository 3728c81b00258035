"""`domaintune serve`: the OpenAI-compatible API on the tiny model, its limits and its key check."""

import json
import time

import pytest
import torch
from fastapi.testclient import TestClient
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli_errors import one_error_line
from conftest import local_client
from domaintune.core.errors import DomaintuneError
from domaintune.serving.app import ServeSettings, create_app
from domaintune.serving.guard import ApiError, GenerationGate, check_bind

CHAT = [{"role": "user", "content": "this drug worked great"}]


@pytest.fixture(scope="module")
def pool(served_pool):
    return served_pool


@pytest.fixture(scope="module")
def client(pool, served_runs, tmp_path_factory):
    settings = ServeSettings(db_path=tmp_path_factory.mktemp("db") / "feedback.sqlite", max_tokens=64,
                             max_prompt_tokens=200, max_body_bytes=20_000, seed=0)
    return local_client(create_app(pool, settings))


def _reference_greedy(model, tokenizer, messages, max_new_tokens):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _chat(client, model, **extra):
    response = client.post("/v1/chat/completions", json={"model": model, "messages": CHAT, "temperature": 0,
                                                         "max_tokens": 12, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_models_lists_base_and_runs_by_folder_name(client):
    data = client.get("/v1/models").json()
    assert data["object"] == "list" and [m["id"] for m in data["data"]] == ["alpha", "beta", "base"]


def test_adapters_share_one_base_model(pool):
    assert pool.get("alpha").model is pool.get("beta").model is pool.get("base").model
    adapters = [pool.get("alpha").adapter, pool.get("beta").adapter]
    assert sorted(pool.get("alpha").model.peft_config) == sorted(adapters) and None not in adapters


def test_each_name_answers_like_its_own_model_loaded_alone(client, served_runs, tiny_model_dir):
    _, runs = served_runs
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = {}
    for name, run in (("alpha", runs[0]), ("beta", runs[1]), ("base", None)):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if run is not None:
            model = PeftModel.from_pretrained(model, run / "adapter")
        expected = _reference_greedy(model.eval(), tokenizer, CHAT, 12)
        # Served in an order that switches adapter on every request.
        body = _chat(client, name)
        answers[name] = body["choices"][0]["message"]["content"]
        assert answers[name] == expected.strip() or answers[name] == expected
        assert body["object"] == "chat.completion" and body["model"] == name
        assert body["usage"]["completion_tokens"] <= 12 and body["usage"]["prompt_tokens"] > 0
    assert len(set(answers.values())) == 3, f"adapters must change the answer: {answers}"


def _sse_events(response):
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_chat_matches_the_whole_answer(client):
    whole = _chat(client, "alpha")["choices"][0]
    with client.stream("POST", "/v1/chat/completions", json={"model": "alpha", "messages": CHAT, "temperature": 0,
                                                             "max_tokens": 12, "stream": True}) as response:
        response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = _sse_events(response)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_completions_stop_sequence_is_cut_out(client):
    request = {"model": "beta", "prompt": "review number 4 for drug", "temperature": 0, "max_tokens": 20}
    full = client.post("/v1/completions", json=request).json()["choices"][0]
    text = full["text"]
    assert len(text) > 6, text
    stop = text[3:5]
    cut = client.post("/v1/completions", json={**request, "stop": [stop]}).json()["choices"][0]
    assert cut["text"] == text[: text.find(stop)] and cut["finish_reason"] == "stop"
    with client.stream("POST", "/v1/completions", json={**request, "stop": stop, "stream": True}) as response:
        response.read()
    streamed = "".join(c["choices"][0]["text"] for c in _sse_events(response))
    assert streamed == cut["text"]


def test_max_tokens_and_sampling_parameters(client):
    body = client.post("/v1/completions", json={"model": "base", "prompt": "drug", "max_tokens": 3,
                                                "temperature": 1.3, "top_p": 0.5, "seed": 7}).json()
    assert body["usage"]["completion_tokens"] <= 3
    if body["usage"]["completion_tokens"] == 3:
        assert body["choices"][0]["finish_reason"] == "length"
    again = client.post("/v1/completions", json={"model": "base", "prompt": "drug", "max_tokens": 3,
                                                 "temperature": 1.3, "top_p": 0.5, "seed": 7}).json()
    assert again["choices"][0]["text"] == body["choices"][0]["text"], "a seed makes sampling repeatable"


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"model": "alpha", "messages": CHAT, "max_tokens": 65}, 400, "over this server's limit of 64"),
    ({"model": "alpha", "messages": [{"role": "user", "content": "drug " * 300}]}, 400,
     "over this server's limit of 200"),
    ({"model": "nope", "messages": CHAT}, 404, "model 'nope' not found"),
    ({"model": "alpha", "messages": CHAT, "n": 2}, 400, "only n=1"),
    ({"model": "alpha", "messages": []}, 400, "messages"),
    ({"model": "alpha", "messages": CHAT, "temperature": 5}, 400, "temperature"),
])
def test_bad_requests_get_openai_shaped_errors(client, payload, status, words):
    response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == status and words in response.json()["error"]["message"]


def test_oversized_body_is_refused_before_parsing(client):
    big = {"model": "alpha", "messages": [{"role": "user", "content": "x" * 30_000}]}
    assert client.post("/v1/chat/completions", json=big).status_code == 413

    def chunked():  # no content-length: the body is counted as it arrives
        for _ in range(30):
            yield b"x" * 1000

    response = client.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_gate_counts_places():
    gate = GenerationGate(max_waiting=1)
    gate.reserve(), gate.reserve()
    with pytest.raises(ApiError) as err:
        gate.reserve()
    assert err.value.status == 429


def test_api_key_is_required_when_set(pool, tmp_path):
    app = create_app(pool, ServeSettings(api_key="s3cret", db_path=tmp_path / "f.sqlite"))
    client = TestClient(app)
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/review/api/votes", json={}).status_code == 401
    assert client.get("/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/review").status_code == 200, "the page itself carries no data"


def test_non_loopback_bind_needs_a_key():
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.5", "myhost.example"):
        with pytest.raises(DomaintuneError, match="--api-key"):
            check_bind(host, None)
        check_bind(host, "key")


def test_cli_refuses_open_bind_without_key(capsys, monkeypatch, served_runs):
    from domaintune.cli.main import main

    monkeypatch.delenv("DOMAINTUNE_API_KEY", raising=False)
    assert main(["serve", str(served_runs[1][0]), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in one_error_line(capsys)


def test_official_openai_client(live_server):
    from openai import NotFoundError, OpenAI

    url, _ = live_server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused-on-loopback", max_retries=0)
    assert sorted(m.id for m in client.models.list()) == ["alpha", "base", "beta"]
    chat = client.chat.completions.create(model="alpha", messages=CHAT, temperature=0, max_tokens=8)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 8
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="alpha", messages=CHAT, temperature=0, max_tokens=8, stream=True) if c.choices]
    assert "".join(pieces) == chat.choices[0].message.content
    completion = client.completions.create(model="beta", prompt="drug", max_tokens=4, temperature=0)
    assert isinstance(completion.choices[0].text, str)
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="missing", messages=CHAT)


def test_client_leaving_mid_stream_frees_the_model(live_server):
    import httpx

    url, app = live_server
    request = {"model": "alpha", "messages": CHAT, "max_tokens": 64, "temperature": 1.0, "stream": True}
    with httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=request) as response:
            first = next(response.iter_lines())
            assert first.startswith("data: ")
        # The connection is closed with the answer unfinished; the place in the queue must come back.
        deadline = time.monotonic() + 20
        while app.state.gate.pending:
            assert time.monotonic() < deadline, "the stream's place was never given back"
            time.sleep(0.05)
        again = http.post("/v1/chat/completions", json={**request, "stream": False, "max_tokens": 2})
        assert again.status_code == 200


def test_full_run_is_served_with_its_own_weights(tiny_overrides, tmp_path):
    from domaintune import load_config, run_prepare, run_train
    from domaintune.serving.pool import GenParams, ModelPool

    cfg = load_config(None, tiny_overrides + ["train.method=full", f"train.output_dir={tmp_path / 'full'}"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    pool = ModelPool([str(run_dir)], include_base=True, cfg=cfg)
    assert list(pool.models) == ["base", "full"] and pool.get("full").model is not pool.get("base").model
    ids = pool.chat_ids("full", CHAT)
    expected = _reference_greedy(AutoModelForCausalLM.from_pretrained(run_dir / "model").eval(),
                                 AutoTokenizer.from_pretrained(run_dir / "model"), CHAT, 6)
    assert pool.generate("full", ids, GenParams(max_tokens=6, temperature=0)).text == expected


def test_runs_of_different_bases_or_same_names_are_refused(served_runs, tmp_path):
    import shutil

    from domaintune import load_config
    from domaintune.serving.pool import ModelPool

    overrides, runs = served_runs
    twin = tmp_path / "other" / "alpha"
    shutil.copytree(runs[0], twin)
    with pytest.raises(DomaintuneError, match="two served models would be named 'alpha'"):
        ModelPool([str(runs[0]), str(twin)], include_base=False, cfg=load_config(None, overrides))
    with pytest.raises(DomaintuneError, match="nothing to serve"):
        ModelPool([], include_base=False, cfg=load_config(None, overrides))


def test_run_folders_named_with_dots_and_dollars_are_served(client, served_runs, tmp_path):
    import shutil

    from domaintune import load_config
    from domaintune.serving.pool import ModelPool

    overrides, runs = served_runs
    names = ["v1.2$x", "$beta.final"]
    for name, run in zip(names, runs, strict=True):
        shutil.copytree(run, tmp_path / name)
    pool = ModelPool([str(tmp_path / n) for n in names], include_base=True, cfg=load_config(None, overrides))
    renamed = local_client(create_app(pool, ServeSettings(db_path=tmp_path / "f.sqlite", max_tokens=64)))
    assert [m["id"] for m in renamed.get("/v1/models").json()["data"]] == [*names, "base"]
    for name, original in zip(names, ("alpha", "beta"), strict=True):
        assert _chat(renamed, name)["choices"][0]["message"]["content"] == \
            _chat(client, original)["choices"][0]["message"]["content"]
