"""Pure text cleaning and hashing: no torch, no I/O, tested in milliseconds."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

from ftfy.badness import is_bad

_SPACES_AROUND_NEWLINE = re.compile(r"[^\S\n]*\n[^\S\n]*")
_HSPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# Control characters except tab/newline, plus zero-width characters and the BOM.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
# The same set for ASCII text, deleted with bytes.translate (C speed; most documents are ASCII).
_ASCII_INVISIBLE = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])

# Only tag-shaped text is removed (a letter right after `<`), so prose like "dose < 5 mg > 2 mg" survives.
# A regex rather than an HTML parser: review text holds fragments, not documents, and the stdlib
# parser is ~20x slower on the 100k-document benchmark. Script/style bodies and comments go whole.
_HTML_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_INLINE_TAGS = re.compile(
    r"</?(?:a|b|i|u|em|strong|span|font|small|sup|sub|mark|abbr|code)(?:\s[^<>]*)?/?>", re.IGNORECASE
)
_ANY_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)]", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # Korean: mobile 010-1234-5678, Seoul 02-123-4567, regions 031..064, internet 070, with +82 too
    r"(?:\+82[\s.-]?0?|0)(?:1[016789]|2|[3-6][1-5]|70)[\s.-]?\d{3,4}[\s.-]?\d{4}"
    # Korean nationwide numbers such as 1588-1234 (a hyphen is required: bare 8 digits are too common)
    r"|1[5-9]\d{2}-\d{4}"
    # international: +CC then 2-4 groups of digits
    r"|\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,4}"
    # North American (555) 123-4567 / 555-123-4567
    r"|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}"
    r")(?!\w)"
)


# Each kind of personal data: its pattern and the `data.clean` setting that masks it (order = bit order).
_PHONE_SHAPED = re.compile(r"[0-9+(][0-9 \n.()+-]{5,}[0-9]")
PII_KINDS = {"email": (_EMAIL, "mask_email"), "url": (_URL, "mask_url"), "phone": (_PHONE, "mask_phone")}


def pii_flags(text: str, kinds: list[str]) -> int:
    """Bit i set when `text` holds personal data of `kinds[i]` (for counting what is left unmasked).

    Each pattern runs only on text that could hold a match (an `@`; `://` or `www.`; a phone-shaped run
    of digits): the patterns alone cost ~100 us per review (their leading look-behind defeats the regex
    engine's fast scan), which would halve the filters' throughput. The phone gate takes runs of 7+
    characters of ASCII digits, spaces and `.()+-` (what clean_text leaves of other spaces): every real
    number; only the mask's loosest international shape (`+1 2 3`, under 7 digits) is not counted."""
    flags = 0
    for i, kind in enumerate(kinds):
        if kind == "email":
            candidate = "@" in text
        elif kind == "url":
            candidate = "://" in text or "www." in text.casefold()
        else:
            candidate = _PHONE_SHAPED.search(text) is not None
        if candidate and PII_KINDS[kind][0].search(text):
            flags |= 1 << i
    return flags


def strip_html_tags(text: str) -> str:
    text = _HTML_BLOCKS.sub(" ", text)
    text = _INLINE_TAGS.sub("", text)
    return _ANY_TAG.sub(" ", text)


def mask_pii(text: str, *, email: bool = False, url: bool = False, phone: bool = False) -> str:
    """Replace e-mail addresses, URLs and phone numbers with `[EMAIL]`, `[URL]`, `[PHONE]`."""
    if url:
        text = _URL.sub("[URL]", text)
    if email:
        text = _EMAIL.sub("[EMAIL]", text)
    if phone:
        text = _PHONE.sub("[PHONE]", text)
    return text


def clean_text(
    text: str,
    *,
    strip_html: bool = False,
    mask_email: bool = False,
    mask_url: bool = False,
    mask_phone: bool = False,
    keep_newlines: bool = False,
) -> str:
    """Strip tags (optional), unescape HTML entities, compose Unicode (NFC), drop invisible characters,
    mask personal data (optional), collapse whitespace (`keep_newlines`: keep line breaks and at most
    one blank line, which matters for documents, instructions and chat turns).

    Entities are unescaped until stable because scraped text is often escaped twice (`&amp;#039;`).
    Tags are stripped before unescaping so that an escaped `&lt;b&gt;` stays visible as text.
    """
    if strip_html and "<" in text:
        text = strip_html_tags(text)
    previous = None
    while previous != text and "&" in text:
        previous, text = text, html.unescape(text)
    if text.isascii():
        text = text.encode("ascii").translate(None, _ASCII_INVISIBLE).decode("ascii")
    else:
        text = _INVISIBLE.sub("", unicodedata.normalize("NFC", text))
    if mask_email or mask_url or mask_phone:
        text = mask_pii(text, email=mask_email, url=mask_url, phone=mask_phone)
    if keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _HSPACE.sub(" ", _SPACES_AROUND_NEWLINE.sub("\n", text))
        return _BLANK_LINES.sub("\n\n", text).strip()
    return " ".join(text.split())


def looks_garbled(text: str) -> bool:
    """Mojibake: text decoded with the wrong codec (cp949 Korean read as Latin-1 becomes `ÀÌ Á¦Ç°`).
    ftfy's detector, tuned to flag such sequences and not accented prose; the text is only counted,
    never rewritten, since the fix is reading the file with the right encoding."""
    if text.isascii():
        return False
    return is_bad(text)


def normalized_key(text: str) -> str:
    """Hash of the text as a duplicate detector sees it: case-folded, whitespace collapsed."""
    folded = " ".join(text.casefold().split())
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()
