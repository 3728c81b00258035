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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import anyio
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from .errors import DomaintuneError
from .serve_guard import ApiError, GenerationGate, Ticket
from .serve_models import Generation, GenParams, ModelPool


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
    seed: int | None = None


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


def openai_router(pool: ModelPool, gate: GenerationGate, limits: Limits) -> APIRouter:
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
    async def chat(req: ChatRequest):
        name = known(req.model)
        params = generation_params(req, limits)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        try:
            ids = check_prompt(pool.chat_ids(name, messages), limits)
        except DomaintuneError as exc:
            raise ApiError(400, str(exc)) from None
        return await _answer(pool, gate, name, ids, params, req.stream, chat=True)

    @router.post("/completions")
    async def completions(req: CompletionRequest):
        name = known(req.model)
        params = generation_params(req, limits, default_max_tokens=16)  # OpenAI's default for completions
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise ApiError(400, "exactly one prompt per request is supported")
        ids = check_prompt(pool.text_ids(name, prompts[0]), limits)
        return await _answer(pool, gate, name, ids, params, req.stream, chat=False)

    return router


async def _answer(pool: ModelPool, gate: GenerationGate, name: str, ids: list[int], params: GenParams,
                  stream: bool, chat: bool):
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    ticket = gate.reserve()
    if not stream:
        async with gate.turn(ticket):
            out = await anyio.to_thread.run_sync(pool.generate, name, ids, params)
        return _full_response(ident, name, out, chat)
    # The background task gives the place back even if the client leaves before the stream starts.
    return StreamingResponse(_sse(pool, gate, ticket, ident, name, ids, params, chat),
                             media_type="text/event-stream", headers={"cache-control": "no-cache"},
                             background=BackgroundTask(ticket.release))


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


async def _sse(pool: ModelPool, gate: GenerationGate, ticket: Ticket, ident: str, name: str, ids: list[int],
               params: GenParams, chat: bool) -> AsyncIterator[str]:
    """Server-sent events: the generation runs in a worker thread and hands pieces over through a queue."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()  # set when the client goes away, so the model stops at the next token
    worker = None
    async with gate.turn(ticket):
        if chat:
            yield _chunk(ident, name, chat, None, None, first=True)
        worker = asyncio.ensure_future(anyio.to_thread.run_sync(
            lambda: pool.generate(name, ids, params, lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p),
                                  cancel)))
        worker.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
        try:
            while (piece := await pieces.get()) is not None:
                yield _chunk(ident, name, chat, piece, None)
            out = await worker
            yield _chunk(ident, name, chat, None, out.finish_reason)
            yield "data: [DONE]\n\n"
        finally:
            cancel.set()
            if worker is not None:
                # Keep the turn until the model is free again, even when the client left mid-stream.
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([worker])
