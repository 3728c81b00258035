"""Who is voting on the review page: every ballot carries a reviewer token, and the vote records whose.

Two ways, chosen when `serve` starts:

- `--reviewers FILE`, one `NAME TOKEN` per line: only these tokens may ask for comparisons or vote, and
  votes record NAME. The page asks for the token once and sends it as the `X-Reviewer-Token` header
  (API clients do the same). This is what makes votes trustworthy on a server others can reach.
- no list: `serve` gives each browser a random token in an HttpOnly cookie when it opens /review, and
  votes record a digest of it (never the token, so an export cannot be used to vote as someone else).
  One browser then gets one ballot per prompt and model pair, but a script can fetch fresh cookies:
  the per-reviewer counts of `feedback export` show it, and a list prevents it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

from fastapi import Request, Response

from domaintune.core.errors import DomaintuneError
from domaintune.serving.guard import ApiError

COOKIE = "domaintune_reviewer"
HEADER = "x-reviewer-token"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
NAME = re.compile(r"^[\w.@-]{1,64}$")
COOKIE_SECONDS = 365 * 24 * 3600
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(18))'"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class Reviewers:
    def __init__(self, listed: dict[str, str] | None = None):
        # Looked up by digest: a dict probe on the token itself would leak timing about its prefix.
        self.listed = {_digest(token): name for token, name in listed.items()} if listed is not None else None

    @classmethod
    def from_file(cls, path: str | Path) -> Reviewers:
        path = Path(path)
        if not path.is_file():
            raise DomaintuneError(f"--reviewers: {path} not found (one 'NAME TOKEN' per line)")
        listed: dict[str, str] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            where = f"{path}:{number}"
            if len(fields) != 2 or not NAME.match(fields[0]):
                raise DomaintuneError(f"{where}: expected 'NAME TOKEN' (NAME: letters, digits, . _ @ -)")
            name, token = fields
            if not TOKEN.match(token):
                raise DomaintuneError(f"{where}: the token must be 16-128 letters, digits, '-' or '_' "
                                      f"(make one with {MAKE_TOKEN})")
            if token in listed or name in listed.values():
                raise DomaintuneError(f"{where}: reviewer '{name}' or its token is listed twice")
            listed[token] = name
        if not listed:
            raise DomaintuneError(f"{path}: no reviewers listed (one 'NAME TOKEN' per line)")
        return cls(listed)

    def identify(self, request: Request) -> str:
        """The reviewer recorded with a comparison or vote; 401 without a valid token."""
        token = request.headers.get(HEADER) or request.cookies.get(COOKIE) or ""
        if self.listed is not None:
            name = self.listed.get(_digest(token)) if TOKEN.match(token) else None
            if name is None:
                raise ApiError(401, "missing or unknown reviewer token (send it as 'X-Reviewer-Token')",
                               "authentication_error", "invalid_reviewer_token")
            return name
        if not TOKEN.match(token):
            raise ApiError(401, "no reviewer token: open /review in a browser (it sets one) or send "
                           "'X-Reviewer-Token'", "authentication_error", "reviewer_token_required")
        return f"browser-{_digest(token)[:16]}"

    def issue(self, request: Request, response: Response) -> None:
        """Without a list, give a browser that has no token one (on the page, never on a ballot)."""
        if self.listed is None and not TOKEN.match(request.cookies.get(COOKIE) or ""):
            # SameSite=Strict: another site's page cannot make this browser vote.
            response.set_cookie(COOKIE, secrets.token_urlsafe(24), max_age=COOKIE_SECONDS, httponly=True,
                                samesite="strict")
