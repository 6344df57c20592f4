"""Where model files live: library roots, the folders of each layout, and the default root.

A library root is a folder that holds model folders in one of these shapes:

* an AUTOMATIC1111 install: ``models/Stable-diffusion``, ``models/VAE``, ``models/Lora``,
  ``models/LyCORIS``, ``models/hypernetworks`` and ``embeddings`` (beside ``models``, not in it);
* a ComfyUI install: ``models/checkpoints``, ``models/vae``, ``models/loras``,
  ``models/embeddings``, ``models/hypernetworks``;
* a bare ``models`` folder of either layout (``Stable-diffusion``, ``Lora``, ... or
  ``checkpoints``, ``loras``, ...), with embeddings in ``embeddings`` inside it as SD.Next
  keeps them. brushwork's own default root has this shape.

Every folder that exists is scanned, so one root may mix layouts, and several roots combine.

The default root, used when neither ``--root`` nor ``Settings.roots`` names one: ``./models``
when the current folder is a brushwork checkout (it holds a ``pyproject.toml`` whose
``[project] name`` is ``brushwork``), else ``<Settings.data_dir>/models``. It is created with
the A1111 folders on first use; a root the user names is never created.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings

logger = logging.getLogger(__name__)

CHECKPOINT_EXTENSIONS = frozenset({".ckpt", ".safetensors"})
VAE_EXTENSIONS = frozenset({".pt", ".ckpt", ".safetensors"})
LORA_EXTENSIONS = frozenset({".pt", ".ckpt", ".safetensors"})
HYPERNETWORK_EXTENSIONS = frozenset({".pt"})
EMBEDDING_EXTENSIONS = frozenset({".pt", ".bin", ".safetensors"})
# A1111 takes `<name>.vae.{ckpt,pt,safetensors}` beside checkpoints as VAEs, not checkpoints.
VAE_BESIDE_CHECKPOINT_SUFFIXES = (".vae.ckpt", ".vae.pt", ".vae.safetensors")

EXTENSIONS_BY_KIND: dict[ModelKind, frozenset[str]] = {
    ModelKind.CHECKPOINT: CHECKPOINT_EXTENSIONS,
    ModelKind.VAE: VAE_EXTENSIONS,
    ModelKind.LORA: LORA_EXTENSIONS,
    ModelKind.HYPERNETWORK: HYPERNETWORK_EXTENSIONS,
    ModelKind.EMBEDDING: EMBEDDING_EXTENSIONS,
}


class Layout(StrEnum):
    """Whose folder names a model folder follows."""

    A1111 = "a1111"
    COMFYUI = "comfyui"


@dataclass(frozen=True)
class KindFolder:
    """One model folder of a layout, relative to the models folder (or to the root)."""

    kind: ModelKind
    name: str
    layout: Layout


A1111_FOLDERS = (
    KindFolder(ModelKind.CHECKPOINT, "Stable-diffusion", Layout.A1111),
    KindFolder(ModelKind.VAE, "VAE", Layout.A1111),
    KindFolder(ModelKind.LORA, "Lora", Layout.A1111),
    KindFolder(ModelKind.LORA, "LyCORIS", Layout.A1111),
    KindFolder(ModelKind.HYPERNETWORK, "hypernetworks", Layout.A1111),
)
COMFYUI_FOLDERS = (
    KindFolder(ModelKind.CHECKPOINT, "checkpoints", Layout.COMFYUI),
    KindFolder(ModelKind.VAE, "vae", Layout.COMFYUI),
    KindFolder(ModelKind.LORA, "loras", Layout.COMFYUI),
    KindFolder(ModelKind.EMBEDDING, "embeddings", Layout.COMFYUI),
    KindFolder(ModelKind.HYPERNETWORK, "hypernetworks", Layout.COMFYUI),
)
# the folders brushwork creates in a new default root (A1111 names, embeddings inside it)
DEFAULT_ROOT_FOLDERS = ("Stable-diffusion", "VAE", "Lora", "hypernetworks", "embeddings")


@dataclass(frozen=True)
class ModelFolder:
    """A model folder that exists under a root, and the kind of file it is meant to hold."""

    root: Path
    path: Path  # absolute
    kind: ModelKind
    layout: Layout

    @property
    def relative(self) -> str:
        """The folder relative to its root, with forward slashes (``models/Lora``)."""
        return self.path.relative_to(self.root).as_posix()


def accepts(kind: ModelKind, file_name: str) -> bool:
    """Whether A1111 lists `file_name` in a folder of `kind` (extensions match in any case)."""
    lowered = file_name.lower()
    if kind is ModelKind.CHECKPOINT and lowered.endswith(VAE_BESIDE_CHECKPOINT_SUFFIXES):
        return True  # listed, as a VAE (see expected_kind)
    return PurePath(lowered).suffix in EXTENSIONS_BY_KIND[kind]


def expected_kind(folder_kind: ModelKind, file_name: str) -> ModelKind:
    """The kind a file's place promises: `*.vae.*` beside checkpoints is a VAE."""
    if folder_kind is ModelKind.CHECKPOINT and file_name.lower().endswith(
        VAE_BESIDE_CHECKPOINT_SUFFIXES
    ):
        return ModelKind.VAE
    return folder_kind


def model_folders(root: Path) -> list[ModelFolder]:
    """The model folders that exist under `root`, in a stable order, each real folder once."""
    models_dir = root / "models" if (root / "models").is_dir() else root
    # A1111 keeps embeddings beside `models`; SD.Next and ComfyUI inside it
    a1111_embeddings = KindFolder(ModelKind.EMBEDDING, "embeddings", Layout.A1111)
    candidates: list[tuple[Path, KindFolder]] = [
        *((models_dir / folder.name, folder) for folder in A1111_FOLDERS),
        (root / "embeddings", a1111_embeddings),
        *((models_dir / folder.name, folder) for folder in COMFYUI_FOLDERS),
    ]
    found: list[ModelFolder] = []
    seen: set[str] = set()
    for path, folder in candidates:
        if not path.is_dir():
            continue
        real = os.path.realpath(path)
        if real in seen:  # `models/VAE` and `models/vae` on a case-insensitive disk
            continue
        seen.add(real)
        found.append(ModelFolder(root, path, folder.kind, folder.layout))
    return found


def is_brushwork_checkout(folder: Path) -> bool:
    """True when `folder` holds a pyproject.toml whose ``[project] name`` is brushwork."""
    pyproject = folder / "pyproject.toml"
    try:
        with pyproject.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    project = document.get("project")
    return isinstance(project, dict) and project.get("name") == "brushwork"


def default_root(settings: Settings, cwd: Path | None = None) -> Path:
    """``./models`` in a brushwork checkout, else ``<data_dir>/models`` (see the module doc)."""
    here = Path.cwd() if cwd is None else cwd
    if is_brushwork_checkout(here):
        return here / "models"
    return settings.data_dir / "models"


def create_default_root(root: Path) -> None:
    """Create the default root's folders (A1111 names), leaving existing ones alone."""
    for name in DEFAULT_ROOT_FOLDERS:
        (root / name).mkdir(parents=True, exist_ok=True)


def resolve_roots(
    settings: Settings, roots: tuple[Path, ...] = (), *, cwd: Path | None = None
) -> tuple[Path, ...]:
    """The library roots to use: `roots` if given, else `settings.roots`, else the default root.

    Named roots must exist (a typo should not silently list nothing); the default root is
    created on first use. Duplicates are dropped, order kept.
    """
    named = roots or settings.roots
    if not named:
        root = default_root(settings, cwd).expanduser().absolute()
        if not root.is_dir():
            logger.info("creating the default model library at %s", root)
            create_default_root(root)
        return (root,)
    unique: list[Path] = []
    for root in named:
        absolute = root.expanduser().absolute()
        if not absolute.is_dir():
            raise ConfigError(
                f"library root {root} is not a folder",
                hint="pass an A1111 or ComfyUI install, or a models folder, with --root",
            )
        if absolute not in unique:
            unique.append(absolute)
    return tuple(unique)
