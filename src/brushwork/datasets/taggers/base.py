"""What a tagger returns, and how its scores become a caption's tag list.

A tagger (`Tagger`) reads pictures and returns, per picture, scored tags in booru categories
(and/or, for a captioner such as BLIP, a sentence). `select_tags` turns that into the tag list
written to the caption file, with the options of kohya's `tag_images_by_wd14_tagger.py` and
A1111's tagger extension:

- character tags at `character_threshold`, then general tags at `threshold` (score >= the
  threshold), each group sorted by confidence (ties by name): who, then what;
- rating tags (`general`, `sensitive`, ... in WD14; `rating:safe` in DeepDanbooru) are not
  written by default, as kohya's tagger and A1111's DeepBooru do not; `rating=first|last` writes
  the single most likely one first or last (kohya's `--use_rating_tags[_as_last_tag]`);
- `underscores="spaces"` writes `long hair` for `long_hair` (A1111's default) but keeps
  kaomoji such as `^_^` whole; `"keep"` writes the tag as the model names it (kohya's default);
- `undesired` tags are dropped (matched with or without underscores);
- `always_first` tags, when predicted, are moved to the front in the order given (kohya's
  `--always_first_tags`; a trigger word the model cannot predict is added with
  `brushwork dataset tags DIR add TRIGGER --front`).
Tags are not bracket-escaped: captions are training text, not prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Protocol

from PIL import Image

from brushwork.core.errors import ConfigError

# The kaomoji of A1111's WD14 tagger extension whose underscores are part of the face.
KAOMOJI = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3",
        "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
    }
)  # fmt: skip


class TagCategory(IntEnum):
    """Danbooru tag categories as WD14's `selected_tags.csv` numbers them."""

    GENERAL = 0
    ARTIST = 1
    COPYRIGHT = 3
    CHARACTER = 4
    META = 5
    RATING = 9


class Underscores(StrEnum):
    KEEP = "keep"
    SPACES = "spaces"


class RatingPlacement(StrEnum):
    NONE = "none"
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True)
class ScoredTag:
    name: str
    category: TagCategory
    score: float  # a probability in [0, 1]


@dataclass(frozen=True)
class Prediction:
    """A tagger's reading of one picture: scored tags (those at or above the floor asked for,
    plus every rating tag) and/or a caption sentence."""

    tags: tuple[ScoredTag, ...] = ()
    caption: str | None = None


class Tagger(Protocol):
    """Anything that reads pictures into predictions (WD14, DeepDanbooru, BLIP, the probe)."""

    @property
    def name(self) -> str: ...

    def predict(self, images: Sequence[Image.Image], floor: float) -> list[Prediction]:
        """One prediction per RGB picture, keeping tags that score at least `floor`."""
        ...


def _split_tags(text: Sequence[str]) -> tuple[str, ...]:
    return tuple(t.strip() for item in text for t in item.split(",") if t.strip())


@dataclass(frozen=True)
class TaggingOptions:
    threshold: float = 0.35
    character_threshold: float = 0.85
    undesired: tuple[str, ...] = ()
    always_first: tuple[str, ...] = ()
    underscores: Underscores = Underscores.SPACES
    rating: RatingPlacement = RatingPlacement.NONE
    batch_size: int = 8

    def __post_init__(self) -> None:
        for label, value in (
            ("--threshold", self.threshold),
            ("--character-threshold", self.character_threshold),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{label} {value} is outside [0, 1]", hint="e.g. 0.35")
        if self.batch_size < 1:
            raise ConfigError(f"batch size {self.batch_size} must be at least 1")
        object.__setattr__(self, "undesired", _split_tags(self.undesired))
        object.__setattr__(self, "always_first", _split_tags(self.always_first))

    @property
    def floor(self) -> float:
        return min(self.threshold, self.character_threshold)


def spell(tag: str, underscores: Underscores) -> str:
    """The tag as written: underscores to spaces unless asked to keep them or a kaomoji."""
    if underscores is Underscores.KEEP or tag in KAOMOJI:
        return tag
    return tag.replace("_", " ")


def _same(tag: str) -> str:
    return tag if tag in KAOMOJI else tag.replace("_", " ").strip()


def _by_confidence(tags: list[ScoredTag]) -> list[ScoredTag]:
    return sorted(tags, key=lambda tag: (-tag.score, tag.name))


def select_tags(prediction: Prediction, options: TaggingOptions) -> list[str]:
    """The caption tags for one prediction (see the module doc for the rules)."""
    characters = _by_confidence(
        [
            t
            for t in prediction.tags
            if t.category is TagCategory.CHARACTER and t.score >= options.character_threshold
        ]
    )
    general = _by_confidence(
        [
            t
            for t in prediction.tags
            if t.category not in (TagCategory.CHARACTER, TagCategory.RATING)
            and t.score >= options.threshold
        ]
    )
    names = [t.name for t in characters + general]
    ratings = _by_confidence([t for t in prediction.tags if t.category is TagCategory.RATING])
    if ratings and options.rating is RatingPlacement.FIRST:
        names.insert(0, ratings[0].name)
    elif ratings and options.rating is RatingPlacement.LAST:
        names.append(ratings[0].name)
    unwanted = {_same(tag) for tag in options.undesired}
    written = [spell(n, options.underscores) for n in names if _same(n) not in unwanted]
    written = list(dict.fromkeys(written))
    for first in reversed(options.always_first):
        matches = [tag for tag in written if _same(tag) == _same(first)]
        for tag in matches:
            written.remove(tag)
            written.insert(0, tag)
    if prediction.caption:
        written.insert(0, prediction.caption)
    return written


def merge_tags(existing: Sequence[str], new: Sequence[str]) -> list[str]:
    """`existing` then the `new` tags it lacks (compared with or without underscores)."""
    seen = {_same(tag) for tag in existing}
    merged = list(existing)
    for tag in new:
        if _same(tag) not in seen:
            merged.append(tag)
            seen.add(_same(tag))
    return merged
