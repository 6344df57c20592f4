"""Files users keep beside a model ``<stem>.<ext>``, as A1111 and Civitai Helper read them.

* ``<stem>.json``: A1111's user metadata (``description``, ``notes``, ``activation text``,
  ``negative text``, ``preferred weight``, ``sd version``, ``vae``);
* ``<stem>.<e>`` or ``<stem>.preview.<e>`` for e in png, jpg, jpeg, webp, gif: the card preview
  (for each extension the plain name is tried first, as A1111 does);
* ``<stem>.txt`` or ``<stem>.description.txt``: the description (the .json's wins);
* ``<stem>.civitai.info``: the Civitai model-version JSON that Civitai Helper saves
  (``trainedWords``, ``baseModel``, ``model.type``, ``model.name``);
* ``<stem>.yaml``: a checkpoint's model config; ``<file>.optim``: saved optimizer state.

Sidecars are found in the folder listing the walk already made, so a model without sidecars
costs no extra file system call. A sidecar that cannot be parsed is a problem of its model,
never an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PREVIEW_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif")
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
_FIXED_SUFFIXES = (".civitai.info", ".description.txt", ".json", ".txt", ".yaml")
_PREVIEW_SUFFIXES = tuple(
    suffix for ext in PREVIEW_EXTENSIONS for suffix in (f".preview.{ext}", f".{ext}")
)


@dataclass(frozen=True)
class UserMetadata:
    """A1111's per-model ``<stem>.json``, as its "edit metadata" dialog writes it."""

    description: str | None = None
    notes: str | None = None
    activation_text: str | None = None
    negative_text: str | None = None
    preferred_weight: float | None = None
    sd_version: str | None = None  # SD1, SD2, SDXL or Unknown
    vae: str | None = None


@dataclass(frozen=True)
class CivitaiInfo:
    """The parts of a ``<stem>.civitai.info`` a library uses."""

    model_name: str | None = None
    model_type: str | None = None  # Checkpoint, LORA, LoCon, TextualInversion, Hypernetwork, VAE
    version_name: str | None = None
    base_model: str | None = None  # "SD 1.5", "SDXL 1.0", "Pony", ...
    trained_words: tuple[str, ...] = ()
    model_id: int | None = None
    version_id: int | None = None


@dataclass(frozen=True)
class Sidecars:
    """Everything found beside one model file."""

    files: tuple[str, ...] = ()  # sidecar file names, in the model's folder
    preview: str | None = None
    description: str | None = None
    user: UserMetadata | None = None
    civitai: CivitaiInfo | None = None
    config: str | None = None  # `<stem>.yaml`
    problems: tuple[str, ...] = ()


def preview_candidates(stem: str) -> tuple[str, ...]:
    """Preview file names for `stem`, in the order they are tried."""
    return tuple(
        name for ext in PREVIEW_EXTENSIONS for name in (f"{stem}.{ext}", f"{stem}.preview.{ext}")
    )


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            return None, f"sidecar {path.name} is too large to be a metadata file"
        return json.loads(path.read_bytes().decode("utf-8-sig")), None
    except (OSError, ValueError) as exc:
        return None, f"sidecar {path.name} is not valid JSON ({exc}); it was ignored"


def _read_json_object(
    folder: Path, name: str, siblings: Collection[str], problems: list[str]
) -> dict[str, Any] | None:
    """The JSON object in sidecar `name`, if it is there; why it was ignored goes to `problems`."""
    if name not in siblings:
        return None
    data, problem = _read_json(folder / name)
    if isinstance(data, dict):
        return data
    problems.append(problem or f"sidecar {name} is not a JSON object; it was ignored")
    return None


def _read_text(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES)
    except OSError:
        return None
    return data.decode("utf-8-sig", "replace").strip() or None


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value) if isinstance(value, str) and value.strip() else None
    except ValueError:
        return None


def parse_user_metadata(data: Mapping[str, Any]) -> UserMetadata:
    return UserMetadata(
        description=_str(data.get("description")),
        notes=_str(data.get("notes")),
        activation_text=_str(data.get("activation text")),
        negative_text=_str(data.get("negative text")),
        preferred_weight=_number(data.get("preferred weight")),
        sd_version=_str(data.get("sd version")),
        vae=_str(data.get("vae")),
    )


def parse_civitai_info(data: Mapping[str, Any]) -> CivitaiInfo:
    model = data.get("model")
    model = model if isinstance(model, dict) else {}
    words = data.get("trainedWords")
    words = words if isinstance(words, list) else []
    trained = tuple(w.strip() for w in words if isinstance(w, str) and w.strip())
    model_id = data.get("modelId")
    version_id = data.get("id")
    return CivitaiInfo(
        model_name=_str(model.get("name")),
        model_type=_str(model.get("type")),
        version_name=_str(data.get("name")),
        base_model=_str(data.get("baseModel")),
        trained_words=trained,
        model_id=model_id if isinstance(model_id, int) else None,
        version_id=version_id if isinstance(version_id, int) else None,
    )


def read_sidecars(folder: Path, file_name: str, siblings: Collection[str]) -> Sidecars:
    """The sidecars of model `file_name` in `folder`, given the folder's file names."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    present = [
        name
        for name in (
            *(f"{stem}{suffix}" for suffix in _FIXED_SUFFIXES),
            *preview_candidates(stem),
            f"{file_name}.optim",
        )
        if name in siblings
    ]
    if not present:
        return Sidecars()
    problems: list[str] = []
    user_data = _read_json_object(folder, f"{stem}.json", siblings, problems)
    user = None if user_data is None else parse_user_metadata(user_data)
    civitai_data = _read_json_object(folder, f"{stem}.civitai.info", siblings, problems)
    civitai = None if civitai_data is None else parse_civitai_info(civitai_data)
    description = user.description if user else None
    for name in (f"{stem}.txt", f"{stem}.description.txt"):
        if description is None and name in siblings:
            description = _read_text(folder / name)
    preview = next((name for name in preview_candidates(stem) if name in siblings), None)
    config = f"{stem}.yaml" if f"{stem}.yaml" in siblings else None
    return Sidecars(tuple(present), preview, description, user, civitai, config, tuple(problems))


def sidecar_owner(file_name: str, *, images_are_models: bool = False) -> str | None:
    """The model stem (or, for ``.optim``, the model file name) a sidecar belongs to.

    None when `file_name` does not look like a sidecar. In an embeddings folder a plain image
    may itself be an embedding, so only ``.preview.<e>`` images count there.
    """
    if file_name.endswith(".optim"):
        return file_name.removesuffix(".optim") or None
    for suffix in _FIXED_SUFFIXES:
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name.removesuffix(suffix)
    for suffix in _PREVIEW_SUFFIXES:
        if images_are_models and not suffix.startswith(".preview."):
            continue
        if file_name.lower().endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return None
