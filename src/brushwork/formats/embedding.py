"""Textual-inversion embeddings: read every layout A1111 loads, write the ones users share.

Layouts (what `Embedding.source_format` reports, and what `write_embedding(format=)` takes):

* ``"a1111"``: A1111's own `.pt` pickle, ``{"string_to_param": {"*": [n, dim]}, "name", "step",
  "sd_checkpoint", "sd_checkpoint_name", "string_to_token": {"*": 265}}``. The value of
  `string_to_param` may be an `nn.ParameterDict` in older files.
* ``"safetensors"``: the kohya / sd-scripts layout, ``{"emb_params": [n, dim]}`` for SD1/SD2 and
  ``{"clip_l": [n, 768], "clip_g": [n, 1280]}`` for SDXL (usually a `.safetensors` file; kohya
  also writes it as a `.pt`, which reads the same).
* ``"diffusers"``: a diffusers concept, ``{token: [n, dim]}`` or ``{token: [dim]}`` (one vector),
  in `learned_embeds.bin` or `.safetensors`. Any other single-tensor file is read this way, as
  A1111 does (OneTrainer's ``emp_params`` typo included).

Vectors are keyed by the diffusers text-encoder component they belong to (the names in
`FamilyFacts.text_encoders`): ``{"text_encoder": [n, dim]}`` for SD1/SD2, and for SDXL
``{"text_encoder": [n, 768], "text_encoder_2": [n, 1280]}`` (CLIP-L, OpenCLIP bigG), so a
conditioning step can look each one up beside its encoder.

The trigger word is the file stem, as in A1111; the name stored inside a file is kept apart as
`stored_name`. Vectors keep the dtype they were stored in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import (
    ConfigError,
    CorruptModelError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.formats import lora_keys, safeio
from brushwork.formats.families import SINGLE_TEXT_ENCODER_WIDTHS

logger = logging.getLogger(__name__)

TEXT_ENCODER = "text_encoder"  # SD1/SD2's encoder, and SDXL's CLIP-L
TEXT_ENCODER_2 = "text_encoder_2"  # SDXL's OpenCLIP bigG
EMBEDDING_FORMATS = ("a1111", "safetensors", "diffusers")
A1111_STAR_TOKEN_ID = 265  # the CLIP-L id of "*", which A1111 writes in `string_to_token`
_KOHYA_SINGLE_KEYS = ("emb_params", "emp_params")  # sd-scripts; OneTrainer's spelling
_IMAGE_SUFFIXES = (".png", ".webp", ".jxl", ".avif", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class Embedding:
    """One textual-inversion embedding: vectors per text encoder, and what the file said."""

    name: str  # the trigger word: the file stem, as in A1111
    vectors: dict[str, torch.Tensor]  # component name -> [num_vectors, width]
    stored_name: str | None = None  # `name` inside an A1111 file, or a diffusers token
    step: int | None = None
    sd_checkpoint: str | None = None  # short hash of the checkpoint it was trained on
    sd_checkpoint_name: str | None = None
    source_format: str = "a1111"  # one of EMBEDDING_FORMATS: the layout it was read from
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors __metadata__

    def __post_init__(self) -> None:
        problem = _vectors_problem(self.vectors)
        if problem:
            raise ValueError(f"embedding {self.name!r}: {problem}")

    @property
    def num_vectors(self) -> int:
        """Tokens the trigger word stands for (A1111's 'vectors')."""
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def width(self) -> int:
        """Width as A1111 computes it: 768 (SD1), 1024 (SD2), 768 + 1280 = 2048 (SDXL)."""
        return sum(int(v.shape[-1]) for v in self.vectors.values())

    @property
    def family(self) -> BaseFamily | None:
        """The base family its widths fit, or None for a width no standard model has."""
        if set(self.vectors) == {TEXT_ENCODER, TEXT_ENCODER_2}:
            return BaseFamily.SDXL
        return SINGLE_TEXT_ENCODER_WIDTHS.get(self.width)

    @property
    def is_dual(self) -> bool:
        """True for SDXL-style embeddings, with one vector set per text encoder."""
        return TEXT_ENCODER_2 in self.vectors


def _vectors_problem(vectors: Mapping[str, Any]) -> str | None:
    if set(vectors) not in ({TEXT_ENCODER}, {TEXT_ENCODER, TEXT_ENCODER_2}):
        return (
            f"vectors must be keyed {{{TEXT_ENCODER!r}}} or {{{TEXT_ENCODER!r}, "
            f"{TEXT_ENCODER_2!r}}}, not {sorted(vectors)}"
        )
    for slot, tensor in vectors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or tensor.shape[0] < 1:
            shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            return f"vectors[{slot!r}] must be a [num_vectors, width] tensor, not {shape}"
    counts = {slot: int(t.shape[0]) for slot, t in vectors.items()}
    if len(set(counts.values())) > 1:
        return f"the text encoders have different numbers of vectors: {counts}"
    return None


# ---------------------------------------------------------------------------------------------
# describing what a file is instead


def describe_contents(obj: Any) -> tuple[ModelKind | None, str]:
    """What an unpickled object or tensor dict looks like, for 'this is not a ...' errors.

    Returns the model kind it resembles (None when unknown) and a phrase such as
    "it has 1130 tensors with UNet keys ('model.diffusion_model...'): a checkpoint".
    """
    if not isinstance(obj, Mapping):
        return None, f"it holds a {type(obj).__name__}, not a dictionary"
    int_keys = [k for k in obj if type(k) is int]
    if int_keys:
        shown = ", ".join(str(k) for k in int_keys[:4])
        return ModelKind.HYPERNETWORK, f"it has layers keyed by width ({shown}): a hypernetwork"
    if "string_to_param" in obj or {"clip_l", "clip_g"} <= set(obj):
        return ModelKind.EMBEDDING, "it is a textual-inversion embedding"
    tensors = safeio.flatten_tensors(obj)
    keys = list(tensors)
    count = f"it has {len(keys)} tensors"
    if not keys:
        return None, f"it has no tensors (keys: {_sample(list(obj))})"
    if any(lora_keys.is_lora_weight(key) for key in keys):
        return ModelKind.LORA, f"{count} with LoRA keys ({_sample(keys)}): a LoRA"
    if any(key.startswith("model.diffusion_model.") for key in keys):
        return ModelKind.CHECKPOINT, f"{count} with UNet keys ({_sample(keys)}): a checkpoint"
    if any(key.startswith(("down_blocks.", "mid_block.")) for key in keys):
        return ModelKind.CHECKPOINT, f"{count} with diffusers UNet keys ({_sample(keys)})"
    if any(key.startswith(("first_stage_model.", "encoder.down.", "decoder.up.")) for key in keys):
        return ModelKind.VAE, f"{count} with VAE keys ({_sample(keys)}): a VAE"
    return None, f"{count} ({_sample(keys)})"


def _sample(keys: list[Any], limit: int = 2) -> str:
    shown = ", ".join(repr(str(k)) for k in keys[:limit])
    return shown + (", ..." if len(keys) > limit else "")


# ---------------------------------------------------------------------------------------------
# reading


def read_embedding(path: Path | str) -> Embedding:
    """Read a textual-inversion embedding in any layout A1111 loads (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        raise UnsupportedModelError(
            path,
            "is an image; embeddings stored inside images are not supported yet",
            hint="use the .pt or .safetensors version of the embedding",
        )
    if safeio.sniff_format(path) is FileFormat.SAFETENSORS:
        model_file = safeio.read_safetensors(path)
        data: Any = model_file.tensors
        metadata = model_file.metadata
    else:
        data, metadata = safeio.read_pickle(path), {}
    if not isinstance(data, Mapping):
        raise CorruptModelError(
            path, f"holds a {type(data).__name__}, not a textual-inversion embedding"
        )
    if "string_to_param" in data:
        return _from_a1111(path, data)
    if isinstance(data.get("clip_l"), torch.Tensor) and isinstance(
        data.get("clip_g"), torch.Tensor
    ):
        return _from_sdxl(path, data, metadata)
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1 and len(data) == 1:
        return _from_single_tensor(path, tensors, metadata)
    raise _not_an_embedding(path, data, tensors)


def _from_a1111(path: Path, data: Mapping[Any, Any]) -> Embedding:
    params = data["string_to_param"]
    params = getattr(params, "_parameters", params)  # an nn.ParameterDict in older files
    if not isinstance(params, Mapping):
        raise CorruptModelError(
            path, f"has a 'string_to_param' entry that is a {type(params).__name__}, not a dict"
        )
    if len(params) != 1:
        raise CorruptModelError(
            path,
            f"has {len(params)} terms in 'string_to_param' ({_sample(list(params), 4)}); "
            "an embedding file holds exactly one",
            hint="split it into one file per term",
        )
    vectors = _as_matrix(path, "string_to_param", next(iter(params.values())))
    return Embedding(
        name=path.stem,
        vectors={TEXT_ENCODER: vectors},
        stored_name=_optional_str(data.get("name")),
        step=_optional_int(data.get("step")),
        sd_checkpoint=_optional_str(data.get("sd_checkpoint")),
        sd_checkpoint_name=_optional_str(data.get("sd_checkpoint_name")),
        source_format="a1111",
    )


def _from_sdxl(path: Path, data: Mapping[Any, Any], metadata: dict[str, str]) -> Embedding:
    extra = [str(k) for k in data if k not in ("clip_l", "clip_g")]
    if extra:
        logger.warning("%s: ignoring entries %s beside clip_l/clip_g", path, extra)
    clip_l = _as_matrix(path, "clip_l", data["clip_l"])
    clip_g = _as_matrix(path, "clip_g", data["clip_g"])
    if clip_l.shape[0] != clip_g.shape[0]:
        raise CorruptModelError(
            path,
            f"has {clip_l.shape[0]} clip_l vectors but {clip_g.shape[0]} clip_g vectors; "
            "an SDXL embedding has the same number for both text encoders",
        )
    return Embedding(
        name=path.stem,
        vectors={TEXT_ENCODER: clip_l, TEXT_ENCODER_2: clip_g},
        source_format="safetensors",
        metadata=metadata,
    )


def _from_single_tensor(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> Embedding:
    key, tensor = next(iter(tensors.items()))
    is_kohya = key in _KOHYA_SINGLE_KEYS
    return Embedding(
        name=path.stem,
        vectors={TEXT_ENCODER: _as_matrix(path, key, tensor)},
        stored_name=None if is_kohya else key,
        source_format="safetensors" if is_kohya else "diffusers",
        metadata=metadata,
    )


def _not_an_embedding(
    path: Path, data: Mapping[Any, Any], tensors: dict[str, torch.Tensor]
) -> Exception:
    kind, looks_like = describe_contents(data)
    if kind is not None and kind is not ModelKind.EMBEDDING:
        return WrongKindError(
            path,
            f"is not a textual-inversion embedding: {looks_like}",
            hint=f"use it as a {kind.value}",
        )
    if tensors and len(tensors) <= 16 and all(t.dim() in (1, 2) for t in tensors.values()):
        return CorruptModelError(
            path,
            f"holds {len(tensors)} embeddings ({_sample(list(tensors), 4)}); an embedding "
            "file holds exactly one",
            hint="split it into one file per token",
        )
    return CorruptModelError(
        path,
        f"is neither a textual-inversion embedding nor a diffusers concept: {looks_like}",
    )


def _as_matrix(path: Path, key: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CorruptModelError(path, f"entry {key!r} is a {type(value).__name__}, not a tensor")
    tensor = value.detach()
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(0)  # one vector, as diffusers concepts store it
    if tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise CorruptModelError(
            path,
            f"entry {key!r} has shape {list(value.shape)}; embedding vectors are "
            "[num_vectors, width]",
        )
    if not tensor.is_floating_point():
        raise CorruptModelError(path, f"entry {key!r} holds {tensor.dtype}, not floating point")
    return tensor


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------------------------
# writing


def write_embedding(
    path: Path | str, embedding: Embedding, *, format: str = "a1111", overwrite: bool = False
) -> None:
    """Write `embedding` in one of EMBEDDING_FORMATS (atomic).

    ``a1111`` writes A1111's `.pt` exactly as A1111 does (single-encoder embeddings only);
    ``safetensors`` writes ``emb_params`` (or ``clip_l``/``clip_g`` for SDXL) to a
    `.safetensors` file; ``diffusers`` writes ``{name: vectors}``, as safetensors when the
    path ends in `.safetensors` and as a pickle otherwise (`learned_embeds.bin`).
    """
    path = Path(path)
    if format not in EMBEDDING_FORMATS:
        raise ConfigError(f"unknown embedding format {format!r}; use one of {EMBEDDING_FORMATS}")
    is_st_path = path.suffix.lower() == ".safetensors"
    if embedding.is_dual and format != "safetensors":
        raise ConfigError(
            f"an SDXL embedding cannot be written in the {format!r} format",
            hint="write it with format='safetensors' (clip_l + clip_g)",
        )
    if format == "a1111":
        if is_st_path:
            raise ConfigError(
                f"{path}: the a1111 format is a pickle; name the file .pt",
                hint="or write format='safetensors' for a .safetensors file",
            )
        safeio.write_pickle(path, _a1111_dict(embedding), overwrite=overwrite)
    elif format == "safetensors":
        if not is_st_path:
            raise ConfigError(
                f"{path}: the safetensors format needs a .safetensors file name",
                hint="or write format='a1111' for a .pt file",
            )
        safeio.write_safetensors(
            path, _kohya_tensors(embedding), embedding.metadata, overwrite=overwrite
        )
    else:
        tensors = {embedding.name: _plain(embedding.vectors[TEXT_ENCODER])}
        if is_st_path:
            safeio.write_safetensors(path, tensors, embedding.metadata, overwrite=overwrite)
        else:
            safeio.write_pickle(path, tensors, overwrite=overwrite)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous CPU copy that owns its storage (torch.save writes whole storages)."""
    return tensor.detach().to("cpu").contiguous().clone()


def _a1111_dict(embedding: Embedding) -> dict[str, Any]:
    return {
        "string_to_token": {"*": A1111_STAR_TOKEN_ID},
        "string_to_param": {"*": _plain(embedding.vectors[TEXT_ENCODER])},
        "name": embedding.name,
        "step": embedding.step,
        "sd_checkpoint": embedding.sd_checkpoint,
        "sd_checkpoint_name": embedding.sd_checkpoint_name,
    }


def _kohya_tensors(embedding: Embedding) -> dict[str, torch.Tensor]:
    if embedding.is_dual:
        return {
            "clip_l": _plain(embedding.vectors[TEXT_ENCODER]),
            "clip_g": _plain(embedding.vectors[TEXT_ENCODER_2]),
        }
    return {"emb_params": _plain(embedding.vectors[TEXT_ENCODER])}
