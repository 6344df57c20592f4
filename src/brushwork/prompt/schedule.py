"""Prompt editing and alternation: ``[from:to:when]`` and ``[a|b|c]`` as a per-step schedule.

Reads a prompt the way A1111 (v1.10) reads it in ``get_learned_conditioning_prompt_schedules``,
with a hand-written linear-time parser instead of a general (Earley) grammar parser.

How A1111's grammar reads a prompt, restated as the rules implemented here:

* Plain text is any run of characters other than ``[ ] ( ) : |``; a backslash escapes the next
  character (the escape stays in the text; ``parse_attention`` resolves it later). A backslash at
  the very end, or right before a line break, cannot be read: the whole prompt is then used as
  written, unscheduled.
* A bracket group is *structured* when everything inside it is plain text or structured groups and
  its separators fit one of the forms ``(x)``, ``(x:y)``, ``[x]`` (emphasis, kept verbatim),
  ``[to:N]``, ``[from:to:N]`` (editing; ``N`` a signed number, optionally surrounded by
  whitespace) or ``[a|b|...]`` (alternation; empty options allowed). Every structured group is
  used as such; any other bracket or ``:`` is literal text.
* A ``|`` outside every alternation makes the prompt unreadable: used as written, unscheduled.

``when`` is a step count when its text has no ``.``, else a fraction of the steps (rounded
toward zero); it is capped at ``steps``. The old rule (``use_old_scheduling``, infotext
``Old prompt editing timelines``) takes values below 1 as fractions. A value below 1 adds no switch
point. Text before the switch is used while ``step <= when``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["prompt_schedule"]

# A token is plain text (with backslash escapes), one special character, or a backslash that
# escapes nothing (which makes the prompt unreadable, as in A1111).
_TOKEN = re.compile(r"(?:[^\\\[\]():|]|\\.)+|[\[\]():|]|\\")
# lark's common.SIGNED_NUMBER; tried in this order at one position, like lark's lexer.
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)"
)
_SPECIAL = frozenset("[]():|")


class _Group:
    """Brackets kept verbatim (emphasis): their parts, brackets and separators included."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts


class _Edit:
    """``[before:after:when]``; ``index`` points at the switch step in a per-call list."""

    __slots__ = ("after", "before", "index")

    def __init__(self, before: list[Part], after: list[Part], index: int) -> None:
        self.before, self.after, self.index = before, after, index


class _Alternate:
    """``[a|b|...]``: one option per step, in turn."""

    __slots__ = ("options",)

    def __init__(self, options: list[list[Part]]) -> None:
        self.options = options


Part = str | _Group | _Edit | _Alternate


@dataclass(frozen=True)
class _Parsed:
    parts: list[Part]
    when_texts: tuple[str, ...]
    alternates: bool


class _Frame:
    """An open bracket whose group is still being read."""

    __slots__ = ("bracket", "pipes", "segments", "separators")

    def __init__(self, bracket: str) -> None:
        self.bracket = bracket
        self.segments: list[list[Part]] = [[]]
        self.separators: list[str] = []
        self.pipes = 0


def prompt_schedule(
    prompt: str,
    steps: int,
    hires_steps: int | None = None,
    *,
    use_old_scheduling: bool = False,
) -> list[tuple[int, str]]:
    """The prompt's texts per sampling step, as ``[(end_step, text), ...]`` sorted by step.

    Same result as A1111's ``get_learned_conditioning_prompt_schedules([prompt], steps,
    hires_steps, use_old_scheduling)[0]``. The text of an entry is used for every step up to and
    including its ``end_step``; the last entry always ends at ``steps`` (``hires_steps`` for the
    hires pass). With ``hires_steps`` (and the new rule), integer switch points count from the
    start of the first pass (``steps`` is then the first pass's step count) and fractions above
    1 reach into the hires pass: ``[a:b:1.5]`` switches halfway through it. Never raises: a
    prompt that cannot be read is used as written.
    """
    if hires_steps is None or use_old_scheduling:
        total, int_offset, fraction_offset = steps, 0, 0.0
    else:
        total, int_offset, fraction_offset = hires_steps, steps, 1.0
    parsed = _parse(prompt)
    if parsed is None:
        return [(total, prompt)]
    whens = [
        _switch_step(text, total, int_offset, fraction_offset, use_old_scheduling)
        for text in parsed.when_texts
    ]
    points = {total}
    points.update(w for w in whens if w >= 1)
    if parsed.alternates:
        points.update(range(1, total + 1))
    return [(step, _render(parsed.parts, step, whens)) for step in sorted(points)]


def _switch_step(text: str, total: int, int_offset: int, fraction_offset: float, old: bool) -> int:
    value = float(text)
    if old:
        value = value * total if value < 1 else value
    elif "." in text:
        value = (value - fraction_offset) * total
    else:
        value = value - int_offset
    if not math.isfinite(value):  # A1111 raises (int(inf)); read as "never" or "at once".
        return total if value > 0 else min(total, 1) - 1
    return min(total, int(value))


def _render(parts: list[Part], step: int, whens: list[int]) -> str:
    out: list[str] = []
    stack = [iter(parts)]
    while stack:
        for part in stack[-1]:
            if isinstance(part, str):
                out.append(part)
                continue
            if isinstance(part, _Group):
                chosen = part.parts
            elif isinstance(part, _Edit):
                chosen = part.before if step <= whens[part.index] else part.after
            else:
                chosen = part.options[(step - 1) % len(part.options)]
            stack.append(iter(chosen))
            break
        else:
            stack.pop()
    return "".join(out)


def _parse(prompt: str) -> _Parsed | None:
    """The prompt's parts, or None when A1111's parser would reject it."""
    top: list[Part] = []
    frames: list[_Frame] = []
    when_texts: list[str] = []
    alternates = False
    for match in _TOKEN.finditer(prompt):
        token = match.group()
        if token not in _SPECIAL:
            if token == "\\":
                return None
            (frames[-1].segments[-1] if frames else top).append(token)
        elif token in "[(":
            frames.append(_Frame(token))
        elif token in ":|":
            if not frames:
                if token == "|":
                    return None
                top.append(token)
                continue
            frame = frames[-1]
            frame.separators.append(token)
            frame.segments.append([])
            frame.pipes += token == "|"
        else:
            node = _close(frames[-1], token, when_texts) if frames else None
            if node is None:
                if not _dissolve(frames, top):
                    return None
                top.append(token)
                continue
            frames.pop()
            alternates = alternates or isinstance(node, _Alternate)
            (frames[-1].segments[-1] if frames else top).append(node)
    if not _dissolve(frames, top):
        return None
    return _Parsed(top, tuple(when_texts), alternates)


def _close(frame: _Frame, closer: str, when_texts: list[str]) -> Part | None:
    """The node a closing bracket makes of the open frame, or None when it is literal text."""
    colons = len(frame.separators) - frame.pipes
    segments = frame.segments
    if frame.bracket == "(":
        if closer != ")" or frame.pipes or colons > 1:
            return None
        inner = segments[0] if colons == 0 else [*segments[0], ":", *segments[1]]
        return _Group(["(", *inner, ")"])
    if closer != "]":
        return None
    if frame.pipes:
        return None if colons else _Alternate(segments)
    if colons == 0:
        return _Group(["[", *segments[0], "]"])
    last = segments[-1]
    if colons > 2 or len(last) != 1 or not isinstance(last[0], str):
        return None
    number = _number_text(last[0])
    if number is None:
        return None
    when_texts.append(number)
    before = segments[0] if colons == 2 else []
    return _Edit(before, segments[-2], len(when_texts) - 1)


def _number_text(text: str) -> str | None:
    stripped = text.lstrip()
    match = _NUMBER.match(stripped)
    if match is None:
        return None
    rest = stripped[match.end() :]
    return match.group() if not rest or rest.isspace() else None


def _dissolve(frames: list[_Frame], top: list[Part]) -> bool:
    """Turn every open frame back into literal text (a stray bracket sits inside all of them).

    False when one of them holds a ``|``: outside an alternation it cannot be read.
    """
    for frame in frames:
        if frame.pipes:
            return False
        top.append(frame.bracket)
        for index, segment in enumerate(frame.segments):
            if index:
                top.append(frame.separators[index - 1])
            top.extend(segment)
    frames.clear()
    return True
