"""`domaintune serve RUN... [--base]`: an OpenAI-compatible API plus the blind A/B review page.

    create_app(pool, settings)   the FastAPI app (tests drive it with TestClient)
    run_serve(cfg, runs, ...)    loads the models once and runs uvicorn

The server binds 127.0.0.1 unless told otherwise, and refuses a non-loopback bind without an API key;
without a key it also answers only requests whose Host is a loopback name. No endpoint takes a file
path: the models, the review prompts, the reviewer list and the database are fixed at start-up.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from domaintune.core.errors import DomaintuneError
from domaintune.core.process import config_threads
from domaintune.core.schema import Config, Settings
from domaintune.serving.batcher import Batcher
from domaintune.serving.feedback_store import FeedbackStore, default_db_path
from domaintune.serving.guard import (
    ApiError,
    ClientCapMiddleware,
    GenerationGate,
    GuardMiddleware,
    allowed_hosts,
    check_bind,
)
from domaintune.serving.openai_api import ClientGone, Limits, openai_router
from domaintune.serving.pool import ModelPool
from domaintune.serving.review import ReviewSampling, review_router
from domaintune.serving.reviewers import Reviewers

API_KEY_ENV = "DOMAINTUNE_API_KEY"


class ServeSettings(Settings):
    """`domaintune serve`'s flags (the config's keys come from `-c` as for every verb)."""

    host: str = Field("127.0.0.1", description="Address to bind; a non-loopback one needs an API key.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port.")
    api_key: str | None = Field(None, description="Bearer token clients must send; unset: none (loopback only).")
    db_path: str | Path | None = Field(None, description="Votes database; unset: feedback.sqlite beside the first run.")
    max_body_bytes: int = Field(256 * 1024, ge=1, description="Largest request body.")
    max_prompt_tokens: int = Field(2048, ge=1, description="Longest prompt, in tokens.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask.")
    max_waiting: int = Field(32, ge=0, description="Requests that may queue for the model; more get 429.")
    queue_timeout: float = Field(120.0, gt=0, description="Seconds a request may wait for its batch to start; "
                                 "then 503.")
    max_batch_size: int = Field(8, ge=1, description="Most requests decoded together in one batch; 1: one at a time.")
    batch_window: float = Field(0.02, ge=0, le=10, description="Seconds a batch waits, from its oldest request's "
                                "arrival, for more requests to decode with it.")
    max_per_client: int = Field(16, ge=1, description="Requests in progress per client address; more get 429.")
    body_timeout: float = Field(30.0, gt=0, description="Seconds to send a request body; then 408.")
    head_timeout: float = Field(10.0, gt=0, description="Seconds to send a request's headers; then the "
                                "connection is closed.")
    seed: int | None = Field(None, description="Fixes the review page's draws (tests); unset: system randomness.")
    reviewers_file: str | Path | None = Field(None, description="'NAME TOKEN' lines; unset: a cookie token per "
                                              "browser.")
    review_sampling: ReviewSampling = Field(default_factory=ReviewSampling,
                                            description="How every review comparison is sampled (the server's).")


def create_app(pool: ModelPool, settings: ServeSettings, runs: list[str | Path] | None = None) -> FastAPI:
    app = FastAPI(title="domaintune serve", docs_url=None, redoc_url=None, openapi_url=None)
    limits = Limits(settings.max_prompt_tokens, settings.max_tokens)
    gate = GenerationGate(settings.max_waiting, settings.queue_timeout)
    batcher = Batcher(pool, settings.max_batch_size, settings.batch_window)
    store = FeedbackStore(settings.db_path or default_db_path(runs or []))
    rng = random.Random(settings.seed) if settings.seed is not None else None
    app.state.pool, app.state.store, app.state.gate, app.state.batcher = pool, store, gate, batcher

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(ClientGone)
    async def client_gone(_: Request, __: ClientGone):
        return Response(status_code=499)  # nginx's "client closed request"; nobody is left to read it

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse(ApiError(400, f"{where}: {first['msg']}").body(), status_code=400)

    @app.exception_handler(DomaintuneError)
    async def user_error(_: Request, exc: DomaintuneError):
        return JSONResponse(ApiError(400, str(exc)).body(), status_code=400)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "models": list(pool.models)}

    app.include_router(openai_router(pool, batcher, gate, limits))
    reviewers = Reviewers.from_file(settings.reviewers_file) if settings.reviewers_file else Reviewers()
    app.include_router(review_router(pool, batcher, gate, store, limits, rng, reviewers, settings.review_sampling))
    # Added innermost first: the Host check runs first, then the per-client cap, then key and body.
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                       body_timeout=settings.body_timeout)
    app.add_middleware(ClientCapMiddleware, max_per_client=settings.max_per_client)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings.host, settings.api_key))
    return app


@config_threads  # on a busy CPU one thread can be several times faster than all
def run_serve(cfg: Config, runs: list[str], include_base: bool, settings: ServeSettings) -> None:
    """Load the base model once with every run's adapter, then serve until interrupted."""
    import uvicorn

    from domaintune.serving.http_server import uvicorn_config

    settings.api_key = settings.api_key or os.environ.get(API_KEY_ENV) or None
    check_bind(settings.host, settings.api_key)
    pool = ModelPool(runs, include_base, cfg)
    app = create_app(pool, settings, runs)
    print(f"serving {', '.join(pool.models)} on http://{settings.host}:{settings.port} "
          f"(review page: /review, votes: {app.state.store.path})", flush=True)
    uvicorn.Server(uvicorn_config(app, settings.host, settings.port, settings.head_timeout)).run()
