"""Caption files beside images: finding them, and reading and writing tag lists.

A caption is the text file with the image's stem and the caption extension (`.txt` by default,
kohya's `caption_extension`) in the image's folder. Its text is one comma-separated tag list
per line; kohya trains on the first line (all lines with `enable_wildcard`), so every line is
edited alike. A tag keeps its spelling: matching is exact (case and underscores included), and
only the spacing around commas is normalised, to `", "`; empty tags are dropped.

Folders are walked recursively (kohya's `<repeats>_<name>` subfolders), skipping hidden folders
such as the undo journal `.brushwork-tags/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.errors import ConfigError
from brushwork.training.data.spec import IMAGE_EXTENSIONS

DEFAULT_CAPTION_EXTENSION = ".txt"
SEPARATOR = ", "


def check_extension(extension: str) -> str:
    """`.txt`, `txt` -> `.txt`; refuses image extensions and empty or path-like values."""
    cleaned = extension.strip()
    if cleaned and not cleaned.startswith("."):
        cleaned = "." + cleaned
    if len(cleaned) < 2 or "/" in cleaned or "\\" in cleaned:
        raise ConfigError(f"caption extension {extension!r} is not a file extension")
    if cleaned.lower() in IMAGE_EXTENSIONS:
        raise ConfigError(
            f"caption extension {cleaned} is an image extension",
            hint="captions are text files: use .txt or .caption",
        )
    return cleaned


def _visible(path: Path, top: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(top).parts)


def walk_files(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Files under `folder` (recursively, hidden folders and files skipped) whose extension is
    one of `extensions` (any case), sorted by path."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder", hint="give the folder that holds the images")
    wanted = {ext.lower() for ext in extensions}
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in wanted and path.is_file() and _visible(path, folder)
    )


def list_images(folder: Path) -> list[Path]:
    """The training images under `folder` (kohya's image extensions), sorted by path."""
    return walk_files(folder, IMAGE_EXTENSIONS)


def caption_path(image: Path, extension: str = DEFAULT_CAPTION_EXTENSION) -> Path:
    """`<folder>/<stem><extension>`: where kohya and A1111 look for the image's caption."""
    return image.with_name(image.stem + extension)


def parse_tags(line: str) -> list[str]:
    """`"a ,b,, c "` -> `["a", "b", "c"]`: split on commas, strip, drop empty tags."""
    return [tag.strip() for tag in line.split(",") if tag.strip()]


def format_tags(tags: Sequence[str]) -> str:
    return SEPARATOR.join(tags)


@dataclass(frozen=True)
class CaptionText:
    """A caption file's text as tag lists, one per non-empty line."""

    lines: tuple[tuple[str, ...], ...]
    trailing_newline: bool = True

    @classmethod
    def parse(cls, text: str) -> CaptionText:
        rows = tuple(tuple(parse_tags(line)) for line in text.splitlines() if line.strip())
        return cls(rows, text.endswith("\n"))

    @classmethod
    def single(cls, tags: Sequence[str]) -> CaptionText:
        return cls((tuple(tags),))

    @property
    def tags(self) -> tuple[str, ...]:
        """Every tag of every line, in order (a tag may repeat across lines)."""
        return tuple(tag for line in self.lines for tag in line)

    def unique_tags(self) -> list[str]:
        return list(dict.fromkeys(self.tags))

    def render(self) -> str:
        body = "\n".join(format_tags(line) for line in self.lines if line)
        return body + "\n" if body and self.trailing_newline else body


def decode_caption(data: bytes, path: Path) -> str:
    """Caption bytes as text (UTF-8, a BOM allowed); a ConfigError names a file that is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: caption file is not UTF-8 text", hint="re-save it as UTF-8"
        ) from exc


@dataclass(frozen=True)
class CaptionedImage:
    """One image and its caption file (`text` is None when there is no caption file yet)."""

    image: Path
    caption_file: Path
    raw: bytes | None
    text: str | None

    @property
    def caption(self) -> CaptionText | None:
        return None if self.text is None else CaptionText.parse(self.text)


def read_captions(
    folder: Path, extension: str = DEFAULT_CAPTION_EXTENSION
) -> Iterator[CaptionedImage]:
    """Every image under `folder` with its caption file's bytes and text (None when absent)."""
    for image in list_images(folder):
        path = caption_path(image, extension)
        raw = path.read_bytes() if path.is_file() else None
        text = None if raw is None else decode_caption(raw, path)
        yield CaptionedImage(image, path, raw, text)


def encode_caption(text: str) -> bytes:
    return text.encode("utf-8")
