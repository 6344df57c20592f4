"""Tagging a folder: every image gets a caption file from a tagger.

By default an image that already has a (non-empty) caption is left alone and reported;
`overwrite` replaces the caption, `append` adds the new tags that are not there yet to each
of its lines. All files are written at the end through the undo journal, as one change, so
`brushwork dataset tags DIR undo` takes a tagging run back byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from brushwork.datasets.captions import (
    DEFAULT_CAPTION_EXTENSION,
    CaptionedImage,
    CaptionText,
    read_captions,
)
from brushwork.datasets.images import ImageLoadError, LoadedImage, load_image
from brushwork.datasets.tag_edit import CaptionChange, apply_changes
from brushwork.datasets.taggers.base import Tagger, TaggingOptions, merge_tags, select_tags

Progress = Callable[[int, int], None]


class ExistingCaptions(StrEnum):
    SKIP = "skip"
    OVERWRITE = "overwrite"
    APPEND = "append"


class TagStatus(StrEnum):
    WRITTEN = "written"  # (or, in a dry run, would be)
    UNCHANGED = "unchanged"  # the caption already says exactly this
    SKIPPED = "skipped"  # has a caption; neither overwrite nor append
    FAILED = "failed"  # the image cannot be read


@dataclass(frozen=True)
class TaggedImage:
    image: Path
    caption_file: Path
    status: TagStatus
    tags: tuple[str, ...] = ()  # what the tagger chose
    caption: str | None = None  # the caption file's new text
    message: str | None = None


@dataclass(frozen=True)
class TaggingReport:
    folder: Path
    tagger: str
    images: tuple[TaggedImage, ...]
    written: bool

    def count(self, status: TagStatus) -> int:
        return sum(1 for item in self.images if item.status is status)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "tagger": self.tagger,
            "written": self.written,
            "counts": {status.value: self.count(status) for status in TagStatus},
            "images": [
                {
                    "image": str(item.image),
                    "caption_file": str(item.caption_file),
                    "status": item.status.value,
                    "tags": list(item.tags),
                    "message": item.message,
                }
                for item in self.images
            ],
        }


def _new_text(item: CaptionedImage, tags: Sequence[str], mode: ExistingCaptions) -> str:
    caption = item.caption
    if mode is ExistingCaptions.APPEND and caption is not None and caption.lines:
        lines = tuple(tuple(merge_tags(line, tags)) for line in caption.lines)
        return CaptionText(lines, caption.trailing_newline).render()
    return CaptionText.single(tags).render()


def _tag_batch(
    batch: list[CaptionedImage],
    tagger: Tagger,
    options: TaggingOptions,
    mode: ExistingCaptions,
) -> list[TaggedImage]:
    loaded: list[tuple[CaptionedImage, LoadedImage]] = []
    results: dict[Path, TaggedImage] = {}
    for item in batch:
        try:
            loaded.append((item, load_image(item.image)))
        except ImageLoadError as exc:
            results[item.image] = TaggedImage(
                item.image, item.caption_file, TagStatus.FAILED, message=str(exc)
            )
    if loaded:
        predictions = tagger.predict([pic.image for _, pic in loaded], options.floor)
        for (item, _), prediction in zip(loaded, predictions, strict=True):
            tags = tuple(select_tags(prediction, options))
            if not tags:
                results[item.image] = TaggedImage(
                    item.image,
                    item.caption_file,
                    TagStatus.UNCHANGED,
                    message="no tag reached the thresholds",
                )
                continue
            text = _new_text(item, tags, mode)
            status = TagStatus.UNCHANGED if text == item.text else TagStatus.WRITTEN
            results[item.image] = TaggedImage(item.image, item.caption_file, status, tags, text)
    return [results[item.image] for item in batch]


def tag_folder(
    folder: Path,
    tagger: Tagger,
    options: TaggingOptions | None = None,
    *,
    existing: ExistingCaptions = ExistingCaptions.SKIP,
    extension: str = DEFAULT_CAPTION_EXTENSION,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> TaggingReport:
    """Tag every image under `folder` with `tagger`, writing `<stem><extension>` files."""
    options = options or TaggingOptions()
    dataset = list(read_captions(folder, extension))
    report: list[TaggedImage] = []
    pending: list[CaptionedImage] = []
    for item in dataset:
        caption = item.caption
        if existing is ExistingCaptions.SKIP and caption is not None and caption.lines:
            message = f"{item.caption_file.name} exists (use --overwrite or --append)"
            report.append(
                TaggedImage(item.image, item.caption_file, TagStatus.SKIPPED, message=message)
            )
        else:
            pending.append(item)
    for start in range(0, len(pending), options.batch_size):
        report += _tag_batch(pending[start : start + options.batch_size], tagger, options, existing)
        if progress is not None:
            progress(min(start + options.batch_size, len(pending)), len(pending))
    order = {item.image: index for index, item in enumerate(dataset)}
    report.sort(key=lambda entry: order[entry.image])
    by_image = {item.image: item for item in dataset}
    changes = [
        CaptionChange(e.image, e.caption_file, by_image[e.image].text, e.caption)
        for e in report
        if e.status is TagStatus.WRITTEN and e.caption is not None
    ]
    written = False
    if changes and not dry_run:
        written = apply_changes(folder, changes, f"tag --tagger {tagger.name}") is not None
    return TaggingReport(folder, tagger.name, tuple(report), written)
