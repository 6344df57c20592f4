"""Extra-network tags in prompts: ``<lora:name:0.8>``, ``<hypernet:name:0.5>`` and the like.

Reads tags the way A1111 (v1.10, ``modules/extra_networks.py`` and the built-in Lora and
hypernetwork extra networks) reads them:

* A tag is ``<`` + kind (word characters) + ``:`` + arguments (anything up to the next ``>``,
  at least one character) + ``>``. Every tag is removed from the prompt; what remains is the text
  A1111 encodes (it scans only the positive prompt).
* The arguments are split on ``:``; an item with exactly one ``=`` is a named argument, anything
  else is positional.
* ``lora`` (and its alias ``lyco``): name, text-encoder multiplier (default 1.0), UNet multiplier
  (default: the text-encoder one), dynamic dim (default none), positionally; the named arguments
  ``te=``, ``unet=``, ``dyn=`` override the positional ones.
* ``hypernet``: name, multiplier (default 1.0), read from the items as written (named or not).
* Other kinds keep their arguments; the name is the first positional one, multipliers are 1.0.

Where A1111 raises (a multiplier ``float()`` cannot read, a lora tag without a name), the
reference keeps the default and lists the problem in ``NetworkRef.problems``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["NetworkRef", "extract_networks"]

_HEAD = re.compile(r"<(\w+):")
_ALIASES = MappingProxyType({"lyco": "lora"})


@dataclass(frozen=True)
class NetworkRef:
    """One extra-network tag of a prompt.

    ``kind`` is canonical (``lyco`` reads as ``lora``); ``tag`` is the kind as written.
    ``te`` / ``unet`` are the text-encoder and UNet multipliers, ``dyn`` the dynamic dim.
    ``positional`` and ``named`` are the raw arguments (named in order written; the last one of
    a name wins, as in A1111); ``text`` is the whole tag. ``problems`` says what could not be read.
    """

    kind: str
    tag: str
    name: str
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None
    positional: tuple[str, ...] = ()
    named: tuple[tuple[str, str], ...] = ()
    text: str = ""
    problems: tuple[str, ...] = ()


def extract_networks(prompt: str) -> tuple[str, list[NetworkRef]]:
    """The prompt without its ``<kind:args>`` tags, and one reference per tag, in order.

    >>> text, refs = extract_networks("a cat <lora:fluffy:0.6>")
    >>> text, refs[0].name, refs[0].te, refs[0].unet
    ('a cat ', 'fluffy', 0.6, 0.6)
    """
    kept: list[str] = []
    refs: list[NetworkRef] = []
    done = 0  # everything before this index is either kept or part of a tag
    search = 0
    closer = -1  # the next ">" at or after the current search (cached: linear time)
    while (start := prompt.find("<", search)) >= 0:
        head = _HEAD.match(prompt, start)
        search = start + 1
        if head is None or head.end() >= len(prompt) or prompt[head.end()] == ">":
            continue
        if closer < head.end():
            closer = prompt.find(">", head.end())
            if closer < 0:
                break
        kept.append(prompt[done:start])
        refs.append(
            _reference(head.group(1), prompt[head.end() : closer], prompt[start : closer + 1])
        )
        done = search = closer + 1
    kept.append(prompt[done:])
    return "".join(kept), refs


def _reference(tag: str, arguments: str, text: str) -> NetworkRef:
    items = arguments.split(":")
    positional: list[str] = []
    named: list[tuple[str, str]] = []
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named.append((parts[0], parts[1]))
        else:
            positional.append(item)
    kind = _ALIASES.get(tag, tag)
    problems: list[str] = []
    dyn = None
    if kind == "lora":
        name, te, unet, dyn = _lora_arguments(positional, dict(named), problems)
    elif kind == "hypernet":
        name = items[0]
        te = unet = _number(items[1], "multiplier", problems) if len(items) > 1 else 1.0
    else:
        name, te, unet = (positional[0] if positional else ""), 1.0, 1.0
    return NetworkRef(
        kind=kind,
        tag=tag,
        name=name,
        te=te,
        unet=unet,
        dyn=dyn,
        positional=tuple(positional),
        named=tuple(named),
        text=text,
        problems=tuple(problems),
    )


def _lora_arguments(
    positional: list[str], named: dict[str, str], problems: list[str]
) -> tuple[str, float, float, int | None]:
    if not positional:
        problems.append("no network name (the first argument that is not key=value)")
    name = positional[0] if positional else ""
    te = _number(positional[1], "te", problems) if len(positional) > 1 else 1.0
    if "te" in named:
        te = _number(named["te"], "te", problems, te)
    unet = _number(positional[2], "unet", problems, te) if len(positional) > 2 else te
    if "unet" in named:
        unet = _number(named["unet"], "unet", problems, unet)
    dyn = _integer(positional[3], problems) if len(positional) > 3 else None
    if "dyn" in named:
        dyn = _integer(named["dyn"], problems, dyn)
    return name, te, unet, dyn


def _number(text: str, what: str, problems: list[str], default: float = 1.0) -> float:
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{what} multiplier {text!r} is not a number")
        return default
    if not math.isfinite(value):
        problems.append(f"{what} multiplier {text!r} is not finite")
        return default
    return value


def _integer(text: str, problems: list[str], default: int | None = None) -> int | None:
    try:
        return int(text)
    except ValueError:
        problems.append(f"dyn {text!r} is not an integer")
        return default
