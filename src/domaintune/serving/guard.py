"""What keeps `domaintune serve` safe under load and on a network: auth, body, admission.

Starlette bounds form parts but not a JSON body, has no bearer-token check, no deadline on reading a
body and no per-client limit, so the small ASGI middlewares here do those before a request reaches a
route (the Host check is Starlette's TrustedHostMiddleware, set up in serve.py with `allowed_hosts`).
`GenerationGate` bounds how many requests may wait for the model: beyond that they get 429 at once
instead of piling up in memory, and one that waits too long for its batch gets 503.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections import Counter
from typing import TYPE_CHECKING

import anyio

from domaintune.core.errors import DomaintuneError

if TYPE_CHECKING:
    from domaintune.serving.batcher import Job

# Pages that carry no data: they fetch everything through the API, which checks the key.
PUBLIC_PATHS = frozenset({"/", "/review", "/results", "/assets/common.js", "/health"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve to anything: treat it as exposed


def allowed_hosts(bind_host: str, api_key: str | None) -> list[str]:
    """Host header values the server answers. Without a key only loopback names: a web page that
    rebinds its own domain to 127.0.0.1 (DNS rebinding) still sends its domain as Host and is refused."""
    if api_key:
        return ["*"]
    names = ["127.0.0.1", "localhost", "[::1]"]
    if is_loopback(bind_host) and bind_host != "localhost":
        literal = f"[{bind_host}]" if ":" in bind_host else bind_host
        names += [literal] if literal not in names else []
    return names


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise DomaintuneError(
            f"binding to {host} exposes the server beyond this machine: set an API key with --api-key "
            "or DOMAINTUNE_API_KEY (clients send it as 'Authorization: Bearer KEY')"
        )


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else None

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}


class GuardMiddleware:
    """Per request, in this order: the bearer key (401), a JSON content type on POST (415), the body's
    size (413) and the time taken to send it (408)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, body_timeout: float | None):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.api_key and scope["path"] not in PUBLIC_PATHS and not self._authorized(headers):
            return await _reply(send, ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                               "authentication_error", "invalid_api_key"),
                                {"www-authenticate": "Bearer"})
        # FastAPI's strict content type already refuses to parse such a body, but answers with a
        # validation error about the body's shape; this names the cause, before the body is read.
        # (It also keeps cross-site forms, which cannot send application/json without a CORS preflight.)
        if scope["method"] == "POST" and not _is_json(headers.get(b"content-type", b"")):
            return await _reply(send, ApiError(415, "send the body as JSON with 'Content-Type: application/json'",
                                               code="unsupported_media_type"))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await _reply(send, self._too_large())
        body, error = None, None
        with anyio.move_on_after(self.body_timeout) as deadline:
            body, error = await self._read_body(receive)
        if deadline.cancelled_caught:
            error = ApiError(408, f"the request body did not arrive within {self.body_timeout:g} s",
                             code="body_timeout")
        if error is not None:
            return await _reply(send, error, {"connection": "close"})
        if body is None:
            return None  # the client left while sending
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _read_body(self, receive) -> tuple[bytes | None, ApiError | None]:
        """Read the body here (chunked uploads carry no length) and stop as soon as it is too large."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None, self._too_large()
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), None

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        header = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def _too_large(self) -> ApiError:
        return ApiError(413, f"request body is over the limit of {self.max_body_bytes} bytes", code="body_too_large")


def _is_json(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class ClientCapMiddleware:
    """At most `max_per_client` requests in progress per client address (429 beyond): one client
    cannot take every place in the queue, or every connection, from the others."""

    def __init__(self, app, max_per_client: int):
        self.app, self.max_per_client = app, max_per_client
        self.active: Counter[str] = Counter()  # only touched on the event loop thread

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown",))[0]
        if self.active[address] >= self.max_per_client:
            return await _reply(send, ApiError(
                429, f"{self.max_per_client} requests from {address} are already in progress; retry when one "
                     "has finished", "rate_limit_error", "too_many_per_client", retry_after=1))
        self.active[address] += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.active[address] -= 1
            if not self.active[address]:
                del self.active[address]


async def _reply(send, error: ApiError, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(error.body()).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in {**(error.headers() or {}), **(headers or {})}.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class GenerationGate:
    """At most `max_waiting` + 1 requests may be in the model's hands at once, decoding or queued for a
    batch (429 beyond); each waits at most `queue_timeout` seconds for its batch to start (then 503 with
    Retry-After)."""

    RETRY_AFTER_QUEUE_TIMEOUT = 5

    def __init__(self, max_waiting: int, queue_timeout: float | None = None):
        self.max_waiting, self.queue_timeout = max_waiting, queue_timeout
        self.pending = 0  # decoding + queued; only touched on the event loop thread

    def reserve(self) -> Ticket:
        """Claim a place in the queue now (so a stream can still answer 429 before it starts)."""
        if self.pending > self.max_waiting:
            raise ApiError(429, f"server busy: {self.pending} generations running or queued; retry shortly",
                           "rate_limit_error", "server_busy", retry_after=1)
        self.pending += 1
        return Ticket(self)

    async def wait_started(self, job: Job) -> None:
        """Wait until `job`'s batch starts. A job still queued when the wait ends (timeout: 503; the client
        left: the cancellation goes on) is withdrawn, which gives its place back."""
        try:
            with anyio.fail_after(self.queue_timeout):
                await job.started.wait()
        except TimeoutError:
            if job.withdraw():
                raise ApiError(503, f"waited {self.queue_timeout:g} s for the model without a turn; the server "
                                    "is overloaded, retry later", "server_error", "queue_timeout",
                               retry_after=self.RETRY_AFTER_QUEUE_TIMEOUT) from None
        except BaseException:
            job.withdraw()
            raise


class Ticket:
    """A reserved place; released exactly once, when the request's generation ended or never started."""

    def __init__(self, gate: GenerationGate):
        self.gate, self.released = gate, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.pending -= 1
