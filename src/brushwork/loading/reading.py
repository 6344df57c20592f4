"""Reading a checkpoint file for loading: only what the modules need, each tensor read once.

A safetensors file is read tensor by tensor from its validated header, in file order, without
mmap, each weight cast on the way into a fresh tensor of its own (`safeio.read_tensors_cast`),
skipping the EMA copy unless it is asked for: memory grows by the loaded model only. A `.ckpt`
pickle goes through safeio's guarded unpickler, whole (a pickle cannot be read in parts). The LDM layout is split into components by
`formats.checkpoint.checkpoint_from_ldm`; the architecture comes from a `<stem>.yaml` sidecar when
there is one, else from the shapes, and an explicit `prediction_type` overrides both (SD 2.x
768-v files have the same shapes as 512 epsilon ones).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError, ModelFileError, WrongKindError
from brushwork.core.kinds import FileFormat, ModelKind
from brushwork.formats.architecture import (
    PREDICTION_TYPES,
    ModelArchitecture,
    infer_architecture,
)
from brushwork.formats.checkpoint import (
    Checkpoint,
    checkpoint_from_ldm,
    read_checkpoint_architecture,
)
from brushwork.formats.detect import detect_file
from brushwork.formats.safeio import (
    SafetensorsHeader,
    read_header,
    read_model_file,
    read_tensors_cast,
    sniff_format,
)

logger = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VAE_PREFIX = "first_stage_model."

# what LDM/SGM files carry beside the weights loading uses: DDPM buffers, EMA bookkeeping, CLIP
# position ids, OpenCLIP leftovers (SD2's unused last layer, logit scale, attention mask,
# SD2's text projection), SGM's denoiser sigmas
_HARMLESS_EXTRA = re.compile(
    r"^(betas|alphas_cumprod(_prev)?|sqrt_\w+|log_one_minus_alphas_cumprod|posterior_\w+"
    r"|logvar|lvlb_weights|model_ema\..*|denoiser\.\w+|.*position_ids"
    r"|(cond_stage_model|conditioner\.embedders\.\d+)\.model\.(logit_scale|attn_mask|text_projection"
    r"|transformer\.resblocks\.\d+\..*))$"
)
_SHOWN = 5

_KIND_HINTS = {
    ModelKind.LORA: "a LoRA is applied to a checkpoint: put it in the LoRA folder and use "
    "<lora:name:weight> in the prompt",
    ModelKind.VAE: "a VAE is used with a checkpoint: pass it as the VAE choice",
    ModelKind.EMBEDDING: "an embedding is used by name in a prompt: put it in the embeddings folder",
    ModelKind.HYPERNETWORK: "a hypernetwork is applied to a checkpoint: put it in the "
    "hypernetworks folder",
}


def _refuse_non_checkpoint(path: Path) -> None:
    try:
        kind: ModelKind | None = detect_file(path).kind
    except ModelFileError:
        kind = None
    if kind is None or kind is ModelKind.CHECKPOINT:
        raise WrongKindError(
            path,
            f"is not a checkpoint (it has no {UNET_PREFIX}* UNet weights)",
            hint="check that the file is what you meant to load",
        )
    article = "an" if kind is ModelKind.EMBEDDING else "a"
    raise WrongKindError(path, f"is {article} {kind}, not a checkpoint", hint=_KIND_HINTS[kind])


def checkpoint_architecture(
    path: Path, shapes: Mapping[str, Any], prediction_type: str | None = None
) -> ModelArchitecture:
    """The architecture to build: the yaml sidecar's or the shapes', `prediction_type` winning."""
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"unknown prediction type {prediction_type!r}",
            hint=f"use one of {', '.join(PREDICTION_TYPES)}",
        )
    if not path.with_suffix(".yaml").is_file() and prediction_type is not None:
        return infer_architecture(shapes, prediction_type=prediction_type, source=path)
    architecture = read_checkpoint_architecture(path, shapes)
    if prediction_type is not None and prediction_type != architecture.prediction_type:
        logger.info(
            "%s: prediction type %s asked for, over the sidecar's %s",
            path,
            prediction_type,
            architecture.prediction_type,
        )
        architecture = replace(architecture, prediction_type=prediction_type, skeleton=None)
    return architecture


@dataclass
class OpenedCheckpoint:
    """A checkpoint file whose architecture is known and whose weights are not read yet
    (a pickle's are: it cannot be read in parts)."""

    path: Path
    format: FileFormat
    architecture: ModelArchitecture
    header: SafetensorsHeader | None = None
    tensors: dict[str, torch.Tensor] | None = None  # pickles only
    metadata: dict[str, str] = field(default_factory=dict)
    # whether a sidecar or the caller said the prediction type (else it is the shapes' guess)
    prediction_given: bool = False


def open_checkpoint(path: Path, *, prediction_type: str | None = None) -> OpenedCheckpoint:
    """Check that `path` is a checkpoint and settle its architecture (a header read for
    safetensors; the guarded unpickler for pickles)."""
    if sniff_format(path) is FileFormat.SAFETENSORS:
        header = read_header(path)
        if not any(name.startswith(UNET_PREFIX) for name in header.tensors):
            _refuse_non_checkpoint(path)
        shapes = {name: info.shape for name, info in header.tensors.items()}
        architecture = checkpoint_architecture(path, shapes, prediction_type)
        return OpenedCheckpoint(
            path,
            FileFormat.SAFETENSORS,
            architecture,
            header,
            None,
            dict(header.metadata),
            _prediction_given(path, prediction_type),
        )
    model_file = read_model_file(path)
    if not any(name.startswith(UNET_PREFIX) for name in model_file.tensors):
        _refuse_non_checkpoint(path)
    architecture = checkpoint_architecture(path, model_file.tensors, prediction_type)
    return OpenedCheckpoint(
        path,
        FileFormat.PICKLE,
        architecture,
        None,
        model_file.tensors,
        model_file.metadata,
        _prediction_given(path, prediction_type),
    )


def _prediction_given(path: Path, prediction_type: str | None) -> bool:
    return prediction_type is not None or path.with_suffix(".yaml").is_file()


def _note_leftovers(path: Path, extra: Mapping[str, torch.Tensor]) -> None:
    """Warn about entries that are neither weights loading uses nor known bookkeeping."""
    unknown = sorted(name for name in extra if not _HARMLESS_EXTRA.match(name))
    if unknown:
        logger.warning(
            "%s: %d entries are not used and not known to be harmless, e.g. %s",
            path,
            len(unknown),
            ", ".join(unknown[:_SHOWN]),
        )


def read_components(
    opened: OpenedCheckpoint,
    *,
    use_ema: bool = False,
    dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
) -> Checkpoint:
    """The checkpoint's component state dicts (no `extra`, no unused EMA copy).

    From a safetensors file, floating weights come cast to `dtype` (the VAE's to `vae_dtype`),
    each in a fresh tensor of its own read through one staging buffer (`safeio.read_tensors_cast`):
    memory grows by the loaded model only. A pickle's tensors come as stored (cast later).
    """
    if opened.header is not None:
        wanted = {
            name: vae_dtype if name.startswith(VAE_PREFIX) else dtype
            for name in opened.header.tensors
            if use_ema or not name.startswith(EMA_PREFIX)
        }
        tensors = read_tensors_cast(opened.path, wanted, opened.header)
    else:
        tensors, opened.tensors = opened.tensors or {}, None
    checkpoint = checkpoint_from_ldm(
        tensors, opened.architecture, metadata=opened.metadata, use_ema=use_ema, source=opened.path
    )
    del tensors
    _note_leftovers(opened.path, checkpoint.extra)
    checkpoint.extra.clear()
    checkpoint.ema_unet = None
    checkpoint.format = opened.format
    return checkpoint
