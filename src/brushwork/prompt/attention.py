"""Attention (emphasis) weights: ``(x)``, ``[x]``, ``(x:1.3)``, escapes and ``BREAK``.

Reads text the way A1111 (v1.10) reads it in ``parse_prompt_attention``:

* ``(x)`` multiplies the weight of ``x`` by 1.1, ``[x]`` by 1/1.1, ``(x:W)`` by ``W`` (``W`` made of
  digits and dots with an optional sign, whitespace allowed around it). Nesting multiplies.
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are the literal characters; any other backslash is dropped.
* A ``)`` or ``]`` that closes nothing, and any ``:`` that is not part of ``(x:W)``, are text.
  Brackets still open at the end apply to the rest of the text: first the round ones (outermost
  first), then the square ones.
* ``BREAK`` (capitals, a whole word; the whitespace around it is dropped) in plain text gives the
  marker ``("BREAK", -1.0)``. Inside brackets the marker's weight is multiplied like any text
  (the conditioning floor then reads it as the word, as A1111 does).
* Adjacent runs of equal weight are merged; an empty result is ``[("", 1.0)]``.

Weights are the same floats A1111 computes: each run's multipliers are applied one at a time in
the order A1111 applies them (a bracket's when it closes). Where A1111 differs from this:

* ``(x:1.2.3)`` (a weight ``float()`` cannot read) raises ``ValueError`` in A1111; here the
  ``:1.2.3`` is text and the ``)`` closes the bracket with 1.1.
* A weight that overflows (``1e400``-like digit strings, thousands of nested brackets) is inf or
  nan in A1111; here every weight is finite: such a product is recomputed in a different order
  and saturates at the largest float.
* A1111's cost grows with the square of the nesting depth; here it is linear, except that the
  exact A1111 order is kept for the first ``_EXACT_BUDGET`` multiplications only (enough for any
  real prompt); beyond it, products are computed outermost-first (same value up to rounding).
"""

from __future__ import annotations

import math
import re
import sys

__all__ = ["parse_attention"]

_ROUND = 1.1
_SQUARE = 1 / 1.1
_MAX = sys.float_info.max
_EXACT_BUDGET = 250_000

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]            # an escaped bracket or backslash
    | \\                    # a backslash escaping nothing: dropped
    | [(\[]                 # opening brackets
    | :\s*([+-]?[.\d]+)\s*\) # an explicit weight closing a round bracket
    | [)\]]                 # closing brackets
    | [^\\()\[\]:]+         # text
    | :                     # a colon that is text
    """,
    re.VERBOSE,
)


class _Groups:
    """Bracket groups: their multipliers, the enclosing group of the same kind, and event times."""

    __slots__ = ("depth", "multiplier", "parent", "time")

    def __init__(self) -> None:
        self.multiplier: list[float] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.time: list[int] = []

    def open(self, parent: int, multiplier: float) -> int:
        self.multiplier.append(multiplier)
        self.parent.append(parent)
        self.depth.append(1 + (self.depth[parent] if parent >= 0 else 0))
        self.time.append(-1)
        return len(self.time) - 1

    def chain_length(self, group: int) -> int:
        return self.depth[group] if group >= 0 else 0


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The text split into runs with their attention weights, like A1111's parse_prompt_attention.

    >>> parse_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    runs: list[str] = []
    signs: list[float] = []
    keys: list[tuple[int, int]] = []  # (innermost round group, innermost square group) per run
    groups = _Groups()
    round_open: list[int] = []
    square_open: list[int] = []
    clock = 0
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match is not None  # the last two alternatives match any character
        token = match.group()
        position = match.end()
        key = (round_open[-1] if round_open else -1, square_open[-1] if square_open else -1)
        first = token[0]
        if first == "\\":
            runs.append(token[1:])
            signs.append(1.0)
            keys.append(key)
        elif first in "([":
            stack = round_open if first == "(" else square_open
            multiplier = _ROUND if first == "(" else _SQUARE
            stack.append(groups.open(stack[-1] if stack else -1, multiplier))
        elif match.group(1) is not None and round_open:
            weight = _finite_float(match.group(1))
            if weight is None:  # A1111 raises ValueError; read the colon as text and go on
                position = match.start() + 1
                _append_text(":", key, runs, signs, keys)
                continue
            clock = _close(groups, round_open.pop(), weight, clock)
        elif token == ")" and round_open:
            clock = _close(groups, round_open.pop(), _ROUND, clock)
        elif token == "]" and square_open:
            clock = _close(groups, square_open.pop(), _SQUARE, clock)
        else:
            _append_text(token, key, runs, signs, keys)
    for group in (*round_open, *square_open):
        groups.time[group] = clock
        clock += 1
    if not runs:
        return [("", 1.0)]
    return _merge(runs, _weights(signs, keys, groups))


def _finite_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _close(groups: _Groups, group: int, multiplier: float, clock: int) -> int:
    groups.multiplier[group] = multiplier
    groups.time[group] = clock
    return clock + 1


def _append_text(
    token: str,
    key: tuple[int, int],
    runs: list[str],
    signs: list[float],
    keys: list[tuple[int, int]],
) -> None:
    for index, part in enumerate(_split_break(token)):
        if index:
            runs.append("BREAK")
            signs.append(-1.0)
            keys.append(key)
        runs.append(part)
        signs.append(1.0)
        keys.append(key)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _split_break(text: str) -> list[str]:
    """``re.split(r"\\s*\\bBREAK\\b\\s*", text)``, in linear time."""
    if "BREAK" not in text:
        return [text]
    parts: list[str] = []
    kept = 0  # where the current part starts (the end of the previous separator)
    search = 0
    while (found := text.find("BREAK", search)) >= 0:
        after = found + 5
        search = found + 1
        if (found and _is_word(text[found - 1])) or (after < len(text) and _is_word(text[after])):
            continue
        start = found
        while start > kept and text[start - 1].isspace():
            start -= 1
        while after < len(text) and text[after].isspace():
            after += 1
        parts.append(text[kept:start])
        kept = search = after
    parts.append(text[kept:])
    return parts


def _weights(signs: list[float], keys: list[tuple[int, int]], groups: _Groups) -> list[float]:
    fast = _fast_products(groups)
    memo: dict[tuple[int, int], float] = {}
    budget = _EXACT_BUDGET
    weights = []
    for sign, key in zip(signs, keys, strict=True):
        weight = memo.get(key)
        if weight is None:
            outermost_first = _clamp(fast[key[0]] * fast[key[1]])
            length = groups.chain_length(key[0]) + groups.chain_length(key[1])
            if length > budget:
                weight = outermost_first
            else:
                budget -= length
                chain = _chain(key[0], groups) + _chain(key[1], groups)
                weight = _in_a1111_order(chain, groups)
                if not math.isfinite(weight):
                    weight = outermost_first
            memo[key] = weight
        weights.append(sign * weight)
    return weights


def _chain(group: int, groups: _Groups) -> list[int]:
    chain = []
    while group >= 0:
        chain.append(group)
        group = groups.parent[group]
    return chain


def _in_a1111_order(chain: list[int], groups: _Groups) -> float:
    weight = 1.0
    for group in sorted(chain, key=groups.time.__getitem__):
        weight *= groups.multiplier[group]
    return weight


def _fast_products(groups: _Groups) -> dict[int, float]:
    """Per group, the product of its multiplier and all enclosing ones of its kind; -1 is 1.0."""
    products = {-1: 1.0}
    for group, (multiplier, parent) in enumerate(
        zip(groups.multiplier, groups.parent, strict=True)
    ):
        products[group] = _clamp(multiplier * products[parent])
    return products


def _clamp(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return max(-_MAX, min(_MAX, value))


def _merge(runs: list[str], weights: list[float]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    pieces = [runs[0]]
    current = weights[0]
    for run, weight in zip(runs[1:], weights[1:], strict=True):
        if weight == current:
            pieces.append(run)
            continue
        merged.append(("".join(pieces), current))
        pieces = [run]
        current = weight
    merged.append(("".join(pieces), current))
    return merged
