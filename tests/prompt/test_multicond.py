"""split_and: composable-diffusion parts and weights, as A1111's get_multicond_prompt_list."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brushwork.prompt import split_and

CASES = [
    ("a cat", [("a cat", 1.0)]),
    ("", [("", 1.0)]),
    ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
    ("a cat:1.2 AND a dog : 0.5 ", [("a cat", 1.2), (" a dog", 0.5)]),
    ("a:-1 AND b:+2", [("a", -1.0), (" b", 2.0)]),
    ("a:1. AND b:.5 AND c:7", [("a", 1.0), (" b", 0.5), (" c", 7.0)]),
    # AND must be a whole word in capitals
    ("a and b", [("a and b", 1.0)]),
    ("BRANDAND", [("BRANDAND", 1.0)]),
    ("a_AND_b", [("a_AND_b", 1.0)]),
    ("ANDa AND", [("ANDa", 1.0), ("", 1.0)]),
    # not a weight: stays in the text (trailing whitespace still goes)
    ("a:1.2.3", [("a:1.2.3", 1.0)]),
    ("a:.", [("a:.", 1.0)]),
    ("a: +-1", [("a: +-1", 1.0)]),
    ("a:1e3", [("a:1e3", 1.0)]),
    ("a:x  ", [("a:x", 1.0)]),
    ("(x:1.2)", [("(x:1.2)", 1.0)]),
    # a trailing ratio reads as a weight in v1.10 (the dev branch keeps "16:9" as text)
    ("aspect 16:9", [("aspect 16", 9.0)]),
    ("  leading", [("  leading", 1.0)]),
    ("a\n:\n2\n", [("a", 2.0)]),
]


@pytest.mark.parametrize(("prompt", "expected"), CASES)
def test_parts_and_weights(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(prompt) == expected


def test_overflowing_weight_is_text_so_weights_stay_finite() -> None:
    huge = "9" * 400
    assert split_and(f"a:{huge}") == [(f"a:{huge}", 1.0)]


def test_long_whitespace_is_linear() -> None:
    assert split_and("a" + " " * 100_000 + ":" + " " * 100_000 + "2") == [("a", 2.0)]


@settings(max_examples=300, deadline=None)
@given(prompt=st.text(alphabet=st.sampled_from("aAND :.1-+ \n"), max_size=40) | st.text())
def test_any_prompt_splits_into_as_many_parts_as_and_words(prompt: str) -> None:
    parts = split_and(prompt)
    assert len(parts) >= 1
    assert all(math.isfinite(weight) for _, weight in parts)
    assert all(text == text.rstrip() for text, _ in parts)
