"""Infotext: the generation parameters A1111 stores with an image, read and written.

Layout (A1111 ``create_infotext``)::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>     (omitted when empty)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, ...

``parse_infotext`` returns what A1111 (v1.10) ``parse_generation_parameters`` returns for the same
text with default settings and no styles, checkpoints or samplers installed:

* the last line holds the parameters only if it has at least 3 ``key: value`` pairs; other lines
  are prompt lines until one starts with ``Negative prompt:``; every line is stripped;
* values are strings (a ``"quoted"`` value is JSON-decoded); ``WxH`` values become ``Key-1`` and
  ``Key-2``; a pair with an empty value is dropped (A1111 fails on it and goes on);
* missing keys get A1111's defaults (some are numbers or booleans, as in A1111); old hires-fix
  fields are converted; ``Version`` switches on the back-compatibility flags
  (``Old prompt editing timelines``, ``Pad conds v0``, ``Downcast alphas_cumprod``,
  ``Refiner switch by sampling steps``); ``Hypernet`` becomes a ``<hypernet:...>`` prompt tag;
  ``Emphasis: Original`` is added when a prompt has weights.

Two things A1111 does later, when the values are pasted into its UI, are done here too: a legacy
sampler name with the scheduler in it (``DPM++ 2M Karras``) is split into ``Sampler`` and
``Schedule type`` (also for ``Hires sampler`` / ``Hires schedule type``). The scheduler's label
is kept as written (A1111's UI shows ``Automatic`` when it is the sampler's default).

Never raises: where A1111 would fail on a value (``int("x")`` in the old hires-fix conversion) the
value is left as read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType

from brushwork.prompt.attention import parse_attention

__all__ = ["InfotextValue", "format_infotext", "parse_infotext"]

InfotextValue = str | int | bool

_NEGATIVE = "Negative prompt:"
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_KEY = re.compile(r"\w[\w \-/]+")
_KEY_CHARS = frozenset(" -/")
_VERSION_HEAD = re.compile(r"([^-]+-[^-]+)-.*")

# A1111 v1.10 schedulers (label, name, aliases), in its order: legacy sampler suffixes.
_SCHEDULERS: tuple[tuple[str, ...], ...] = (
    ("Automatic", "automatic"),
    ("Uniform", "uniform"),
    ("Karras", "karras"),
    ("Exponential", "exponential"),
    ("Polyexponential", "polyexponential"),
    ("SGM Uniform", "sgm_uniform", "SGMUniform"),
    ("KL Optimal", "kl_optimal"),
    ("Align Your Steps", "align_your_steps"),
    ("Simple", "simple"),
    ("Normal", "normal"),
    ("DDIM", "ddim"),
    ("Beta", "beta"),
)

# Missing keys and what A1111 fills in, in its order (before and after the hires-fix conversion).
_DEFAULTS_BEFORE: tuple[tuple[str, InfotextValue], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_DEFAULTS_AFTER: tuple[tuple[str, InfotextValue], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def parse_infotext(text: str) -> dict[str, InfotextValue]:
    """The fields of an infotext, as A1111's ``parse_generation_parameters`` gives them."""
    *lines, last = text.strip().split("\n")
    pairs = _param_pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []
    prompt, negative = _prompts(lines)
    result: dict[str, InfotextValue] = {}
    for key, value in pairs:
        if not value:
            continue  # A1111 fails on an empty value (IndexError), reports it and goes on
        if value[0] == '"' and value[-1] == '"':
            value = _unquote(value)
        size = _SIZE.match(value)
        if size is None:
            result[key] = value
        else:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
    _split_scheduler(result, "Sampler", "Schedule type")
    _split_scheduler(result, "Hires sampler", "Hires schedule type")
    result["Prompt"] = prompt
    result["Negative prompt"] = negative
    _fill_defaults(result)
    if "Emphasis" not in result and _uses_emphasis(prompt, negative):
        result["Emphasis"] = "Original"
    result.setdefault("Refiner switch by sampling steps", False)
    _back_compatibility(result)
    return result


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """The infotext A1111 writes for these texts and parameters (in the order given).

    Parameters whose value is None are left out; a value equal to its key is written as the key
    alone (A1111's flags). Values holding ``,`` ``:`` or a line break are JSON-quoted, as in A1111;
    so are empty values, values with whitespace at either end and values starting with ``"``
    (A1111 writes those raw and cannot read them back). Raises ValueError for a key that A1111
    could not read back (it must be two or more word characters, spaces, ``-`` or ``/``, starting
    with a word character).
    """
    fields = []
    for key, value in params.items():
        if value is None:
            continue
        if _KEY.fullmatch(key) is None:
            raise ValueError(
                f"infotext key {key!r} cannot be read back: use 2+ letters, digits, "
                "'_', spaces, '-' or '/', starting with a letter, digit or '_'"
            )
        fields.append(key if key == value else f"{key}: {_quote(str(value))}")
    negative = f"\n{_NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(fields)}".strip()


def _quote(value: str) -> str:
    needs_json = (
        not value
        or value[0] == '"'
        or value != value.strip()
        or any(char in value for char in ",:\n")
    )
    return json.dumps(value, ensure_ascii=False) if needs_json else value


def _unquote(value: str) -> str:
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, str) else value


def _prompts(lines: list[str]) -> tuple[str, str]:
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(_NEGATIVE):
            in_negative = True
            line = line[len(_NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt), "\n".join(negative)


def _param_pairs(line: str) -> list[tuple[str, str]]:
    """The ``key: value`` pairs of a line, as ``re.findall`` with A1111's ``re_param`` finds them.

    That pattern is ``\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)``; this scan
    gives the same pairs in linear time (the regex is quadratic on long runs without a colon).
    """
    pairs = []
    position, length = 0, len(line)
    while position < length:
        start = position
        while start < length and line[start].isspace():
            start += 1
        if start == length:
            break
        if not (line[start].isalnum() or line[start] == "_"):
            position = start + 1
            continue
        end = start + 1
        while end < length and (line[end].isalnum() or line[end] == "_" or line[end] in _KEY_CHARS):
            end += 1
        if end - start < 2 or end == length or line[end] != ":":
            position = end  # every start inside this run ends at the same place and fails
            continue
        value, position = _param_value(line, end + 1)
        pairs.append((line[start:end], value))
    return pairs


def _param_value(line: str, start: int) -> tuple[str, int]:
    """The value starting after ``key:`` (whitespace skipped) and where the next pair starts."""
    length = len(line)
    while start < length and line[start].isspace():
        start += 1
    if start < length and line[start] == '"':
        end = start + 1
        while end < length and line[end] != '"':
            if line[end] == "\\":
                if end + 1 >= length or line[end + 1] == "\n":
                    break
                end += 2
            else:
                end += 1
        closed = end < length and line[end] == '"' and end > start + 1
        if closed and (end + 1 == length or line[end + 1] == ","):
            return line[start : end + 1], end + 2
    comma = line.find(",", start)
    if comma < 0:
        return line[start:], length
    return line[start:comma], comma + 1


def _split_scheduler(
    result: dict[str, InfotextValue], sampler_key: str, scheduler_key: str
) -> None:
    """``Sampler: DPM++ 2M Karras`` -> ``DPM++ 2M`` + ``Schedule type: Karras`` (A1111's rule)."""
    name = result.get(sampler_key)
    if not isinstance(name, str):
        return
    found = None
    for label, *others in _SCHEDULERS:
        for option in (label, *others):
            if name.endswith(" " + option):
                found, name = label, name[: -len(option) - 1]
                break
    if found is not None:
        result[sampler_key] = name
        result[scheduler_key] = found


def _fill_defaults(result: dict[str, InfotextValue]) -> None:
    result.setdefault("Clip skip", "1")
    hypernet = result.get("Hypernet")
    if hypernet is not None:
        strength = result.get("Hypernet strength", "1.0")
        result["Prompt"] = f"{result['Prompt']}<hypernet:{hypernet}:{strength}>"
    if "Hires resize-1" not in result:
        result["Hires resize-1"] = 0
        result["Hires resize-2"] = 0
    for key, value in _DEFAULTS_BEFORE:
        result.setdefault(key, value)
    _restore_old_hires_fix(result)
    for key, value in _DEFAULTS_AFTER:
        result.setdefault(key, value)
    if "Cache FP16 weight for LoRA" not in result and result["FP8 weight"] != "Disable":
        result["Cache FP16 weight for LoRA"] = False


def _restore_old_hires_fix(result: dict[str, InfotextValue]) -> None:
    """``First pass size`` (hires fix before v1.0) -> first-pass ``Size`` and ``Hires resize``."""
    first = result.get("First pass size-1"), result.get("First pass size-2")
    if first[0] is None or first[1] is None:
        return
    try:
        first_width, first_height = int(first[0]), int(first[1])
        width, height = int(result.get("Size-1", 512)), int(result.get("Size-2", 512))
        if first_width == 0 or first_height == 0:
            scale = math.sqrt(512 * 512 / (width * height))
            first_width = math.ceil(scale * width / 64) * 64
            first_height = math.ceil(scale * height / 64) * 64
    except (ValueError, ZeroDivisionError, OverflowError):
        return  # A1111 fails here; keep the values as read
    result["Size-1"], result["Size-2"] = first_width, first_height
    result["Hires resize-1"], result["Hires resize-2"] = width, height


def _uses_emphasis(prompt: str, negative: str) -> bool:
    runs = parse_attention(prompt) + parse_attention(negative)
    return any(weight != 1.0 and text != "BREAK" for text, weight in runs)


def _back_compatibility(result: dict[str, InfotextValue]) -> None:
    version = result.get("Version")
    key = _version_key(version) if isinstance(version, str) else None
    if key is None:
        return
    prompt = result.get("Prompt", "")
    if key < _V1_6_0 and isinstance(prompt, str) and "[" in prompt:
        result["Old prompt editing timelines"] = True
    if key < _V1_6_0 and result.get("Sampler", "") in ("DDIM", "PLMS"):
        result["Pad conds v0"] = True
    if key < _V1_7_0_225:
        result["Downcast alphas_cumprod"] = True
    if key < _V1_8_0 and result.get("Refiner"):
        result["Refiner switch by sampling steps"] = True


# PEP 440 versions (the spec's pattern, case-insensitive), as ``packaging.version`` reads them.
_PEP440 = re.compile(
    r"""
    \s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre_l>alpha|beta|preview|pre|rc|a|b|c)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?:-(?P<post_n1>[0-9]+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PRE_RANK = MappingProxyType(
    {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
)
VersionKey = tuple[int, tuple[int, ...], tuple[int, int, int], tuple[int, int], tuple[int, int]]


def _version_key(text: str) -> VersionKey | None:
    """A sort key for A1111's ``Version`` field (``v1.7.0-225-gabc`` reads as 1.7.0.post225)."""
    head = _VERSION_HEAD.match(text)
    match = _PEP440.fullmatch(head.group(1) if head else text)
    if match is None:
        return None
    release = tuple(int(part) for part in match["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    post_number = match["post_n1"] or match["post_n2"]
    has_post = match["post_n1"] is not None or match["post_l"] is not None
    has_dev = match["dev_l"] is not None
    if match["pre_l"] is not None:
        pre = (0, _PRE_RANK[match["pre_l"].lower()], int(match["pre_n"] or 0))
    else:
        pre = (-1, 0, 0) if has_dev and not has_post else (1, 0, 0)
    post = (0, int(post_number or 0)) if has_post else (-1, 0)
    dev = (0, int(match["dev_n"] or 0)) if has_dev else (1, 0)
    return int(match["epoch"] or 0), release, pre, post, dev


# The versions A1111's back-compatibility checks compare with (tests check these keys).
_V1_6_0: VersionKey = (0, (1, 6), (1, 0, 0), (-1, 0), (1, 0))
_V1_7_0_225: VersionKey = (0, (1, 7), (1, 0, 0), (0, 225), (1, 0))  # "v1.7.0-225"
_V1_8_0: VersionKey = (0, (1, 8), (1, 0, 0), (-1, 0), (1, 0))
