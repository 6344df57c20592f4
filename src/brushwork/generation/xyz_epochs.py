"""A training run's LoRA files, in epoch order, and a library that can apply them from anywhere.

kohya-ss sd-scripts and ``brushwork train lora`` name what they save ``<name>-000001.safetensors``
(one file per saved epoch, six digits), ``<name>-step00000500.safetensors`` (per step, eight
digits) and ``<name>.safetensors`` (the final weights). `find_epoch_files` takes the run's
output folder, a glob, or one of its files, and returns the epoch files (else the step files)
in order, then the final file.

The run's folder is usually outside the model library; `LibraryWithLoraFiles` answers for those
files as if they were in a LoRA folder, so that the generator finds, hashes and records them
(``Lora hashes``) exactly as library LoRAs. `lora_query` is the name that finds one file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.generation.xyz_axes import AXIS_TYPES, Axis
from brushwork.library.catalog import Library, LibraryScan
from brushwork.library.entry import ModelEntry
from brushwork.library.layout import Layout, ModelFolder
from brushwork.library.walk import FolderListing, natural_key

EPOCH_STEM = re.compile(r"^(?P<run>.+)-(?P<number>\d{6})$")
STEP_STEM = re.compile(r"^(?P<run>.+)-step(?P<number>\d{8})$")
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class EpochFile:
    """One file a training run saved."""

    path: Path
    run: str  # the run's output name
    epoch: int | None = None  # an epoch file's epoch
    step: int | None = None  # a step file's step; both None: the final file

    @property
    def name(self) -> str:
        return self.path.name.rsplit(".", 1)[0]

    @property
    def is_final(self) -> bool:
        return self.epoch is None and self.step is None


def epoch_file(path: Path) -> EpochFile:
    """What a file's name says about it (any other name: a final file of that name)."""
    stem = path.name.rsplit(".", 1)[0]
    if (match := EPOCH_STEM.match(stem)) is not None:
        return EpochFile(path, match["run"], epoch=int(match["number"]))
    if (match := STEP_STEM.match(stem)) is not None:
        return EpochFile(path, match["run"], step=int(match["number"]))
    return EpochFile(path, stem)


def _glob(pattern: Path) -> list[Path]:
    """The files a pattern matches (its parts up to the first with a wildcard are the base)."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARACTERS))
    base = Path(*parts[:first]) if first else Path()
    return sorted(base.glob(str(Path(*parts[first:]))))


def _candidates(where: str) -> tuple[list[Path], str | None]:
    """Model files a folder, glob or file names, and the run a file names."""
    path = Path(where).expanduser()
    if any(char in where for char in GLOB_CHARACTERS) and not path.exists():
        return [p for p in _glob(path) if p.is_file()], None
    if path.is_dir():
        return [p for p in path.iterdir() if p.is_file()], None
    if path.is_file():
        return [p for p in path.parent.iterdir() if p.is_file()], epoch_file(path).run
    raise ConfigError(
        f"{where}: no such folder or file, and no file matches it",
        hint="give the training run's output folder, a glob like 'out/name-*.safetensors', "
        "or one of its files",
    )


def find_epoch_files(where: str | Path, *, run: str | None = None) -> tuple[EpochFile, ...]:
    """A run's epoch files (else its step files) in order, then its final file."""
    paths, named = _candidates(str(where))
    wanted = run or named
    files = [epoch_file(p) for p in paths if p.name.lower().endswith(LORA_SUFFIXES)]
    runs = sorted({f.run for f in files}, key=natural_key)
    if wanted is not None:
        files = [f for f in files if f.run == wanted]
    elif len(runs) > 1:
        raise ConfigError(
            f"{where} holds the files of several runs: {', '.join(runs)}",
            hint="pick one with --name NAME, or give a glob or one of its files",
        )
    saved = [f for f in files if f.epoch is not None] or [f for f in files if f.step is not None]
    final = [f for f in files if f.is_final]
    if not saved and not final:
        detail = f" of run {wanted!r}" if wanted else ""
        raise ConfigError(
            f"no LoRA files{detail} in {where}",
            hint="runs are saved as NAME-000001.safetensors ... NAME.safetensors"
            + (f"; runs found: {', '.join(runs)}" if runs else ""),
        )
    saved.sort(key=lambda f: (f.epoch if f.epoch is not None else f.step or 0, f.path.name))
    return (*saved, *sorted(final, key=lambda f: f.path.name))


def epoch_axis(files: Sequence[EpochFile]) -> Axis:
    """A ``lora`` axis over a run's files (values: their paths; labels: their names)."""
    lora = next(axis_type for axis_type in AXIS_TYPES if axis_type.key == "lora")
    return Axis(lora, tuple(str(f.path) for f in files), ", ".join(f.name for f in files))


class LibraryWithLoraFiles(Library):
    """A library that also lists some LoRA files kept outside it (a run's output folder).

    Each file is listed as if its folder were a LoRA folder whose root is the folder's parent,
    so its library path is ``<folder name>/<file>``. Files already in the library are left as
    they are."""

    def __init__(self, library: Library, lora_files: Sequence[Path]) -> None:
        super().__init__(library.roots, library.index)
        self.lora_files = tuple(dict.fromkeys(path.absolute() for path in lora_files))

    def scan(self) -> LibraryScan:
        scan = super().scan()
        inside = {entry.path.resolve() for entry in scan.entries}
        by_folder: dict[Path, list[str]] = {}
        for path in self.lora_files:
            if path.resolve() not in inside:
                by_folder.setdefault(path.parent, []).append(path.name)
        extra: list[ModelEntry] = []
        for folder, names in by_folder.items():
            model_folder = ModelFolder(folder.parent, folder, ModelKind.LORA, Layout.A1111)
            listing = FolderListing(folder, tuple(sorted(names, key=natural_key)))
            extra += self.scan_listing(model_folder, listing)
        return replace(scan, entries=scan.entries + tuple(extra))


def lora_query(library: Library, path: Path, scan: LibraryScan | None = None) -> str:
    """The shortest name that finds `path` among the library's LoRAs: its file stem, else its
    path in its folder, else its library path (a stem several files share)."""
    scan = scan or library.scan()
    resolved = path.resolve()
    entry = next((e for e in scan.entries if e.path.resolve() == resolved), None)
    if entry is None:
        raise ConfigError(f"{path} is not in the library", hint="add its folder as a LoRA file")
    if entry.kind is not ModelKind.LORA:
        reason = entry.identity.error or f"it is a {entry.kind_label} file"
        raise ConfigError(f"{path} cannot be used as a LoRA: {reason}")
    in_folder = entry.relative_path.removeprefix(entry.folder + "/").rsplit(".", 1)[0]
    for query in (entry.name, in_folder, entry.relative_path.rsplit(".", 1)[0]):
        try:
            found = library.find(query, kind=ModelKind.LORA, scan=scan)
        except BrushworkError:  # not found, or ambiguous: try a longer name
            continue
        if found.path.resolve() == resolved:
            return query
    return entry.relative_path
