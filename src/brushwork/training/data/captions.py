"""Captions: which file holds them, reading them, and the per-step caption pipeline.

The pipeline follows kohya-ss sd-scripts `BaseDataset.process_caption`, in its order:
prefix/suffix, whole-caption dropout, wildcard / first line, split into kept and flexible
tags, shuffle the flexible tags, per-tag dropout, rejoin with ", ".
All randomness comes from the `random.Random` handed in, so an epoch replays exactly.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from brushwork.training.data.spec import CAPTION_EXTENSIONS, SubsetSpec


@dataclass(frozen=True)
class CaptionChoice:
    """Which caption extension a subset uses, and how many images have such a file."""

    extension: str
    matched: int
    other: dict[str, int]
    detected: bool


def choose_caption_extension(subset: SubsetSpec, images: list[Path]) -> CaptionChoice:
    """The subset's explicit extension, or the one (`.txt`/`.caption`) most images have."""
    counts = {
        ext: sum(1 for p in images if _caption_path(p, ext) is not None)
        for ext in CAPTION_EXTENSIONS
    }
    if subset.caption_extension is not None:
        ext = subset.caption_extension
        matched = counts.get(ext, sum(1 for p in images if _caption_path(p, ext) is not None))
        other = {e: n for e, n in counts.items() if e != ext and n}
        return CaptionChoice(ext, matched, other, detected=False)
    best = max(CAPTION_EXTENSIONS, key=lambda e: (counts[e], e == ".txt"))
    other = {e: n for e, n in counts.items() if e != best and n}
    return CaptionChoice(best, counts[best], other, detected=True)


def _caption_path(image: Path, extension: str) -> Path | None:
    """`<stem><ext>`, or kohya's face-crop form with the last 4 `_` fields dropped."""
    candidates = [image.with_name(image.stem + extension)]
    tokens = image.stem.split("_")
    if len(tokens) >= 5:
        candidates.append(image.with_name("_".join(tokens[:-4]) + extension))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def read_caption(
    image: Path, extension: str, *, enable_wildcard: bool = False
) -> tuple[str | None, str | None]:
    """(caption, problem). caption is None when there is no usable caption file.

    kohya reads the first line (all non-empty lines joined by newlines with `enable_wildcard`).
    A file that is not UTF-8 or is empty gives a problem message naming it.
    """
    path = _caption_path(image, extension)
    if path is None:
        return None, None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return None, f"{path}: caption file is not UTF-8 text; it was ignored"
    except OSError as exc:
        return None, f"{path}: caption file cannot be read ({exc.strerror}); it was ignored"
    lines = [line.strip() for line in text.splitlines()]
    if not any(lines):
        return "", f"{path}: caption file is empty; the image trains with an empty caption"
    if enable_wildcard:
        return "\n".join(line for line in lines if line), None
    return lines[0], None


def tag_list(caption: str) -> list[str]:
    """Tags as kohya counts them for `ss_tag_frequency`: split on ",", stripped, lower-cased."""
    return [t.strip().lower() for t in caption.split(",") if t.strip()]


def process_caption(subset: SubsetSpec, caption: str, rng: random.Random, epoch: int) -> str:
    """One training-time caption. `epoch` is 0-based (kohya's 1-based epoch is epoch + 1)."""
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix
    dropped = subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate
    every = subset.caption_dropout_every_n_epochs
    if dropped or (every > 0 and (epoch + 1) % every == 0):
        return ""
    caption = _expand_wildcards(caption, rng) if subset.enable_wildcard else caption.split("\n")[0]
    if subset.shuffle_caption or subset.caption_tag_dropout_rate > 0:
        caption = _shuffle_and_drop(subset, caption, rng)
    if subset.secondary_separator:
        caption = caption.replace(subset.secondary_separator, subset.caption_separator)
    return caption


def _split(text: str, separator: str) -> list[str]:
    return [t.strip() for t in text.split(separator) if t.strip()]


def _shuffle_and_drop(subset: SubsetSpec, caption: str, rng: random.Random) -> str:
    sep = subset.caption_separator
    fixed: list[str] = []
    fixed_suffix: list[str] = []
    marker = subset.keep_tokens_separator
    if marker and marker in caption:
        fixed_part, flex_part = caption.split(marker, 1)
        if marker in flex_part:
            flex_part, suffix_part = flex_part.split(marker, 1)
            fixed_suffix = _split(suffix_part, sep)
        fixed, flex = _split(fixed_part, sep), _split(flex_part, sep)
    else:
        tokens = _split(caption, sep)
        keep = subset.keep_tokens
        fixed, flex = (tokens[:keep], tokens[keep:]) if keep > 0 else ([], tokens)
    if subset.shuffle_caption:
        rng.shuffle(flex)
    rate = subset.caption_tag_dropout_rate
    if rate > 0:
        flex = [t for t in flex if rng.random() >= rate]
    return ", ".join(fixed + flex + fixed_suffix)


_WILDCARD = re.compile(r"\{([^}]+)\}")


def _expand_wildcards(caption: str, rng: random.Random) -> str:
    """kohya's `enable_wildcard`: one random line, then `{a|b|c}` -> one choice; `{{`/`}}` escape."""
    if "\n" in caption:
        caption = rng.choice(caption.split("\n"))
    open_mark, close_mark = "\u2985", "\u2986"
    while open_mark in caption or close_mark in caption:
        open_mark, close_mark = open_mark + "\u2985", close_mark + "\u2986"
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = _WILDCARD.sub(lambda m: rng.choice(m.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")
