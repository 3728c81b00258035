import unicodedata

import pytest

from domaintune.data.clean import clean_text, normalized_key


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("I didn&#039;t like it", "I didn't like it"),
        ("double &amp;#039;escaped&amp;#039;", "double 'escaped'"),
        ('"quotes are content" he said', '"quotes are content" he said'),
        ("  lots \n\n of\t space  ", "lots of space"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("emoji 😀 and 한국어 stay", "emoji 😀 and 한국어 stay"),
        ("中文 日本語 &amp; ㈜", "中文 日本語 & ㈜"),
    ],
)
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_korean_jamo_compose_to_syllables():
    decomposed = unicodedata.normalize("NFD", "좋아요")
    assert len(decomposed) > 3
    assert clean_text(decomposed) == "좋아요"


def test_normalized_key_ignores_case_and_spacing():
    assert normalized_key("Great  Drug") == normalized_key("great drug")
    assert normalized_key("great drug") != normalized_key("great drugs")


def test_html_tags_are_stripped_but_comparisons_survive():
    raw = "<p>Took <b>10</b>mg</p><script>x()</script><!-- c -->dose < 5 and > 2<br/>ok"
    assert clean_text(raw, strip_html=True) == "Took 10mg dose < 5 and > 2 ok"
    assert clean_text("&lt;b&gt; shown", strip_html=True) == "<b> shown", "escaped tags are content"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("mail kim.minsu@example.co.kr now", "mail [EMAIL] now"),
        ("see https://example.com/a?b=1. and www.naver.com", "see [URL]. and [URL]"),
        ("폰 010-1234-5678 로 연락", "폰 [PHONE] 로 연락"),
        ("서울 02-123-4567, 국제 +82 10 1234 5678", "서울 [PHONE], 국제 [PHONE]"),
        ("대표번호 1588-1234 입니다", "대표번호 [PHONE] 입니다"),
        ("call (555) 123-4567 or +44 20 7946 0958", "call [PHONE] or [PHONE]"),
        ("took 20 mg in 2019 for 3 weeks", "took 20 mg in 2019 for 3 weeks"),
    ],
)
def test_masking(raw, expected):
    assert clean_text(raw, mask_email=True, mask_url=True, mask_phone=True) == expected


def test_keep_newlines_limits_blank_lines():
    assert clean_text("a  b \r\n\n\n\n c\t", keep_newlines=True) == "a b\n\nc"
