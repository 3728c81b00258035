"""OpenAI-compatible routes: /v1/models, /v1/chat/completions and /v1/completions, streamed or not.

The request and response shapes follow OpenAI's API reference so that the official `openai` client
works unchanged; only `n=1` is supported, and limits are the server's (see `Limits`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from domaintune.core.errors import DomaintuneError
from domaintune.serving.batcher import Batcher, Job, RowRequest
from domaintune.serving.guard import ApiError, GenerationGate
from domaintune.serving.pool import Generation, GenParams, ModelPool

T = TypeVar("T")
# torch.manual_seed takes exactly this range; a seed outside it was a 500 from deep inside torch.
SEED_RANGE = {"ge": -(2**63), "le": 2**64 - 1}


class ClientGone(Exception):
    """The client disconnected before its answer was ready; nothing is sent (uvicorn drops it anyway)."""


async def unless_client_leaves(request: Request, work: Callable[[threading.Event], Awaitable[T]]) -> T:
    """Run `work(gone)` while watching the connection. When the client disconnects, `gone` is set, so a
    generation stops at its next token (and one not yet started never starts), and a wait for the
    model is cancelled; then ClientGone is raised.

    Starlette watches for a disconnect only while streaming, so non-streamed answers need this.
    """
    gone = threading.Event()
    result: list[T] = []
    failure: list[Exception] = []  # raised here as itself, not wrapped in the task group's ExceptionGroup
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone.set()
            group.cancel_scope.cancel()

        async def run() -> None:
            try:
                result.append(await work(gone))
            except Exception as exc:  # noqa: BLE001 - handed over as it is
                failure.append(exc)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(run)
    if failure:
        raise failure[0]
    if not result:  # a result that came with the disconnect is still returned: it may hold the model
        raise ClientGone
    return result[0]


@dataclass
class Limits:
    max_prompt_tokens: int = 2048
    max_tokens: int = 512


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields we do not use (user, logprobs=false...)

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1
    seed: int | None = Field(None, **SEED_RANGE)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = [p.get("text", "") for p in self.content if p.get("type") == "text"]
        if len(parts) != len(self.content):
            raise ApiError(400, "only text content parts are supported")
        return "".join(parts)


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Request):
    prompt: str | list[str]


def generation_params(req: _Request, limits: Limits, default_max_tokens: int = 256) -> GenParams:
    if req.n != 1:
        raise ApiError(400, "only n=1 is supported", code="unsupported_n")
    wanted = req.max_completion_tokens or req.max_tokens or min(default_max_tokens, limits.max_tokens)
    if wanted > limits.max_tokens:
        raise ApiError(400, f"max_tokens {wanted} is over this server's limit of {limits.max_tokens}",
                       code="max_tokens_too_large")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop sequences")
    return GenParams(wanted, req.temperature, req.top_p, stops, req.seed)


def check_prompt(ids: list[int], limits: Limits) -> list[int]:
    if len(ids) > limits.max_prompt_tokens:
        raise ApiError(400, f"prompt is {len(ids)} tokens, over this server's limit of {limits.max_prompt_tokens}",
                       code="context_length_exceeded")
    return ids


def openai_router(pool: ModelPool, batcher: Batcher, gate: GenerationGate, limits: Limits) -> APIRouter:
    router = APIRouter(prefix="/v1")
    created = int(time.time())

    def known(name: str) -> str:
        if name not in pool.models:
            raise ApiError(404, f"model '{name}' not found; served: {', '.join(pool.models)}", code="model_not_found")
        return name

    @router.get("/models")
    def list_models() -> dict:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "domaintune"} for name in pool.models
        ]}

    @router.post("/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        name = known(req.model)
        params = generation_params(req, limits)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        try:
            ids = check_prompt(pool.chat_ids(name, messages), limits)
        except DomaintuneError as exc:
            raise ApiError(400, str(exc)) from None
        return await _answer(request, batcher, gate, name, ids, params, req.stream, chat=True)

    @router.post("/completions")
    async def completions(req: CompletionRequest, request: Request):
        name = known(req.model)
        params = generation_params(req, limits, default_max_tokens=16)  # OpenAI's default for completions
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise ApiError(400, "exactly one prompt per request is supported")
        ids = check_prompt(pool.text_ids(name, prompts[0]), limits)
        return await _answer(request, batcher, gate, name, ids, params, req.stream, chat=False)

    return router


async def _answer(request: Request, batcher: Batcher, gate: GenerationGate, name: str, ids: list[int],
                  params: GenParams, stream: bool, chat: bool):
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    ticket = gate.reserve()
    if not stream:
        async def generate(gone: threading.Event) -> Generation:
            job = batcher.submit([RowRequest(name, ids, params, cancel=gone)], on_end=ticket.release)
            await gate.wait_started(job)
            return (await job.results())[0]

        return _full_response(ident, name, await unless_client_leaves(request, generate), chat)
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()  # set when the client goes away, so its row stops at the next token
    row = RowRequest(name, ids, params, lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece), cancel)
    job = batcher.submit([row], on_end=ticket.release)
    try:
        # The batch is waited for before the response starts, so that a queue timeout can still answer 503.
        await unless_client_leaves(request, lambda _: gate.wait_started(job))
    except BaseException:
        cancel.set()
        raise
    events = _sse(job, pieces, ident, name, chat)

    async def finish() -> None:
        # Starlette leaves a stream it stopped (the client left) suspended, or never started it: stop the
        # row here; its place in the queue comes back when the row has ended.
        cancel.set()
        await events.aclose()

    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"},
                             background=BackgroundTask(finish))


def _full_response(ident: str, name: str, out: Generation, chat: bool) -> dict:
    usage = {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
             "total_tokens": out.prompt_tokens + out.completion_tokens}
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": out.text},
                  "finish_reason": out.finish_reason, "logprobs": None}
    else:
        choice = {"index": 0, "text": out.text, "finish_reason": out.finish_reason, "logprobs": None}
    return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": name, "choices": [choice], "usage": usage}


def _chunk(ident: str, name: str, chat: bool, piece: str | None, finish: str | None, first: bool = False) -> str:
    if chat:
        delta = {"role": "assistant", "content": ""} if first else ({"content": piece} if piece else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
    body = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": name, "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n"


async def _sse(job: Job, pieces: asyncio.Queue, ident: str, name: str, chat: bool) -> AsyncIterator[str]:
    """Server-sent events: the row's text pieces arrive from the decoding thread through `pieces`."""
    if chat:
        yield _chunk(ident, name, chat, None, None, first=True)
    results = asyncio.ensure_future(job.results())
    results.add_done_callback(lambda _: pieces.put_nowait(None))
    try:
        while (piece := await pieces.get()) is not None:
            yield _chunk(ident, name, chat, piece, None)
        # Pieces were queued before the row ended, so none is left behind the end marker.
        out = (await results)[0]
        yield _chunk(ident, name, chat, None, out.finish_reason)
        yield "data: [DONE]\n\n"
    finally:
        results.cancel()
