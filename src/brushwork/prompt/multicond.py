"""Composable diffusion: a prompt's ``AND`` parts and their weights.

Reads a prompt the way A1111 (v1.10) reads it in ``get_multicond_prompt_list``: the prompt is
split at every ``AND`` that is a whole word in capitals; each part may end with ``:weight``
(``:`` then an optional sign and digits with at most one dot, whitespace allowed around the colon
and at the end). The part's text loses its trailing whitespace (and the weight); leading
whitespace is kept. A part without a weight has weight 1.0.

Differences from A1111: the weight suffix is found in linear time (A1111's regex is quadratic on
long whitespace), and a weight whose digits overflow a float (hundreds of digits) is not read as
a weight: the part keeps it as text, with weight 1.0, so weights are always finite.
"""

from __future__ import annotations

import math
import re

__all__ = ["split_and"]

_AND = re.compile(r"\bAND\b")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """The ``AND`` parts of a prompt with their weights, in order (duplicates kept).

    >>> split_and("a cat AND a dog:0.5")
    [('a cat', 1.0), (' a dog', 0.5)]
    """
    return [_weighted(part) for part in _AND.split(prompt)]


def _weighted(part: str) -> tuple[str, float]:
    text = part.rstrip()
    end = len(text)
    start = end
    while start > 0 and (text[start - 1].isdecimal() or text[start - 1] == "."):
        start -= 1
    number = text[start:end]
    if not _is_weight_number(number):
        return text, 1.0
    if start > 0 and text[start - 1] in "+-":
        start -= 1
    colon = start
    while colon > 0 and text[colon - 1].isspace():
        colon -= 1
    if colon == 0 or text[colon - 1] != ":":
        return text, 1.0
    weight = float(text[start:end])
    if not math.isfinite(weight):
        return text, 1.0
    return text[: colon - 1].rstrip(), weight


def _is_weight_number(text: str) -> bool:
    """``\\d+\\.?|\\d*\\.\\d+`` matches all of ``text`` (which holds only digits and dots)."""
    dots = text.count(".")
    if not text or dots > 1:
        return False
    return dots == 0 or text != "."
