"""Collects concurrent generation requests into batches for the server's one decoding thread.

A request's rows (one per answer; a review comparison has two) wait in one queue, oldest first. A batch
is the oldest row's group, in arrival order, up to `max_batch_size` rows; it starts once that oldest row
has waited `batch_window` seconds (so that requests arriving together are decoded together) or the batch
is full. Rows that arrive while a batch decodes wait for the next one. `max_batch_size=1` decodes one
request at a time, as the server did before batching.

A group is what one forward pass can serve: every row of the shared base whose adapter mixes in a batch
(`pool.mixes_in_batch`: plain LoRA adapters and the base, through peft's `adapter_names=`) is one group;
any other adapter of it is a group of its own (selected model-wide), and so is each full fine-tuned model.

The event loop side (`Job`) and the decoding thread meet only under the batcher's lock and through
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from domaintune.serving.decode import Generation, GenParams, Row, decode_batch
from domaintune.serving.pool import ModelPool, ServedModel, pad_id

BASE_ROW = "__base__"  # peft's name for "no adapter" in adapter_names
QUEUED, STARTED, WITHDRAWN = "queued", "started", "withdrawn"


@dataclass
class RowRequest:
    model: str
    prompt_ids: list[int]
    params: GenParams
    emit: Callable[[str], None] | None = None  # text pieces as they become final, from the decoding thread
    cancel: threading.Event = field(default_factory=threading.Event)  # set: the row stops at its next token


class Job:
    """One HTTP request's rows, as the event loop sees them: `started` is set when the first of them is
    taken into a batch; `results()` waits for all of them. `on_end` runs on the loop once every row has
    ended, been withdrawn or failed (the server gives the request's place in the queue back there)."""

    def __init__(self, batcher: Batcher, requests: list[RowRequest], on_end: Callable[[], None] | None):
        self._batcher, self._on_end = batcher, on_end
        self._loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.state = QUEUED  # guarded by the batcher's lock
        self._results = [Generation("", "stop", len(r.prompt_ids), 0) for r in requests]
        self._open = set(range(len(requests)))  # rows not yet ended
        self._failure: Exception | None = None
        self._ended = asyncio.Event()

    async def results(self) -> list[Generation]:
        await self._ended.wait()
        if self._failure is not None:
            raise self._failure
        return self._results

    def withdraw(self) -> bool:
        """Take the job out of the queue if none of its rows has started; False if one has."""
        if not self._batcher._withdraw(self):
            return False
        for index in list(self._open):
            self._row_ended(index, None, None)
        return True

    def _from_thread(self, index: int, result: Generation | None, failure: Exception | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this job any more
            self._loop.call_soon_threadsafe(self._row_ended, index, result, failure)

    def _row_ended(self, index: int, result: Generation | None, failure: Exception | None) -> None:
        if index not in self._open:  # ended already (a failure reported after the row had its answer)
            return
        self._open.discard(index)
        self._results[index] = result or self._results[index]
        self._failure = self._failure or failure
        if not self._open:
            self._ended.set()
            if self._on_end is not None:
                self._on_end()


@dataclass(eq=False)
class _Waiting:
    job: Job
    index: int
    request: RowRequest
    served: ServedModel
    arrived: float

    @property
    def group(self) -> Hashable:
        model = id(self.served.model)
        return (model, "mixed") if self.served.mixes else (model, self.served.adapter)


class Batcher:
    def __init__(self, pool: ModelPool, max_batch_size: int, batch_window: float):
        self.pool, self.max_batch_size, self.batch_window = pool, max_batch_size, batch_window
        self.recent_batches: deque[tuple[str, ...]] = deque(maxlen=64)  # the model of each row, per batch
        self._queue: deque[_Waiting] = deque()
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None

    def submit(self, requests: list[RowRequest], on_end: Callable[[], None] | None = None) -> Job:
        """Queue a request's rows (call on the event loop)."""
        job = Job(self, requests, on_end)
        now = time.monotonic()
        waiting = [_Waiting(job, i, r, self.pool.get(r.model), now) for i, r in enumerate(requests)]
        with self._ready:
            self._queue.extend(waiting)
            if self._worker is None:
                self._worker = threading.Thread(target=self._decode_forever, name="domaintune-decode", daemon=True)
                self._worker.start()
            self._ready.notify()
        return job

    def _withdraw(self, job: Job) -> bool:
        with self._ready:
            if job.state != QUEUED:
                return False
            job.state = WITHDRAWN
            self._queue = deque(w for w in self._queue if w.job is not job)
            self._ready.notify()
            return True

    def _decode_forever(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._decode(batch)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets it; the thread goes on
                for waiting in batch:
                    waiting.job._from_thread(waiting.index, None, exc)

    def _next_batch(self) -> list[_Waiting]:
        with self._ready:
            while True:
                if not self._queue:
                    self._ready.wait()
                    continue
                head = self._queue[0]
                batch = [w for w in self._queue if w.group == head.group][: self.max_batch_size]
                left = head.arrived + self.batch_window - time.monotonic()
                if len(batch) == self.max_batch_size or left <= 0:
                    break
                self._ready.wait(left)
            taken = set(map(id, batch))
            self._queue = deque(w for w in self._queue if id(w) not in taken)
            for job in {id(w.job): w.job for w in batch}.values():
                if job.state == QUEUED:
                    job.state = STARTED
                    with contextlib.suppress(RuntimeError):
                        job._loop.call_soon_threadsafe(job.started.set)
            return batch

    def _decode(self, batch: list[_Waiting]) -> None:
        rows, decoded = [], []
        for waiting in batch:
            request = waiting.request
            row = Row(request.prompt_ids, request.params, waiting.served.tokenizer, request.emit, request.cancel,
                      on_end=lambda result, w=waiting: w.job._from_thread(w.index, result))
            if request.cancel.is_set():  # its client left while it waited: it never starts
                row.end()
            else:
                rows.append(row)
                decoded.append(waiting)
        if not rows:
            return
        served = decoded[0].served
        self.recent_batches.append(tuple(w.request.model for w in decoded))
        # One adapter (or the base) alone is selected model-wide, as before batching: peft's mixed path
        # would gather and scatter every row's sub-batch for nothing.
        mixed = len({w.served.adapter for w in decoded}) > 1
        adapter_names = [w.served.adapter or BASE_ROW for w in decoded] if mixed else None
        with self.pool.lock, contextlib.nullcontext() if mixed else self.pool.selected(served):
            try:
                decode_batch(served.model, rows, pad_id(served.tokenizer), adapter_names)
            except Exception as exc:  # noqa: BLE001 - rows that already ended keep their answers
                for waiting, row in zip(decoded, rows, strict=True):
                    if not row.ended:
                        waiting.job._from_thread(waiting.index, None, exc)
