"""The review page's API: blind A/B comparisons of two served models, votes, and win rates.

The browser never learns which model wrote which answer until its vote is stored; the server draws the
left/right order and records it with the comparison. Prompts come from the served runs' prepared test
split (rendered with the run's own instruction, as in training) or are typed by the reviewer.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from .errors import DomaintuneError
from .feedback_store import AlreadyVoted, Comparison, FeedbackStore, UnknownComparison
from .prepare import read_split
from .render import truncate_tokens
from .serve_guard import ApiError, GenerationGate
from .serve_models import GenParams, ModelPool, ServedModel
from .serve_openai import Limits, check_prompt, unless_client_leaves

WEB = Path(__file__).parent / "web"


class ComparisonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, description="typed prompt; empty: draw one from the test split")
    models: list[str] | None = Field(None, min_length=2, max_length=2, description="the two models; unset: random")
    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)


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


class TestPrompts:
    """The prepared test split of the first served model that has one, read once."""

    TEMPLATE_ALLOWANCE = 32  # tokens for the chat template and a system message around the user turn

    def __init__(self, pool: ModelPool, max_prompt_tokens: int):
        self.pool, self.max_prompt_tokens = pool, max_prompt_tokens
        self._rows: list[dict] = []
        self._served: ServedModel | None = None
        self._read = False

    def count(self) -> int:
        self._load()
        return len(self._rows)

    def draw(self, rng: random.Random) -> tuple[str, str]:
        """(row id, user turn): the run's instruction and the document, cut to fit the prompt limit."""
        self._load()
        row = rng.choice(self._rows)
        instruction = self._served.prompt.instruction
        tokenizer = self._served.tokenizer
        budget = self.max_prompt_tokens - len(tokenizer(instruction)["input_ids"]) - self.TEMPLATE_ALLOWANCE
        # The same user turn as training and evaluation build (render._messages).
        return str(row["id"]), f"{instruction}\n\n{truncate_tokens(tokenizer, row['text'], max(budget, 1))}"

    def _load(self) -> None:
        if self._read:
            return
        self._read = True
        for served in self.pool.models.values():
            try:
                self._rows = read_split(served.prepared_dir, "test")
            except DomaintuneError:
                continue
            self._served = served
            break


def blind_view(comparison: Comparison) -> dict:
    view = {"id": comparison.id, "prompt": comparison.prompt, "source": comparison.source,
            "answers": {"A": comparison.left_answer, "B": comparison.right_answer}, "voted": comparison.voted}
    if comparison.voted:  # once judged, the reviewer may see who was who
        view["models"] = {"A": comparison.left_model, "B": comparison.right_model}
    return view


def review_router(pool: ModelPool, gate: GenerationGate, store: FeedbackStore, limits: Limits,
                  rng: random.Random | None = None) -> APIRouter:
    router = APIRouter()
    rng = rng or random.SystemRandom()
    prompts = TestPrompts(pool, limits.max_prompt_tokens)

    @router.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/review")

    @router.get("/review", include_in_schema=False)
    def review_page():
        return FileResponse(WEB / "review.html", media_type="text/html")

    @router.get("/assets/common.js", include_in_schema=False)
    def common_js():
        return FileResponse(WEB / "common.js", media_type="text/javascript")

    @router.get("/results", include_in_schema=False)
    def results_page():
        return FileResponse(WEB / "results.html", media_type="text/html")

    @router.get("/review/api/models")
    def models() -> dict:
        return {"models": list(pool.models), "test_prompts": prompts.count()}

    @router.post("/review/api/comparisons")
    async def new_comparison(req: ComparisonRequest, request: Request) -> dict:
        names = _pick_models(req.models, list(pool.models), rng)
        if req.max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens {req.max_tokens} is over this server's limit of {limits.max_tokens}")
        if req.prompt and req.prompt.strip():
            source, source_id, prompt = "typed", None, req.prompt.strip()
        else:
            if not prompts.count():
                raise ApiError(400, "no prepared test split next to the served runs: type a prompt")
            source = "test"
            source_id, prompt = prompts.draw(rng)
        params = GenParams(req.max_tokens, req.temperature, req.top_p)
        system = pool.get(names[0]).prompt.system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = {name: check_prompt(pool.chat_ids(name, messages), limits) for name in names}
        ticket = gate.reserve()

        async def generate(gone) -> dict[str, str]:
            # A reviewer who leaves stops the comparison: the running answer at its next token, the other unstarted.
            async with gate.turn(ticket):
                return {name: (await anyio.to_thread.run_sync(pool.generate, name, ids[name], params, None, gone)).text
                        for name in names}

        answers = await unless_client_leaves(request, generate)
        left, right = names if rng.random() < 0.5 else names[::-1]
        comparison = await anyio.to_thread.run_sync(
            lambda: store.add_comparison(prompt, source, source_id, left, right, answers[left], answers[right],
                                         {"max_tokens": req.max_tokens, "temperature": req.temperature,
                                          "top_p": req.top_p}))
        return blind_view(comparison)

    @router.get("/review/api/comparisons/{comparison_id}")
    def get_comparison(comparison_id: str) -> dict:
        try:
            return blind_view(store.get_comparison(comparison_id))
        except UnknownComparison:
            raise ApiError(404, f"unknown comparison '{comparison_id}'", code="unknown_comparison") from None

    @router.post("/review/api/votes")
    def vote(req: VoteRequest) -> dict:
        if set(req.ratings) - {"A", "B"}:
            raise ApiError(400, "ratings are keyed by 'A' and 'B'")
        ratings = {}
        for side, column in (("A", "left"), ("B", "right")):
            rating = req.ratings.get(side) or Rating()
            ratings[f"{column}_quality"], ratings[f"{column}_domain_fit"] = rating.quality, rating.domain_fit
        try:
            vote_id = store.add_vote(req.comparison_id, req.choice, ratings, req.comment)
        except UnknownComparison:
            raise ApiError(404, f"unknown comparison '{req.comparison_id}'", code="unknown_comparison") from None
        except AlreadyVoted:
            raise ApiError(409, "this comparison already has a vote", code="already_voted") from None
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
