"""Recognising a shapes-world dataset, and the concept it teaches.

A project that teaches the built-in demo model a new shape (as `brushwork demo dataset` writes
one) has captions in the demo world's wording with one noun: `a red sks on a white background`.
Then `project best` can measure the trained LoRA: how often the trigger draws the shape
(adoption) and how well the base prompts still work (preservation).

`detect_concept` reads the dataset's captions: every caption must be a shapes-world sentence
(`evaluation` draws its prompts in the same wording) and all must use the same noun. A noun
that is a held-out shape (`heart`) is its own trigger; any other noun is a trigger word, and
the shape it stands for is read from the pictures by the demo probe (the shape most pictures
show, more than half of them). Anything else is not a shapes dataset (None).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.datasets.captions import CaptionedImage, read_captions
from brushwork.demo.shapes import ALL_SHAPES, BASE_SHAPES, COLOR_NAMES, HELD_OUT_SHAPES
from brushwork.projects.records import Concept

_COLORS = "|".join(COLOR_NAMES)
SENTENCE = re.compile(
    rf"^an? (?:small )?(?:{_COLORS}) (?:striped )?(?P<noun>[^,]+?) on an? (?:{_COLORS}) "
    r"background$"
)
PROBED_PICTURES = 64  # at most this many pictures are read to find a trigger's shape
MIN_SHARE = 0.5


def probe_shapes(images: Sequence[Image.Image]) -> list[str]:
    """The shape the demo probe reads in each picture."""
    from brushwork.demo.probe import Probe

    return [result.shape for result in Probe.load().predict(list(images))]


def caption_noun(text: str) -> str | None:
    """The noun of a shapes-world caption's first line (None: not such a caption)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    match = SENTENCE.match(lines[0])
    return match["noun"].strip() if match is not None else None


def check_concept(shape: str, trigger: str) -> Concept:
    """A concept the user names (`--concept heart --trigger sks`)."""
    if shape not in ALL_SHAPES:
        raise ConfigError(
            f"--concept {shape!r} is not a shape of the demo world",
            hint=f"one of {', '.join(HELD_OUT_SHAPES)} (held out of the demo model)",
        )
    if not trigger.strip() or "," in trigger:
        raise ConfigError(f"--trigger {trigger!r} must be a word or words without commas")
    return Concept(shape=shape, trigger=trigger.strip(), detected=False, evidence="given")


def detect_concept(
    folder: Path, *, read_shapes: Callable[[Sequence[Image.Image]], list[str]] | None = None
) -> Concept | None:
    """The concept of a shapes-world dataset (see the module docstring), else None."""
    dataset = [item for item in read_captions(folder) if item.text is not None]
    if not dataset:
        return None
    nouns = {caption_noun(item.text or "") for item in dataset}
    if len(nouns) != 1 or None in nouns:
        return None
    (noun,) = nouns
    assert noun is not None
    if noun in HELD_OUT_SHAPES:
        evidence = f"{len(dataset)} captions name the held-out shape {noun!r}"
        return Concept(shape=noun, trigger=noun, detected=True, evidence=evidence)
    if noun in BASE_SHAPES:
        return None  # the demo model knows it already: nothing new is taught
    return _shape_of_trigger(noun, dataset, read_shapes or probe_shapes)


def _shape_of_trigger(
    trigger: str,
    dataset: Sequence[CaptionedImage],
    read_shapes: Callable[[Sequence[Image.Image]], list[str]],
) -> Concept | None:
    images = []
    for item in dataset[:PROBED_PICTURES]:
        with Image.open(item.image) as opened:
            images.append(opened.convert("RGB"))
    counts = Counter(read_shapes(images))
    if not counts:
        return None
    shape, seen = counts.most_common(1)[0]
    if seen / len(images) <= MIN_SHARE or shape not in ALL_SHAPES:
        return None
    evidence = (
        f"every caption says {trigger!r} where a shape's name goes; the probe reads "
        f"{seen} of {len(images)} pictures as a {shape}"
    )
    return Concept(shape=shape, trigger=trigger, detected=True, evidence=evidence)
