import unicodedata

import pytest

from domaintune.clean import clean_text, normalized_key


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("I didn&#039;t like it", "I didn't like it"),
        ("double &amp;#039;escaped&amp;#039;", "double 'escaped'"),
        ('"quotes are content" he said', '"quotes are content" he said'),
        ("  lots \n\n of\t space  ", "lots of space"),
        ("zero\u200bwidth\ufeff", "zerowidth"),
        ("emoji 😀 and 한국어 stay", "emoji 😀 and 한국어 stay"),
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
