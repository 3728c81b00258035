"""How `domaintune serve` runs uvicorn: its settings, plus a deadline for a request's head.

uvicorn closes a kept-alive connection after `timeout_keep_alive`, but starts no timer for a connection
that has not yet sent a request, and stops its keep-alive timer as soon as any byte arrives: a client
that connects and sends nothing, or sends its headers a byte at a time, holds a connection (and a
place under `limit_concurrency`) for ever. `HeadDeadlineProtocol` adds the missing timer; everything
else is uvicorn's h11 protocol unchanged. (A header block over h11's 16 KiB is already refused.)
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# uvicorn's own connection cap answers 503; it is set far above the 429 queue limit so that it only
# guards against runaway connection counts, never against ordinary load.
MAX_CONNECTIONS = 1024


class HeadDeadlineProtocol(H11Protocol):
    """Closes a connection whose next request head is not complete `head_timeout` seconds after the
    connection opened or its previous response ended."""

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout, self._close_if_no_request, self.cycle)

    def _close_if_no_request(self, cycle_when_armed) -> None:
        # A new request head parsed since arming makes a new cycle; one still answering is left alone
        # (its end arms the deadline again).
        idle = self.cycle is None or self.cycle.response_complete
        if self.cycle is cycle_when_armed and idle and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app, host: str, port: int, head_timeout: float) -> uvicorn.Config:
    protocol = type("HeadDeadline", (HeadDeadlineProtocol,), {"head_timeout": head_timeout})
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol,
                          limit_concurrency=MAX_CONNECTIONS)
