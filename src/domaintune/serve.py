"""`domaintune serve RUN... [--base]`: an OpenAI-compatible API plus the blind A/B review page.

    create_app(pool, settings)   the FastAPI app (tests drive it with TestClient)
    run_serve(cfg, runs, ...)    loads the models once and runs uvicorn

The server binds 127.0.0.1 unless told otherwise, and refuses a non-loopback bind without an API key.
No endpoint takes a file path: the models, the review prompts, the reviewer list and the database are
fixed at start-up.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .config import Config
from .errors import DomaintuneError
from .feedback_store import FeedbackStore, default_db_path
from .review import ReviewSampling, review_router
from .reviewers import Reviewers
from .serve_guard import ApiError, GenerationGate, GuardMiddleware, check_bind
from .serve_models import ModelPool
from .serve_openai import Limits, openai_router

API_KEY_ENV = "DOMAINTUNE_API_KEY"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    db_path: str | Path | None = None  # default: feedback.sqlite in the folder holding the first run
    max_body_bytes: int = 256 * 1024
    max_prompt_tokens: int = 2048
    max_tokens: int = 512
    max_waiting: int = 32  # requests that may queue for the model; more get 429
    seed: int | None = None  # fixes the review page's draws (tests); unset: system randomness
    reviewers_file: str | Path | None = None  # 'NAME TOKEN' lines; unset: a cookie token per browser
    review_sampling: ReviewSampling = field(default_factory=ReviewSampling)  # the same for every comparison


def create_app(pool: ModelPool, settings: ServeSettings, runs: list[str | Path] | None = None) -> FastAPI:
    app = FastAPI(title="domaintune serve", docs_url=None, redoc_url=None, openapi_url=None)
    limits = Limits(settings.max_prompt_tokens, settings.max_tokens)
    gate = GenerationGate(settings.max_waiting)
    store = FeedbackStore(settings.db_path or default_db_path(runs or []))
    rng = random.Random(settings.seed) if settings.seed is not None else None
    app.state.pool, app.state.store, app.state.gate = pool, store, gate

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        headers = {"retry-after": "1"} if exc.status == 429 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

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

    app.include_router(openai_router(pool, gate, limits))
    reviewers = Reviewers.from_file(settings.reviewers_file) if settings.reviewers_file else Reviewers()
    app.include_router(review_router(pool, gate, store, limits, rng, reviewers, settings.review_sampling))
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    return app


def run_serve(cfg: Config, runs: list[str], include_base: bool, settings: ServeSettings) -> None:
    """Load the base model once with every run's adapter, then serve until interrupted."""
    import uvicorn

    settings.api_key = settings.api_key or os.environ.get(API_KEY_ENV) or None
    check_bind(settings.host, settings.api_key)
    pool = ModelPool(runs, include_base, cfg)
    app = create_app(pool, settings, runs)
    print(f"serving {', '.join(pool.models)} on http://{settings.host}:{settings.port} "
          f"(review page: /review, votes: {app.state.store.path})", flush=True)
    # uvicorn's own connection cap answers 503; it is set far above the 429 queue limit so that
    # it only guards against runaway connection counts, never against ordinary load.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", limit_concurrency=1024)
