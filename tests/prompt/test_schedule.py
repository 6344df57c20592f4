"""prompt_schedule: A1111's prompt editing and alternation, step by step.

Expected values are A1111 v1.10's documented examples (``get_learned_conditioning_prompt_schedules``
docstring and the comment above its grammar) and its behaviour on edge cases, as observed with
its grammar under lark 1.1.2 (the version it pins).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brushwork.prompt import prompt_schedule

Schedule = list[tuple[int, str]]


def alternating(first: str, second: str, steps: int) -> Schedule:
    return [(step, first if step % 2 else second) for step in range(1, steps + 1)]


DOCUMENTED = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", alternating("a", "(b:1.1)", 10)),
    ("[fe|]male", alternating("female", "male", 10)),
    (
        "[fe|||]male",
        [(step, "female" if step % 4 == 1 else "male") for step in range(1, 11)],
    ),
]


@pytest.mark.parametrize(("prompt", "expected"), DOCUMENTED)
def test_documented_examples(prompt: str, expected: Schedule) -> None:
    assert prompt_schedule(prompt, 10) == expected


def test_documented_landscape_example_at_100_steps() -> None:
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]"
    )
    assert prompt_schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


SWITCH_POINTS = [
    # integer steps; inclusive: "a" is used while step <= when
    ("[a:b:3]", 10, [(3, "a"), (10, "b")]),
    ("[a:b:1]", 10, [(1, "a"), (10, "b")]),
    ("[a:b:10]", 10, [(10, "a")]),
    ("[a:b:11]", 10, [(10, "a")]),
    ("[a:b:0]", 10, [(10, "b")]),
    ("[a:b:-2]", 10, [(10, "b")]),
    ("[a:b:+2]", 10, [(2, "a"), (10, "b")]),
    ("[a:b:00003]", 10, [(3, "a"), (10, "b")]),
    # a "." makes a fraction of the steps, truncated toward zero like int()
    ("[a:b:0.5]", 10, [(5, "a"), (10, "b")]),
    ("[a:b:0.55]", 10, [(5, "a"), (10, "b")]),
    ("[a:b:0.29]", 100, [(28, "a"), (100, "b")]),  # 0.29 * 100 == 28.999999999999996
    ("[a:b:1.0]", 10, [(10, "a")]),
    ("[a:b:5.]", 10, [(10, "a")]),
    ("[a:b:1.5e-1]", 10, [(1, "a"), (10, "b")]),
    ("[a:b:-.5]", 10, [(10, "b")]),
    # exponent without a dot is a step count; whitespace around the number is allowed
    ("[a:b:1e1]", 10, [(10, "a")]),
    ("[a:b: 3 ]", 10, [(3, "a"), (10, "b")]),
    ("[a:b:\t3\n]", 10, [(3, "a"), (10, "b")]),
    ("[a::3]", 10, [(3, "a"), (10, "")]),
    ("[:3]", 10, [(3, ""), (10, "")]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), SWITCH_POINTS)
def test_switch_points(prompt: str, steps: int, expected: Schedule) -> None:
    assert prompt_schedule(prompt, steps) == expected


HIRES = [
    # documented: the hires pass counts fractions from 1.0 and integers from the base steps
    ("a [b:.5] c", 10, 10, [(10, "a b c")]),
    ("a [b:1.5] c", 10, 10, [(5, "a  c"), (10, "a b c")]),
    ("[a:b:25]", 20, 10, [(5, "a"), (10, "b")]),
    ("[a:b:15]", 20, 10, [(10, "b")]),
    ("[a|b]", 20, 4, alternating("a", "b", 4)),
]


@pytest.mark.parametrize(("prompt", "steps", "hires_steps", "expected"), HIRES)
def test_hires_pass(prompt: str, steps: int, hires_steps: int, expected: Schedule) -> None:
    assert prompt_schedule(prompt, steps, hires_steps) == expected


def test_old_scheduling_reads_values_below_one_as_fractions_and_ignores_hires() -> None:
    assert prompt_schedule("[a:b:0.5]", 10, use_old_scheduling=True) == [(5, "a"), (10, "b")]
    assert prompt_schedule("[a:b:3]", 10, use_old_scheduling=True) == [(3, "a"), (10, "b")]
    assert prompt_schedule("[a:b:0.5]", 20, 10, use_old_scheduling=True) == [(10, "a"), (20, "b")]


ODD_INPUT = [
    # A1111 cannot parse these at all: the prompt is used as written, unscheduled
    ("a | b", [(10, "a | b")]),
    ("[a|b", [(10, "[a|b")]),
    ("(a|b)", [(10, "(a|b)")]),
    ("[a|b)]", [(10, "[a|b)]")]),
    ("a\\", [(10, "a\\")]),
    ("[a:b:3] \\", [(10, "[a:b:3] \\")]),
    ("[a:b:3]\\\n", [(10, "[a:b:3]\\\n")]),
    # not a schedule: literal text, escapes kept for parse_attention
    ("\\[a:b:3\\]", [(10, "\\[a:b:3\\]")]),
    ("[a:b:c:3]", [(10, "[a:b:c:3]")]),
    ("[a:b]", [(10, "[a:b]")]),
    ("[a:b:x]", [(10, "[a:b:x]")]),
    ("[a:b:- 1]", [(10, "[a:b:- 1]")]),
    ("[a:b:1_0]", [(10, "[a:b:1_0]")]),
    ("[a:b:0x1]", [(10, "[a:b:0x1]")]),
    ("[a|b:3]", [(10, "[a|b:3]")]),
    # an escaped colon is text; a stray bracket before a schedule stays literal
    ("[a\\:b:3]", [(3, ""), (10, "a\\:b")]),
    ("[[a:b:3]", [(3, "[a"), (10, "[b")]),
    ("x)[a:b:3]", [(3, "x)a"), (10, "x)b")]),
    ("(a:b:c)[d:3]", [(3, "(a:b:c)"), (10, "(a:b:c)d")]),
    ("[(a:1.2):(b:c):2]", [(2, "(a:1.2)"), (10, "(b:c)")]),
    ("", [(10, "")]),
]


@pytest.mark.parametrize(("prompt", "expected"), ODD_INPUT)
def test_odd_input_reads_as_a1111_reads_it(prompt: str, expected: Schedule) -> None:
    assert prompt_schedule(prompt, 10) == expected


NESTED = [
    ("[a:[b|c]:2]", 4, [(1, "a"), (2, "a"), (3, "b"), (4, "c")]),
    ("[[a|b]|c]", 4, [(1, "a"), (2, "c"), (3, "a"), (4, "c")]),
    ("[a|b|c]", 4, [(1, "a"), (2, "b"), (3, "c"), (4, "a")]),
    ("[|]", 3, [(1, ""), (2, ""), (3, "")]),
]


@pytest.mark.parametrize(("prompt", "steps", "expected"), NESTED)
def test_nested_alternation_and_editing(prompt: str, steps: int, expected: Schedule) -> None:
    assert prompt_schedule(prompt, steps) == expected


def test_structured_reading_is_taken_where_a1111_is_ambiguous() -> None:
    # A1111's parser resolves these ties in hash-set order, so its result changes from one
    # process to the next (PYTHONHASHSEED); the structured reading is one of its results.
    assert prompt_schedule("[a:3]]]", 10) == [(3, "]]"), (10, "a]]")]
    assert prompt_schedule("[:3]]", 10) == [(3, "]"), (10, "]")]


def test_degenerate_step_counts_follow_a1111() -> None:
    assert prompt_schedule("a", 0) == [(0, "a")]
    assert prompt_schedule("[a:b:3]", 0) == [(0, "a")]
    assert prompt_schedule("[a|b]", 0) == [(0, "b")]
    assert prompt_schedule("[a:b:3]", -2) == [(-2, "a")]
    assert prompt_schedule("[a|b]", -1) == [(-1, "a")]


def test_overflowing_switch_point_means_never_instead_of_crashing() -> None:
    # A1111 raises OverflowError (int(inf)); the switch point is past the last step.
    assert prompt_schedule("[a:b:1e999]", 10) == [(10, "a")]
    assert prompt_schedule("[a:b:-1e999]", 10) == [(10, "b")]
    assert prompt_schedule("[a:b:1.0e999]", 10) == [(10, "a")]
    assert prompt_schedule("[a:b:1.0e999]", 0, 0) == [(0, "b")]  # (inf - 1) * 0 is nan


def test_100k_characters_of_nested_brackets_parse() -> None:
    depth = 25_000
    nested_edits = "[a:" * depth + "b" + ":3]" * depth  # [a:[a:[a:b:3]:3]:3]
    assert prompt_schedule(nested_edits, 10) == [(3, "a"), (10, "b")]
    growing = "[x" * depth + ":3]" * depth  # [x[x[x:3]:3]:3]: all of it appears at step 4
    assert prompt_schedule(growing, 10) == [(3, ""), (10, "x" * depth)]
    nested_emphasis = "(" * 50_000 + "x" + ")" * 50_000
    assert prompt_schedule(nested_emphasis, 10) == [(10, nested_emphasis)]
    nested_alternation = "[a|" * 30_000 + "b" + "]" * 30_000
    assert prompt_schedule(nested_alternation, 2) == [(1, "a"), (2, "b")]
    unclosed = "([" * 50_000
    assert prompt_schedule(unclosed, 10) == [(10, unclosed)]


PROMPT_TEXT = st.text(alphabet=st.sampled_from("ab [](): |.5\\\n-"), max_size=40) | st.text(
    max_size=40
)


@settings(max_examples=300, deadline=None)
@given(prompt=PROMPT_TEXT, steps=st.integers(1, 40), hires=st.none() | st.integers(1, 40))
def test_any_prompt_gives_a_schedule_ending_at_the_last_step(
    prompt: str, steps: int, hires: int | None
) -> None:
    schedule = prompt_schedule(prompt, steps, hires)
    last_step = steps if hires is None else hires
    assert schedule[-1][0] == last_step
    assert [step for step, _ in schedule] == sorted({step for step, _ in schedule})
    assert all(1 <= step <= last_step for step, _ in schedule)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="[]():|\\"), max_size=50))
def test_plain_text_is_never_scheduled(text: str) -> None:
    assert prompt_schedule(text, 20) == [(20, text)]
