"""parse_attention: A1111's emphasis weights, float for float.

Expected values are A1111 v1.10's documented ``parse_prompt_attention`` examples and its
behaviour on edge cases (same floats: the multiplications happen in A1111's order).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brushwork.prompt import parse_attention

Runs = list[tuple[str, float]]
DOWN = 0.9090909090909091  # 1 / 1.1

DOCUMENTED = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), DOCUMENTED)
def test_documented_examples(text: str, expected: Runs) -> None:
    assert parse_attention(text) == expected


WEIGHTS = [
    ("[x]", [("x", DOWN)]),
    ("((x))", [("x", 1.2100000000000002)]),
    ("[[x]]", [("x", 0.8264462809917354)]),
    ("(x:1.3)", [("x", 1.3)]),
    ("(x: 1.3 )", [("x", 1.3)]),
    ("(x:+.5)", [("x", 0.5)]),
    ("(x:-1)", [("x", -1.0)]),
    ("(x:0)", [("x", 0.0)]),
    ("((a)", [("a", 1.2100000000000002)]),
    ("(a))", [("a", 1.1), (")", 1.0)]),
    ("(a)(b:1.1)", [("ab", 1.1)]),
    # round and square brackets nest independently and may cross
    ("(a [b) c]", [("a ", 1.1), ("b", 1.0), (" c", DOWN)]),
    ("[a (b] c)", [("a ", DOWN), ("b", 1.0), (" c", 1.1)]),
    ("(a[b)c]d", [("a", 1.1), ("b", 1.0), ("c", DOWN), ("d", 1.0)]),
    # square brackets never take a weight: this is prompt editing, read earlier
    ("[a:b:3]", [("a:b:3", DOWN)]),
]


@pytest.mark.parametrize(("text", "expected"), WEIGHTS)
def test_weights(text: str, expected: Runs) -> None:
    assert parse_attention(text) == expected


LITERALS = [
    ("a:1.2)", [("a:1.2)", 1.0)]),
    ("x)]", [("x)]", 1.0)]),
    ("a:b", [("a:b", 1.0)]),
    ("(a:b)", [("a:b", 1.1)]),
    ("\\\\", [("\\", 1.0)]),
    ("a\\b", [("ab", 1.0)]),
    ("\\", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("(:1.2)", [("", 1.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize(("text", "expected"), LITERALS)
def test_escapes_and_stray_characters(text: str, expected: Runs) -> None:
    assert parse_attention(text) == expected


BREAKS = [
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    (
        "a BREAK BREAK b",
        [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)],
    ),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("a_BREAK", [("a_BREAK", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("a:BREAK", [("a:", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    ("BREAK\\(x", [("", 1.0), ("BREAK", -1.0), ("(x", 1.0)]),
    # inside brackets the marker's weight is multiplied too (it then reads as the word)
    (
        "a (b BREAK c) [d BREAK]",
        [
            ("a ", 1.0),
            ("b", 1.1),
            ("BREAK", -1.1),
            ("c", 1.1),
            (" ", 1.0),
            ("d", DOWN),
            ("BREAK", -DOWN),
            ("", DOWN),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), BREAKS)
def test_break(text: str, expected: Runs) -> None:
    assert parse_attention(text) == expected


def test_break_with_long_whitespace_is_linear_and_eats_the_whitespace() -> None:
    spaces = " " * 50_000
    assert parse_attention(f"a{spaces}BREAK{spaces}b") == [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]


def test_unreadable_weight_is_text_instead_of_an_error() -> None:
    # A1111 raises ValueError from float("1.2.3"); the bracket still closes with 1.1 here.
    assert parse_attention("(x:1.2.3)") == [("x:1.2.3", 1.1)]
    assert parse_attention("(x:.)") == [("x:.", 1.1)]


def test_weights_stay_finite_where_a1111_overflows() -> None:
    huge = "9" * 400  # float() gives inf
    assert parse_attention(f"(x:{huge})") == [(f"x:{huge}", 1.1)]
    deep = parse_attention("(" * 8_000 + "x" + ")" * 8_000)  # 1.1 ** 8000 overflows
    assert deep == [("x", 1.7976931348623157e308)]
    cancelled = parse_attention("(" + "(" * 8_000 + "x" + ")" * 8_000 + ":0)")
    assert cancelled == [("x", 0.0)]


def test_100k_characters_of_nested_brackets_parse() -> None:
    assert parse_attention("(" * 50_000 + "a" + ")" * 50_000)[0][0] == "a"
    [(text, weight)] = parse_attention("[" * 50_000 + "a" + "]" * 50_000)
    assert text == "a"
    assert 0.0 <= weight < 1e-300
    runs = parse_attention("(a" * 50_000)
    assert "".join(text for text, _ in runs) == "a" * 50_000
    assert runs[0] == ("a", 1.1)
    levels = parse_attention("(a" * 25_000 + ":1)" * 25_000)
    assert levels == [("a" * 25_000, 1.0)]


TEXT = st.text(alphabet=st.sampled_from("ab ()[]:\\1.-+BREAK\n"), max_size=60) | st.text(
    max_size=60
)


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_any_text_parses_to_finite_weights_covering_its_characters(text: str) -> None:
    runs = parse_attention(text)
    assert runs
    assert all(math.isfinite(weight) for _, weight in runs)
    assert all(type(weight) is float for _, weight in runs)
    assert all(runs[i][1] != runs[i + 1][1] for i in range(len(runs) - 1))


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="()[]:\\"), min_size=1))
def test_plain_text_is_one_run_of_weight_one(text: str) -> None:
    if "BREAK" in text:
        text = text.replace("BREAK", "break")
    assert parse_attention(text) == [(text, 1.0)]
