"""Where the tools' inputs come from and their outputs go: the model library.

An input is named by a path to a file, or by anything `Library.find` understands (a library
name, an A1111 title, a relative path, a hash); its hash comes from the library's cache when
it is there. An output is named by a path (it has a folder part, or starts with `.` or `~`), or
by a bare name: the file then goes into the library folder of its kind in the first root
(``Stable-diffusion`` / ``checkpoints`` for checkpoints, ``Lora`` / ``loras`` for LoRAs), created
when missing, so `models list` shows it. A name without a known extension gets `.safetensors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.library.catalog import Library
from brushwork.library.layout import model_folders, resolve_roots
from brushwork.modeltools.common import ModelInput

KNOWN_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# the folder brushwork creates for a kind when a root has none (A1111's names)
NEW_FOLDERS = {
    ModelKind.CHECKPOINT: "Stable-diffusion",
    ModelKind.LORA: "Lora",
    ModelKind.VAE: "VAE",
}


def looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith((".", "~"))


def with_suffix(name: str) -> str:
    return name if name.lower().endswith(KNOWN_SUFFIXES) else name + ".safetensors"


@dataclass(frozen=True)
class ModelLocator:
    """Finds inputs and places outputs in the library of `settings` (or of `roots`)."""

    settings: Settings
    roots: tuple[Path, ...] = ()

    def find(self, query: str, kind: ModelKind) -> ModelInput:
        """The model `query` names: a file path, else a library lookup (hash from the cache)."""
        path = Path(query).expanduser()
        if path.is_file():
            return ModelInput.of(path)
        with Library.open(self.settings, self.roots) as library:
            entry = library.find(query, kind=kind)
            entry = library.hash_entry(entry)
        name = entry.relative_path.removeprefix(entry.folder + "/")
        return ModelInput(entry.path, name, entry.sha256)

    def folder_for(self, kind: ModelKind) -> Path:
        """The library folder of `kind` in the first root (created when there is none)."""
        root = resolve_roots(self.settings, self.roots)[0]
        for folder in model_folders(root):
            if folder.kind is kind:
                return folder.path
        models = root / "models" if (root / "models").is_dir() else root
        folder_path = models / NEW_FOLDERS[kind]
        folder_path.mkdir(parents=True, exist_ok=True)
        return folder_path

    def output(
        self, name: str | None, kind: ModelKind, default_name: str, *, beside: Path | None = None
    ) -> Path:
        """Where an output named `name` goes (`default_name` when None; see the module doc).

        With `beside`, a default-named output goes into that file's folder instead.
        """
        if name is not None and looks_like_path(name):
            return Path(with_suffix(str(Path(name).expanduser())))
        if name is None and beside is not None:
            return beside.parent / with_suffix(default_name)
        return self.folder_for(kind) / with_suffix(name or default_name)
