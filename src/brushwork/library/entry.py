"""One model file in the library: where it is, what it is, its hashes, sidecars and problems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brushwork.core.hashing import autov2
from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.library.identify import Identity
from brushwork.library.layout import Layout
from brushwork.library.sidecars import Sidecars
from brushwork.library.walk import display_name

INVALID = "invalid"  # the `kind` a listing shows for a file that is not a usable model

# where each kind belongs, per layout (relative to the models folder; A1111 embeddings: root)
HOME_FOLDERS: dict[Layout, dict[ModelKind, str]] = {
    Layout.A1111: {
        ModelKind.CHECKPOINT: "models/Stable-diffusion",
        ModelKind.VAE: "models/VAE",
        ModelKind.LORA: "models/Lora",
        ModelKind.HYPERNETWORK: "models/hypernetworks",
        ModelKind.EMBEDDING: "embeddings",
    },
    Layout.COMFYUI: {
        ModelKind.CHECKPOINT: "models/checkpoints",
        ModelKind.VAE: "models/vae",
        ModelKind.LORA: "models/loras",
        ModelKind.HYPERNETWORK: "models/hypernetworks",
        ModelKind.EMBEDDING: "models/embeddings",
    },
}


@dataclass(frozen=True)
class ModelEntry:
    """A file found in a model folder. `identity.kind` is None when it is not a usable model."""

    path: Path  # absolute, as found (symlinks not resolved)
    root: Path
    relative_path: str  # to `root`, forward slashes
    folder: str  # the model folder it was found in, relative to `root` (``models/Lora``)
    folder_kind: ModelKind  # the kind its place promises (`*.vae.*` beside checkpoints: vae)
    layout: Layout
    size: int | None  # None when the file could not be stat'ed (broken link)
    mtime_ns: int | None
    identity: Identity
    sidecars: Sidecars
    sha256: str | None = None
    addnet_hash: str | None = None  # LoRA safetensors only: hash of the tensor data
    problems: tuple[str, ...] = ()
    file_id: tuple[int, int] | None = None  # (device, inode): tells links from copies

    @property
    def name(self) -> str:
        """The file stem: how A1111 names LoRA, embeddings and hypernetworks in prompts."""
        file_name = self.path.name
        return file_name.rsplit(".", 1)[0] if "." in file_name else file_name

    @property
    def kind(self) -> ModelKind | None:
        return self.identity.kind

    @property
    def kind_label(self) -> str:
        return str(self.identity.kind) if self.identity.kind is not None else INVALID

    @property
    def base(self) -> BaseFamily | None:
        return self.identity.base

    @property
    def format(self) -> FileFormat | None:
        return self.identity.format

    @property
    def alias(self) -> str | None:
        """A LoRA's `ss_output_name`, which A1111 also accepts in `<lora:...>`."""
        training = self.identity.training
        if self.kind is ModelKind.LORA and training is not None:
            return training.output_name
        return None

    @property
    def autov2(self) -> str | None:
        return autov2(self.sha256) if self.sha256 else None

    @property
    def legacy_hash(self) -> str | None:
        """A1111's old 8-hex model hash (Civitai AutoV1), known without a full hash."""
        return self.identity.legacy_hash

    @property
    def short_hash(self) -> str | None:
        """The short hash A1111 shows for this kind: 12 hex of the tensor hash (recorded
        `sshs_model_hash` first) for safetensors LoRA, 12 of the sha256 for embeddings,
        10 (AutoV2) for everything else."""
        training = self.identity.training
        if self.kind is ModelKind.LORA and self.format is FileFormat.SAFETENSORS:
            recorded = training.tensor_hash if training else None
            tensor_hash = recorded or self.addnet_hash
            return tensor_hash[:12] if tensor_hash else None
        if self.sha256 is None:
            return None
        return self.sha256[:12] if self.kind is ModelKind.EMBEDDING else self.sha256[:10]

    @property
    def is_misfiled(self) -> bool:
        return self.kind is not None and self.kind is not self.folder_kind

    @property
    def home_folder(self) -> str | None:
        """Where a file of its kind belongs in its root's layout."""
        return HOME_FOLDERS[self.layout].get(self.kind) if self.kind else None

    @property
    def trigger_words(self) -> tuple[str, ...]:
        """Words that call it up in a prompt: an embedding's name; the user's activation text,
        Civitai's trained words and modelspec's trigger phrase; else the most frequent tags of
        its training captions."""
        words: list[str] = [self.name] if self.kind is ModelKind.EMBEDDING else []
        user, civitai = self.sidecars.user, self.sidecars.civitai
        if user and user.activation_text:
            words.append(user.activation_text)
        if civitai:
            words += civitai.trained_words
        training = self.identity.training
        phrase = training.modelspec.get("trigger_phrase") if training else None
        if phrase:
            words.append(phrase)
        if not words and training:
            words += training.suggested_triggers
        return tuple(dict.fromkeys(word for word in words if word))

    def summary(self) -> dict[str, Any]:
        """The fields `models list --json` prints."""
        return {
            "name": self.name,
            "kind": self.kind_label,
            "base": str(self.base) if self.base else None,
            "path": self.relative_path,
            "root": str(self.root),
            "folder": self.folder,
            "format": str(self.format) if self.format else None,
            "size": self.size,
            "alias": self.alias,
            "sha256": self.sha256,
            "autov2": self.autov2,
            "legacy_hash": self.legacy_hash,
            "addnet_hash": self.addnet_hash,
            "short_hash": self.short_hash,
            "trigger_words": list(self.trigger_words),
            "problems": list(self.problems),
        }

    def details(self) -> dict[str, Any]:
        """Everything known, for `models show --json`."""
        identity, sidecars = self.identity, self.sidecars
        return {
            **self.summary(),
            "absolute_path": str(self.path),
            "mtime_ns": self.mtime_ns,
            "layout": identity.layout,
            "reasons": list(identity.reasons),
            "error": identity.error,
            "error_type": identity.error_type,
            "tensors": _plain(identity.tensors),
            "training": _plain(identity.training),
            "sidecars": {
                "files": list(sidecars.files),
                "preview": sidecars.preview,
                "description": sidecars.description,
                "user_metadata": _plain(sidecars.user),
                "civitai": _plain(sidecars.civitai),
                "config": sidecars.config,
            },
        }

    @property
    def display_path(self) -> str:
        return display_name(self.relative_path)


def _plain(value: Any) -> Any:
    """A dataclass as JSON-ready dicts and lists (tuples of pairs become lists)."""
    if value is None:
        return None
    return {
        name: [list(item) if isinstance(item, tuple) else item for item in field_value]
        if isinstance(field_value, tuple)
        else field_value
        for name, field_value in ((n, getattr(value, n)) for n in value.__dataclass_fields__)
    }
