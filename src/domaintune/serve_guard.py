"""What keeps `domaintune serve` safe under load and on a network: auth, body size, admission.

Starlette bounds form parts but not a JSON body, and has no bearer-token check of its own, so the small
ASGI middleware here does both before a request reaches a route. `GenerationGate` bounds how many
requests may wait for the model: beyond that they get 429 at once instead of piling up in memory.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import DomaintuneError

# Pages that carry no data: they fetch everything through the API, which checks the key.
PUBLIC_PATHS = frozenset({"/", "/review", "/results", "/assets/common.js", "/health"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve to anything: treat it as exposed


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise DomaintuneError(
            f"binding to {host} exposes the server beyond this machine: set an API key with --api-key "
            "or DOMAINTUNE_API_KEY (clients send it as 'Authorization: Bearer KEY')"
        )


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}


class GuardMiddleware:
    """Rejects requests without the bearer key (401) and bodies over `max_body_bytes` (413)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key and scope["path"] not in PUBLIC_PATHS and not self._authorized(scope):
            return await _reply(send, ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                                               "authentication_error", "invalid_api_key"),
                                {"www-authenticate": "Bearer"})
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await _reply(send, self._too_large())
        # Read the body here (chunked uploads carry no length) and stop as soon as it is too large.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _reply(send, self._too_large())
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _authorized(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def _too_large(self) -> ApiError:
        return ApiError(413, f"request body is over the limit of {self.max_body_bytes} bytes", code="body_too_large")


async def _reply(send, error: ApiError, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(error.body()).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class GenerationGate:
    """At most one generation runs (the model is shared); at most `max_waiting` more may queue."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.pending = 0  # running + waiting; only touched on the event loop thread
        self._turn = asyncio.Lock()

    def reserve(self) -> Ticket:
        """Claim a place in the queue now (so a stream can still answer 429 before it starts)."""
        if self.pending > self.max_waiting:
            raise ApiError(429, f"server busy: {self.pending} generations running or queued; retry shortly",
                           "rate_limit_error", "server_busy")
        self.pending += 1
        return Ticket(self)

    @asynccontextmanager
    async def turn(self, ticket: Ticket) -> AsyncIterator[None]:
        """Wait for the model with a reserved place; the place is given back on exit."""
        try:
            async with self._turn:
                yield
        finally:
            ticket.release()


class Ticket:
    """A reserved place; released exactly once, also when a stream is dropped before it started."""

    def __init__(self, gate: GenerationGate):
        self.gate, self.released = gate, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.pending -= 1
