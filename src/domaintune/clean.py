"""Pure text cleaning and hashing: no torch, no I/O, tested in milliseconds."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# Control characters except tab/newline, plus zero-width characters and the BOM.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")


def clean_text(text: str) -> str:
    """Unescape HTML entities, compose Unicode (NFC), drop invisible characters, collapse whitespace.

    Entities are unescaped until stable because scraped text is often escaped twice (`&amp;#039;`).
    """
    previous = None
    while previous != text:
        previous, text = text, html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def normalized_key(text: str) -> str:
    """Hash of the text as a duplicate detector sees it: case-folded, whitespace collapsed."""
    folded = _WHITESPACE.sub(" ", text.casefold()).strip()
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()
