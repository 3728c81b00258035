"""`domaintune serve` under hostile or careless clients: Host and content-type checks, deadlines on every
wait, the queue and per-client limits, clients that leave, and seeds.

Most tests run a real uvicorn server on 127.0.0.1 and talk to it over sockets, with `brake` (conftest)
on the served model.
"""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import pytest
import torch

from conftest import local_client, settled
from domaintune.serving.app import ServeSettings, create_app
from domaintune.serving.review import ReviewSampling
from domaintune.serving.reviewers import COOKIE

CHAT = [{"role": "user", "content": "this drug worked great"}]
SHORT = {"model": "alpha", "messages": CHAT, "max_tokens": 2, "temperature": 0}


@pytest.fixture
def client(served_pool, tmp_path):
    return local_client(create_app(served_pool, ServeSettings(db_path=tmp_path / "f.sqlite", max_tokens=64)))


def _connect(url: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20)


def _head(path: str, body: bytes, host: str = "127.0.0.1", cookie: str | None = None) -> bytes:
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{cookie_line}"
            f"Content-Length: {len(body)}\r\n\r\n").encode()


def _read_until_closed(sock: socket.socket) -> bytes:
    """The whole answer of a `connection: close` response: head and body may arrive in separate segments
    (they did on a loaded CI machine), so one recv can return the head alone."""
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_host_must_be_a_loopback_name_without_a_key(served_pool, client, tmp_path):
    for host in ("127.0.0.1", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/health", headers={"host": host}).status_code == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "testserver"):
        assert client.get("/health", headers={"host": host}).status_code == 400, host
        assert client.post("/v1/chat/completions", json=SHORT, headers={"host": host}).status_code == 400
    keyed = local_client(create_app(served_pool, ServeSettings(api_key="k", db_path=tmp_path / "k.sqlite")))
    # With a key the server may be reached under any name; the key is what keeps other pages out.
    assert keyed.get("/v1/models", headers={"host": "myserver.lan", "authorization": "Bearer k"}).status_code == 200


def test_post_bodies_must_be_declared_json(client):
    body = json.dumps(SHORT)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        response = client.post("/v1/chat/completions", content=body, headers=headers)
        assert response.status_code == 415 and "application/json" in response.json()["error"]["message"]
        assert client.post("/review/api/votes", content=body, headers=headers).status_code == 415
    ok = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_seed_outside_the_64_bit_range_is_a_400(client, seed):
    response = client.post("/v1/completions", json={"model": "base", "prompt": "drug", "max_tokens": 2, "seed": seed})
    assert response.status_code == 400 and "seed" in response.json()["error"]["message"]


def test_seeded_request_leaves_later_draws_alone(client):
    def draw(**extra) -> str:
        body = {"model": "base", "prompt": "drug", "max_tokens": 16, "temperature": 1.3, **extra}
        response = client.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    assert client.post("/v1/completions", json={"model": "base", "prompt": "drug", "max_tokens": 1,
                                                "seed": 2**64 - 1}).status_code == 200
    torch.manual_seed(123)
    undisturbed = draw()
    torch.manual_seed(123)
    seeded = draw(seed=7)
    assert draw() == undisturbed, "the seeded request must not have moved the process's random state"
    assert draw(seed=7) == seeded


def test_connection_that_sends_no_request_is_closed(start_server, brake):
    url, _ = start_server(head_timeout=0.5)
    idle, dribbling = _connect(url), _connect(url)
    started = time.monotonic()
    dribbling.sendall(b"GET /health HTTP/1.1\r\n")
    for _ in range(2):  # a header line now and then, never the blank line that ends the head
        time.sleep(0.15)
        dribbling.sendall(b"X-Slow: 1\r\n")
    assert idle.recv(1024) == b"" and dribbling.recv(1024) == b"", "the server should have closed both"
    assert time.monotonic() - started < 5
    # A request that arrived in time is answered however long its generation takes.
    brake.delay = 0.05
    with _connect(url) as busy:
        body = json.dumps({**SHORT, "max_tokens": 20}).encode()
        busy.sendall(_head("/v1/chat/completions", body) + body)
        assert busy.recv(1024).startswith(b"HTTP/1.1 200")
    assert brake.calls >= 20 and 20 * brake.delay > 0.5


def test_body_that_never_arrives_gets_408(start_server):
    url, _ = start_server(body_timeout=0.5)
    with _connect(url) as sock:
        sock.sendall(_head("/v1/chat/completions", b"x" * 100) + b'{"model": ')
        started = time.monotonic()
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
        assert time.monotonic() - started < 5


def test_more_concurrent_requests_than_places_get_429_and_the_rest_are_served(start_server, brake):
    url, app = start_server(max_waiting=2)
    brake.running.clear()  # the first request holds the model until every other one has arrived
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.post, f"{url}/v1/chat/completions", json=SHORT, timeout=60) for _ in range(6)]
        done, _ = wait(futures, timeout=30, return_when="FIRST_COMPLETED")
        deadline = time.monotonic() + 30
        while sum(f.done() for f in futures) < 3:
            assert time.monotonic() < deadline, "three requests should have been turned away at once"
            time.sleep(0.02)
        refused = [f.result() for f in futures if f.done()]
        assert [r.status_code for r in refused] == [429] * 3
        assert all(r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "server_busy" for r in refused)
        brake.running.set()
        statuses = sorted(f.result().status_code for f in futures)
    assert statuses == [200] * 3 + [429] * 3, "one running and max_waiting=2 queued are served"
    settled(app)
    assert httpx.post(f"{url}/v1/chat/completions", json=SHORT, timeout=60).status_code == 200


def test_waiting_too_long_for_the_model_is_a_503_with_retry_after(start_server, brake):
    url, app = start_server(queue_timeout=0.5)
    brake.running.clear()
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=SHORT, timeout=60)
        assert brake.entered.wait(20)
        for stream in (False, True):
            started = time.monotonic()
            late = httpx.post(f"{url}/v1/chat/completions", json={**SHORT, "stream": stream}, timeout=60)
            assert late.status_code == 503 and late.headers["retry-after"] == "5"
            assert late.json()["error"]["code"] == "queue_timeout" and time.monotonic() - started >= 0.5
        brake.running.set()
        assert holder.result().status_code == 200
    settled(app)


def test_one_address_cannot_take_every_place(start_server, brake):
    url, app = start_server(max_per_client=2)
    brake.running.clear()
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=60)
    with ThreadPoolExecutor(3) as pool, other:
        mine = [pool.submit(httpx.post, f"{url}/v1/chat/completions", json=SHORT, timeout=60) for _ in range(2)]
        deadline = time.monotonic() + 20
        while app.state.gate.pending < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        third = httpx.post(f"{url}/v1/chat/completions", json=SHORT, timeout=60)
        assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_per_client"
        assert third.headers["retry-after"] == "1"
        theirs = pool.submit(other.post, f"{url}/v1/chat/completions", json=SHORT)
        while app.state.gate.pending < 3:  # another address still gets a place in the queue
            assert time.monotonic() < deadline
            time.sleep(0.02)
        brake.running.set()
        assert [f.result().status_code for f in [*mine, theirs]] == [200, 200, 200]


# path, request, forward passes per generated token: a comparison's two answers (two LoRA adapters)
# are decoded in one batch, one forward pass for both (with --max-batch-size 1 it would be two).
LEAVING = {
    "streamed chat": ("/v1/chat/completions", {"model": "alpha", "messages": CHAT, "stream": True}, 1),
    "completion": ("/v1/completions", {"model": "alpha", "prompt": "review number 4 for drug"}, 1),
    "review comparison": ("/review/api/comparisons", {"prompt": "this drug worked great",
                                                      "models": ["alpha", "beta"]}, 1),
}


@pytest.mark.parametrize("kind", list(LEAVING))
def test_client_that_leaves_stops_its_generation(start_server, brake, kind):
    path, request, generations = LEAVING[kind]
    max_tokens = 300
    cookie = None
    if kind == "review comparison":
        # The server fixes a comparison's sampling (a client may not): greedy and long here, so a client that
        # stays gets the whole answer. A reviewer needs the token the review page gives a browser.
        url, app = start_server(review_sampling=ReviewSampling(max_tokens=max_tokens, temperature=0))
        token = httpx.get(url + "/review").cookies[COOKIE]
        cookie = f"{COOKIE}={token}"
        stays = httpx.post(url + path, json=request, timeout=60, headers={"cookie": cookie})
        request = {**request, "prompt": "it made my headache worse"}  # one vote per prompt: a fresh one
    else:
        url, app = start_server()
        request = {**request, "max_tokens": max_tokens, "temperature": 0}
        # A client that stays to the end: the greedy answer runs to max_tokens.
        stays = httpx.post(url + path, json=request, timeout=60)
    assert stays.status_code == 200
    settled(app)
    assert brake.calls == generations * max_tokens, "the answer must be long enough for the test to mean anything"

    brake.calls, brake.delay = 0, 0.01  # now 300 tokens take at least 3 s
    brake.entered.clear()
    body = json.dumps(request).encode()
    with _connect(url) as sock:
        sock.sendall(_head(path, body, cookie=cookie) + body)
        assert brake.entered.wait(20)
        time.sleep(0.3)
    settled(app)
    assert brake.calls < max_tokens / 4, f"{brake.calls} tokens generated after the client left"
