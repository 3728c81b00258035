"""The review page's API: blind A/B comparisons of two served models, votes, and win rates.

The browser never learns which model wrote which answer until its vote is stored; the server draws the
left/right order and records it with the comparison. Prompts come from the served runs' prepared review
split, else val, never test (review_prompts.py), or are typed by the reviewer. Sampling is the server's
(`ReviewSampling`), every ballot carries a reviewer token (reviewers.py), and a reviewer votes once per
prompt and model pair.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from domaintune.serving.batcher import Batcher, RowRequest
from domaintune.serving.feedback_store import (
    AlreadyVoted,
    Comparison,
    FeedbackStore,
    NotYourComparison,
    UnknownComparison,
)
from domaintune.serving.guard import ApiError, GenerationGate
from domaintune.serving.openai_api import Limits, check_prompt, unless_client_leaves
from domaintune.serving.pool import GenParams, ModelPool
from domaintune.serving.review_prompts import ReviewPrompts
from domaintune.serving.reviewers import Reviewers

WEB = Path(__file__).parent / "web"


@dataclass
class ReviewSampling:
    """How both answers of every comparison are sampled: fixed by the server, not the client. A client
    that chose greedy decoding and one token would get the same two answers for a prompt every time,
    know after one vote which side is which, and could vote for one model at will."""

    max_tokens: int = 128  # capped at the server's --max-tokens
    temperature: float = 0.7
    top_p: float = 0.95


class ComparisonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # sampling fields are refused: the server fixes them
    prompt: str | None = Field(None, description="typed prompt; empty: draw one from the review/val split")
    models: list[str] | None = Field(None, min_length=2, max_length=2, description="the two models; unset: random")


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quality: int | None = Field(None, ge=1, le=5)
    domain_fit: int | None = Field(None, ge=1, le=5)


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comparison_id: str = Field(min_length=1, max_length=64)
    choice: str = Field(pattern="^(A|B|tie)$")
    ratings: dict[str, Rating] = Field(default_factory=dict)
    comment: str | None = Field(None, max_length=4000)


def blind_view(comparison: Comparison) -> dict:
    view = {"id": comparison.id, "prompt": comparison.prompt, "source": comparison.source,
            "answers": {"A": comparison.left_answer, "B": comparison.right_answer}, "voted": comparison.voted}
    if comparison.voted:  # once judged, the reviewer may see who was who
        view["models"] = {"A": comparison.left_model, "B": comparison.right_model}
    return view


def review_router(pool: ModelPool, batcher: Batcher, gate: GenerationGate, store: FeedbackStore, limits: Limits,
                  rng: random.Random | None = None, reviewers: Reviewers | None = None,
                  sampling: ReviewSampling | None = None) -> APIRouter:
    router = APIRouter()
    rng = rng or random.SystemRandom()
    reviewers = reviewers or Reviewers()
    sampling = sampling or ReviewSampling()
    sampling = replace(sampling, max_tokens=min(sampling.max_tokens, limits.max_tokens))
    prompts = ReviewPrompts(pool, limits.max_prompt_tokens)

    @router.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/review")

    @router.get("/review", include_in_schema=False)
    def review_page(request: Request):
        response = FileResponse(WEB / "review.html", media_type="text/html")
        reviewers.issue(request, response)
        return response

    @router.get("/assets/common.js", include_in_schema=False)
    def common_js():
        return FileResponse(WEB / "common.js", media_type="text/javascript")

    @router.get("/results", include_in_schema=False)
    def results_page():
        return FileResponse(WEB / "results.html", media_type="text/html")

    @router.get("/review/api/models")
    def models() -> dict:
        return {"models": list(pool.models), "review_prompts": prompts.count(), "prompt_split": prompts.split,
                "sampling": asdict(sampling), "reviewer_list": reviewers.listed is not None}

    @router.post("/review/api/comparisons")
    async def new_comparison(req: ComparisonRequest, request: Request) -> dict:
        reviewer = reviewers.identify(request)
        names = _pick_models(req.models, list(pool.models), rng)
        if req.prompt and req.prompt.strip():
            source, source_id, prompt = "typed", None, req.prompt.strip()
            if await anyio.to_thread.run_sync(store.has_voted, reviewer, prompt, names):
                raise ApiError(409, f"you have voted on this prompt for {names[0]} and {names[1]} already",
                               code="already_voted")
        else:
            if not prompts.count():
                raise ApiError(400, "no review prompts: the served runs' prepared data has no review split and "
                               "an empty val split (set data.review_fraction or data.val_fraction); type a prompt")
            voted = await anyio.to_thread.run_sync(store.voted_sources, reviewer, names, prompts.split)
            drawn = prompts.draw(rng, voted)
            if drawn is None:
                raise ApiError(409, f"you have voted on every {prompts.split} prompt for {names[0]} and "
                               f"{names[1]}; type a prompt or pick another pair", code="no_prompts_left")
            source = prompts.split
            source_id, prompt = drawn
        params = GenParams(sampling.max_tokens, sampling.temperature, sampling.top_p)
        system = pool.get(names[0]).prompt.system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = {name: check_prompt(pool.chat_ids(name, messages), limits) for name in names}
        ticket = gate.reserve()

        async def generate(gone) -> dict[str, str]:
            # Both answers are queued at once, so they share a batch where their adapters allow. A reviewer
            # who leaves stops the comparison: both answers at their next token, or before they start.
            job = batcher.submit([RowRequest(name, ids[name], params, cancel=gone) for name in names],
                                 on_end=ticket.release)
            await gate.wait_started(job)
            return {name: out.text for name, out in zip(names, await job.results(), strict=True)}

        answers = await unless_client_leaves(request, generate)
        left, right = names if rng.random() < 0.5 else names[::-1]
        comparison = await anyio.to_thread.run_sync(
            lambda: store.add_comparison(prompt, source, source_id, left, right, answers[left], answers[right],
                                         asdict(sampling), reviewer=reviewer))
        return blind_view(comparison)

    @router.get("/review/api/comparisons/{comparison_id}")
    def get_comparison(comparison_id: str) -> dict:
        try:
            return blind_view(store.get_comparison(comparison_id))
        except UnknownComparison:
            raise ApiError(404, f"unknown comparison '{comparison_id}'", code="unknown_comparison") from None

    @router.post("/review/api/votes")
    def vote(req: VoteRequest, request: Request) -> dict:
        reviewer = reviewers.identify(request)
        if set(req.ratings) - {"A", "B"}:
            raise ApiError(400, "ratings are keyed by 'A' and 'B'")
        ratings = {}
        for side, column in (("A", "left"), ("B", "right")):
            rating = req.ratings.get(side) or Rating()
            ratings[f"{column}_quality"], ratings[f"{column}_domain_fit"] = rating.quality, rating.domain_fit
        try:
            vote_id = store.add_vote(req.comparison_id, req.choice, ratings, req.comment, reviewer=reviewer)
        except UnknownComparison:
            raise ApiError(404, f"unknown comparison '{req.comparison_id}'", code="unknown_comparison") from None
        except NotYourComparison:
            raise ApiError(403, "this comparison was made for another reviewer", code="not_your_comparison") from None
        except AlreadyVoted:
            raise ApiError(409, "already voted: this comparison, or this prompt and model pair by you",
                           code="already_voted") from None
        comparison = store.get_comparison(req.comparison_id)
        return {"vote_id": vote_id, "models": {"A": comparison.left_model, "B": comparison.right_model}}

    @router.get("/review/api/results")
    def results() -> dict:
        return {"pairs": store.pair_results()}

    return router


def _pick_models(wanted: list[str] | None, served: list[str], rng: random.Random) -> list[str]:
    if wanted is None:
        if len(served) < 2:
            raise ApiError(400, "a comparison needs two served models: serve two runs, or a run and --base")
        return rng.sample(served, 2)
    unknown = [name for name in wanted if name not in served]
    if unknown:
        raise ApiError(404, f"model '{unknown[0]}' not found; served: {', '.join(served)}", code="model_not_found")
    if wanted[0] == wanted[1]:
        raise ApiError(400, "compare two different models")
    return list(wanted)
