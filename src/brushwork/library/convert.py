"""Safe conversion of pickled model files (.ckpt/.pt/.bin) to safetensors.

The source is opened only through the guarded loader (`safeio.read_pickle`), so a pickle that
would run code is refused and nothing in it runs. What is written:

* checkpoints, VAEs and LoRA: the flat tensor dict (a checkpoint's `state_dict` unwrapped, as
  A1111 does; the rest of a training checkpoint — optimizer state, global step, callbacks — is
  not tensors and is left behind);
* A1111 `.pt` embeddings: the safetensors layout A1111 also loads, ``{"emb_params": [n, dim]}``
  (``clip_l``/``clip_g`` for SDXL), via `formats.embedding`;
* hypernetworks are refused: A1111 loads them only as `.pt` pickles.

`prune` drops EMA weights (``model_ema.*``) and training-only tensors (a VAE's ``loss.*``
discriminator); `half` casts floating-point tensors to fp16, keeping any tensor whose values
fp16 cannot hold. The result is written atomically to ``<stem>.safetensors`` beside the source
and never replaces an existing file unless `overwrite` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from brushwork.core.errors import ConfigError, UnsupportedModelError
from brushwork.core.kinds import FileFormat, ModelKind
from brushwork.formats import detect, embedding, safeio
from brushwork.formats.pickle_contents import read_pickle_contents

logger = logging.getLogger(__name__)

PRUNED_PREFIXES = ("model_ema.", "loss.")
SAFETENSORS_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ConversionResult:
    """What `convert_to_safetensors` did."""

    source: Path
    target: Path
    kind: ModelKind
    tensor_count: int
    dropped: tuple[str, ...]  # keys pruned away
    halved: int  # tensors cast to fp16
    kept_precision: tuple[str, ...]  # float tensors left as they were (out of fp16's range)
    source_size: int
    target_size: int


def target_path(source: Path) -> Path:
    return source.with_name(source.name.rsplit(".", 1)[0] + SAFETENSORS_SUFFIX)


def to_half(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """Cast floating tensors to fp16; a tensor that would overflow (finite becomes inf) is kept
    as it was. Returns (tensors, how many were cast, names kept)."""
    out: dict[str, torch.Tensor] = {}
    halved, kept = 0, []
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or tensor.dtype == torch.float16:
            out[name] = tensor
            continue
        cast = tensor.to(torch.float16)
        if bool(torch.isfinite(cast).all()) or not bool(torch.isfinite(tensor).all()):
            out[name], halved = cast, halved + 1
        else:
            out[name] = tensor
            kept.append(name)
    return out, halved, kept


def prune_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop EMA and training-only tensors. Returns (kept tensors, dropped names)."""
    kept = {k: v for k, v in tensors.items() if not k.startswith(PRUNED_PREFIXES)}
    return kept, [k for k in tensors if k not in kept]


def _check_target(source: Path, target: Path, *, half: bool, prune: bool, overwrite: bool) -> None:
    if not source.is_file():
        raise ConfigError(f"{source} is not a file")
    if target == source and not (half or prune):
        raise ConfigError(
            f"{source} is already a safetensors file",
            hint="pass --half or --prune to rewrite it (with --force, as it replaces itself)",
        )
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists", hint="pass --force to replace it")


def _read(source: Path) -> tuple[detect.Detection, dict[str, torch.Tensor], dict[str, str]]:
    """Identify and read `source` once (guarded loader for pickles)."""
    if safeio.sniff_format(source) is FileFormat.SAFETENSORS:
        model_file = safeio.read_safetensors(source)
        shapes = {name: tuple(t.shape) for name, t in model_file.tensors.items()}
        found = detect.detect_state_dict(shapes, metadata=model_file.metadata, path=source)
        return found, model_file.tensors, model_file.metadata
    contents = read_pickle_contents(source)
    shapes = {name: tuple(t.shape) for name, t in contents.tensors.items()}
    found = detect.detect_state_dict(
        shapes, extra_keys=contents.fields, format=FileFormat.PICKLE, path=source
    )
    return found, contents.tensors, {}


def _write_embedding(source: Path, target: Path, *, half: bool, overwrite: bool) -> tuple[int, int]:
    loaded = embedding.read_embedding(source)
    halved = 0
    if half:
        vectors, halved, _kept = to_half(loaded.vectors)
        loaded = replace(loaded, vectors=vectors)
    embedding.write_embedding(target, loaded, format="safetensors", overwrite=overwrite)
    return len(loaded.vectors), halved


def convert_to_safetensors(
    source: Path | str, *, half: bool = False, prune: bool = False, overwrite: bool = False
) -> ConversionResult:
    """Convert one model file to ``<stem>.safetensors`` beside it (see the module docstring)."""
    source = Path(source)
    target = target_path(source)
    _check_target(source, target, half=half, prune=prune, overwrite=overwrite)
    source_size = source.stat().st_size
    found, tensors, metadata = _read(source)
    if found.kind is ModelKind.HYPERNETWORK:
        raise UnsupportedModelError(
            source,
            "is a hypernetwork; A1111 loads hypernetworks only as .pt pickles, so a safetensors "
            "copy would load nowhere",
            hint="keep the .pt: brushwork reads it safely, and nothing in it runs",
        )
    dropped: list[str] = []
    kept_precision: list[str] = []
    if found.kind is ModelKind.EMBEDDING:
        count, halved = _write_embedding(source, target, half=half, overwrite=overwrite)
    else:
        if prune:
            tensors, dropped = prune_tensors(tensors)
        halved = 0
        if half:
            tensors, halved, kept_precision = to_half(tensors)
        metadata = {**metadata, "format": metadata.get("format", "pt")}
        safeio.write_safetensors(target, tensors, metadata, overwrite=overwrite)
        count = len(tensors)
    written = safeio.read_header(target)  # the file reads back as valid safetensors
    logger.info("converted %s -> %s (%d tensors)", source, target, count)
    return ConversionResult(
        source=source,
        target=target,
        kind=found.kind,
        tensor_count=len(written.tensors),
        dropped=tuple(dropped),
        halved=halved,
        kept_precision=tuple(kept_precision),
        source_size=source_size,
        target_size=written.file_size,
    )
