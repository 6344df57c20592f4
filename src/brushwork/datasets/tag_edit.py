"""Editing the tags of a whole dataset: add, remove, replace, dedupe, sort, and statistics.

Every edit is a pure function over one caption line's tag list, applied to every line of every
caption file under a folder. `plan_edit` lists the files whose tags change (before -> after
text) without writing; `apply_changes` writes them through the undo journal (atomic writes,
previous bytes kept), so `journal.undo_last` takes the change back byte for byte.

Meanings, chosen to match kohya-ss sd-scripts' captions:

- `add --front` puts the tags at position 0 (moving them there if they are already present), so
  a trigger word is the first token and `keep_tokens = 1` keeps it fixed while the other tags
  are shuffled. Without `--front` a missing tag is appended. Images without a caption file get
  one.
- `keep_tokens N` (as kohya's): the first N tags of each line are fixed. `sort` leaves them in
  place and sorts the rest.
- `remove --pattern` treats each TAG as an `fnmatch` glob, case-sensitive (`* hair`, `*_eyes`);
  without it a tag must match exactly.
- `replace OLD NEW`: NEW may hold several comma-separated tags, or none (then OLD is removed);
  a NEW tag already in the caption is not repeated.
- `dedupe` drops repeated and empty tags and normalises the spacing of every caption; the other
  edits rewrite (normalised) only the files whose tags change.
- `sort --by frequency`: most frequent across the dataset first, ties by name; `--by name`:
  alphabetical, case-insensitive.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from brushwork.core.errors import ConfigError
from brushwork.datasets.captions import CaptionedImage, CaptionText, encode_caption, parse_tags
from brushwork.datasets.journal import FileWrite, JournalEntry, apply_writes

LineEdit = Callable[[list[str]], list[str]]


class SortOrder(StrEnum):
    FREQUENCY = "frequency"
    NAME = "name"


@dataclass(frozen=True)
class CaptionChange:
    """One caption file an edit changes: its text before (None: no file yet) and after."""

    image: Path
    caption_file: Path
    before: str | None
    after: str

    @property
    def created(self) -> bool:
        return self.before is None


@dataclass(frozen=True)
class TagCount:
    tag: str
    images: int
    share: float  # of all images in the dataset


def tag_counts(dataset: Iterable[CaptionedImage]) -> dict[str, int]:
    """How many images carry each tag (a tag counts once per image), most frequent first,
    ties by name: what `stats --json` prints and kohya's `ss_tag_frequency` counts."""
    counter: Counter[str] = Counter()
    for item in dataset:
        caption = item.caption
        if caption is not None:
            counter.update(caption.unique_tags())
    return dict(sorted(counter.items(), key=lambda pair: (-pair[1], pair[0])))


def feature_tags(dataset: Sequence[CaptionedImage], min_share: float = 0.5) -> list[TagCount]:
    """Tags present in more than `min_share` of the images: for a character LoRA, the features
    the LoRA should absorb (hair, eyes...) and so candidates to remove from the captions."""
    if not 0.0 <= min_share < 1.0:
        raise ConfigError(f"--min-share {min_share} is outside [0, 1)", hint="e.g. 0.5 for 50%")
    total = len(dataset)
    if total == 0:
        return []
    return [
        TagCount(tag, count, count / total)
        for tag, count in tag_counts(dataset).items()
        if count / total > min_share
    ]


def add_tags(new_tags: Sequence[str], *, front: bool = False) -> LineEdit:
    wanted = _clean(new_tags, "add")

    def edit(tags: list[str]) -> list[str]:
        if front:
            return list(wanted) + [t for t in tags if t not in wanted]
        return tags + [t for t in wanted if t not in tags]

    return edit


def remove_tags(targets: Sequence[str], *, pattern: bool = False) -> LineEdit:
    wanted = _clean(targets, "remove")

    def matches(tag: str) -> bool:
        if pattern:
            return any(fnmatch.fnmatchcase(tag, glob) for glob in wanted)
        return tag in wanted

    return lambda tags: [t for t in tags if not matches(t)]


def replace_tag(old: str, new: str) -> LineEdit:
    (old_tag,) = _clean([old], "replace")
    replacement = parse_tags(new)

    def edit(tags: list[str]) -> list[str]:
        if old_tag not in tags:
            return tags
        result: list[str] = []
        for tag in tags:
            for item in replacement if tag == old_tag else [tag]:
                if item not in result:
                    result.append(item)
        return result

    return edit


def dedupe(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def sort_tags(order: SortOrder, counts: dict[str, int], *, keep_tokens: int = 0) -> LineEdit:
    def key(tag: str) -> tuple[int, str, str]:
        rank = -counts.get(tag, 0) if order is SortOrder.FREQUENCY else 0
        return rank, tag.casefold(), tag

    def edit(tags: list[str]) -> list[str]:
        fixed, rest = tags[:keep_tokens], tags[keep_tokens:]
        return fixed + sorted(rest, key=key)

    return edit


def _clean(tags: Sequence[str], action: str) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(t for tag in tags for t in parse_tags(tag)))
    if not cleaned:
        raise ConfigError(f"`{action}` needs at least one tag", hint="e.g. `add sks --front`")
    return cleaned


def plan_edit(
    dataset: Iterable[CaptionedImage],
    edit: LineEdit,
    *,
    create_missing: bool = False,
    normalise_all: bool = False,
) -> list[CaptionChange]:
    """The caption files `edit` changes, with their text before and after. Nothing is written.

    `create_missing`: images without a caption file (or with an empty one) get `edit([])`.
    `normalise_all`: also list files whose only change is spacing or empty tags."""
    changes = []
    for item in dataset:
        caption = item.caption
        if caption is None or not caption.lines:
            if not create_missing:
                continue
            lines: tuple[tuple[str, ...], ...] = (tuple(edit([])),)
            new = CaptionText(lines, True if caption is None else caption.trailing_newline)
        else:
            lines = tuple(tuple(edit(list(line))) for line in caption.lines)
            new = CaptionText(lines, caption.trailing_newline)
            if lines == caption.lines and not normalise_all:
                continue
        after = new.render()
        if after != item.text and (item.text is not None or after):
            changes.append(CaptionChange(item.image, item.caption_file, item.text, after))
    return changes


def apply_changes(
    folder: Path, changes: Sequence[CaptionChange], label: str
) -> JournalEntry | None:
    """Write the changed captions atomically, recording their previous bytes for undo."""
    writes = [FileWrite(change.caption_file, encode_caption(change.after)) for change in changes]
    return apply_writes(folder, writes, label)


class EditAction(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"
    DEDUPE = "dedupe"
    SORT = "sort"


@dataclass(frozen=True)
class TagEditRequest:
    """One dataset-wide tag edit, as the CLI, the server and projects ask for it.

    `tags`: the TAGs of add/remove, or (OLD, NEW) for replace."""

    action: EditAction
    tags: tuple[str, ...] = ()
    front: bool = False
    pattern: bool = False
    order: SortOrder = SortOrder.FREQUENCY
    keep_tokens: int = 0

    def __post_init__(self) -> None:
        if self.keep_tokens < 0:
            raise ConfigError(f"--keep-tokens {self.keep_tokens} is negative")
        if self.action is EditAction.REPLACE and len(self.tags) != 2:
            raise ConfigError(
                "`replace` takes exactly two values, OLD and NEW",
                hint='e.g. `replace "long_hair" "long hair"`',
            )
        if self.action in (EditAction.DEDUPE, EditAction.SORT) and self.tags:
            raise ConfigError(f"`{self.action}` takes no tags (got {', '.join(self.tags)})")

    @property
    def label(self) -> str:
        """A short description for the undo journal and messages: `add sks --front`."""
        words = [self.action.value, *self.tags]
        if self.front:
            words.append("--front")
        if self.pattern:
            words.append("--pattern")
        if self.action is EditAction.SORT:
            words.append(f"--by {self.order.value}")
        if self.keep_tokens and self.action is EditAction.SORT:
            words.append(f"--keep-tokens {self.keep_tokens}")
        return " ".join(words)


@dataclass(frozen=True)
class TagEditResult:
    request: TagEditRequest
    changes: tuple[CaptionChange, ...]
    written: bool  # False for a dry run (or when nothing changed)


def line_edit(request: TagEditRequest, dataset: Sequence[CaptionedImage]) -> LineEdit:
    """The per-line function that carries out `request` (sort needs the dataset's counts)."""
    match request.action:
        case EditAction.ADD:
            return add_tags(request.tags, front=request.front)
        case EditAction.REMOVE:
            return remove_tags(request.tags, pattern=request.pattern)
        case EditAction.REPLACE:
            return replace_tag(request.tags[0], request.tags[1])
        case EditAction.DEDUPE:
            return dedupe
        case EditAction.SORT:
            return sort_tags(request.order, tag_counts(dataset), keep_tokens=request.keep_tokens)


def edit_dataset_tags(
    folder: Path,
    dataset: Sequence[CaptionedImage],
    request: TagEditRequest,
    *,
    dry_run: bool = False,
) -> TagEditResult:
    """Plan `request` over `dataset` (read from `folder`) and, unless `dry_run`, write it."""
    changes = plan_edit(
        dataset,
        line_edit(request, dataset),
        create_missing=request.action is EditAction.ADD,
        normalise_all=request.action is EditAction.DEDUPE,
    )
    written = False
    if changes and not dry_run:
        written = apply_changes(folder, changes, request.label) is not None
    return TagEditResult(request, tuple(changes), written)
