"""A1111/LDM single-file checkpoints <-> per-component diffusers/transformers state dicts.

Reading splits an LDM-layout file (`model.diffusion_model.*`, `first_stage_model.*`, the text
encoders under `cond_stage_model.*` or `conditioner.embedders.*`) into diffusers UNet/VAE and
transformers CLIP state dicts. Everything else the file holds (DDPM buffers such as
`alphas_cumprod`, `model_ema.decay`, CLIP `position_ids`, the SD2 OpenCLIP layer diffusers
does not use, ...) is kept verbatim in `extra`, so writing a read checkpoint back gives the same
tensors. Writing is our own diffusers -> LDM exporter (`checkpoint_to_ldm`), generic over sizes.

Text-encoder state dicts use the keys of the transformers 5 modules: `CLIPTextModel` keys have no
`text_model.` prefix; `CLIPTextModelWithProjection` (SDXL's second encoder) keys do, plus
`text_projection.weight`. Either form is accepted on input.

The architecture comes from a `<stem>.yaml` beside the file when there is one (as in A1111),
otherwise from the tensor shapes (`architecture.infer_architecture`).
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
    ModelFileError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.core.kinds import BaseFamily, FileFormat
from brushwork.formats import _ldm_keys as keys
from brushwork.formats import lora_keys
from brushwork.formats.architecture import (
    ModelArchitecture,
    infer_architecture,
    read_ldm_yaml,
    write_ldm_yaml,
)
from brushwork.formats.safeio import (
    ModelFile,
    read_header,
    read_model_file,
    sniff_format,
    write_pickle,
    write_safetensors,
)

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_CLIP_BODY = (
    "embeddings.token_embedding.",
    "embeddings.position_embedding.",
    "encoder.layers.",
    "final_layer_norm.",
)


@dataclass
class Checkpoint:
    """One whole model: diffusers/transformers state dicts plus what else the file carried."""

    architecture: ModelArchitecture
    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    text_encoders: dict[str, dict[str, torch.Tensor]]
    ema_unet: dict[str, torch.Tensor] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # LDM keys, kept verbatim
    metadata: dict[str, str] = field(default_factory=dict)
    format: FileFormat = FileFormat.SAFETENSORS


# ---------------------------------------------------------------------------------------------
# what is not a checkpoint


def _kind_of(model_file: ModelFile) -> tuple[str, str]:
    """A guess at what a non-checkpoint file is, and what to do with it."""
    names = list(model_file.tensors)
    raw = model_file.raw
    if any(lora_keys.is_lora_weight(k) for k in names):
        return "a LoRA", "put it in the LoRA folder and use it with <lora:name:weight>"
    if isinstance(raw, Mapping) and ("string_to_param" in raw or "emb_params" in raw):
        return "a textual-inversion embedding", "put it in the embeddings folder"
    if {"clip_l", "clip_g"} & set(names) or names == ["emb_params"]:
        return "a textual-inversion embedding", "put it in the embeddings folder"
    if any(k.startswith(("encoder.down.", "encoder.down_blocks.", keys.VAE_PREFIX)) for k in names):
        return "a VAE", "put it in the VAE folder, or bake it into a checkpoint"
    if "conv_in.weight" in names and any(k.startswith("down_blocks.") for k in names):
        return "a diffusers-layout UNet", "load the diffusers folder it belongs to"
    if isinstance(raw, Mapping) and any(isinstance(k, int) for k in raw):
        return "a hypernetwork", "put it in the hypernetworks folder"
    return "not a Stable Diffusion model", "check that the file is what you meant to load"


def _require_checkpoint(model_file: ModelFile, path: Path) -> None:
    if any(k.startswith(keys.UNET_PREFIX) for k in model_file.tensors):
        return
    kind, hint = _kind_of(model_file)
    raise WrongKindError(
        path, f"is {kind}, not a checkpoint (it has no {keys.UNET_PREFIX}* UNet weights)", hint=hint
    )


# ---------------------------------------------------------------------------------------------
# LDM -> components


def _take(remaining: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove and return every entry under `prefix` (prefix stripped)."""
    return {
        k[len(prefix) :]: remaining.pop(k) for k in [k for k in remaining if k.startswith(prefix)]
    }


def _native_text_keys(
    body: Mapping[str, torch.Tensor], with_projection: bool
) -> dict[str, torch.Tensor]:
    plain = {k.removeprefix("text_model."): v for k, v in body.items()}
    if not with_projection:
        return plain
    return {
        (k if k == "text_projection.weight" else "text_model." + k): v for k, v in plain.items()
    }


def _unused_text_key(key: str, layout: str, layers: int, with_projection: bool) -> bool:
    """Whether an LDM text-encoder key (prefix stripped) has no place in the transformers module."""
    if layout == "clip":
        layer = keys.clip_layer_of(key)
        return (layer is not None and layer >= layers) or not key.startswith(_CLIP_BODY)
    layer = keys.openclip_layer_of(key)
    return (layer is not None and layer >= layers) or (
        key == "text_projection" and not with_projection
    )


def _read_text_encoder(
    remaining: dict[str, torch.Tensor], slot: keys.TextEncoderSlot, arch: ModelArchitecture
) -> dict[str, torch.Tensor]:
    ldm = _take(remaining, slot.prefix)
    layers = int(arch.text_encoders[slot.name]["num_hidden_layers"])
    with_projection = arch.has_projection(slot.name)
    used = {
        k: v
        for k, v in ldm.items()
        if not _unused_text_key(k, slot.layout, layers, with_projection)
    }
    leftover = {k: v for k, v in ldm.items() if k not in used}
    if slot.layout == "openclip":
        body, unknown = keys.openclip_from_ldm(used)
        leftover |= {k: used[k] for k in unknown}
    else:
        body = used
    remaining.update({slot.prefix + k: v for k, v in leftover.items()})
    return _native_text_keys(body, with_projection)


def _legacy_sd1_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old SD1 files keep CLIP under `cond_stage_model.transformer.` without `text_model.`."""
    legacy, modern = keys.LEGACY_SD1_CLIP_PREFIX, keys.text_encoder_slots("sd1")[0].prefix
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith(legacy) and not key.startswith(modern):
            key = modern + key[len(legacy) :]
        out[key] = tensor
    return out


def _read_ema(
    remaining: dict[str, torch.Tensor], unet_ldm_keys: list[str], layout: keys.UnetLayout
) -> dict[str, torch.Tensor] | None:
    flat = {keys.ema_key(k): k for k in unet_ldm_keys}
    ema_ldm = {flat[k]: remaining.pop(k) for k in [k for k in remaining if k in flat]}
    if not ema_ldm:
        return None
    return keys.unet_from_ldm(ema_ldm, layout)[0]


def checkpoint_from_ldm(
    state_dict: Mapping[str, torch.Tensor],
    architecture: ModelArchitecture,
    *,
    metadata: Mapping[str, str] | None = None,
    use_ema: bool = False,
    source: Path | None = None,
) -> Checkpoint:
    """Split an LDM-layout state dict into components. `source` only names the file in errors.

    With `use_ema`, the EMA copy (`model_ema.*`) becomes the UNet and the trained weights are
    dropped, as A1111 does for "ema-only" files.
    """
    arch = architecture
    is_sd1 = arch.family is BaseFamily.SD1
    remaining = _legacy_sd1_keys(state_dict) if is_sd1 else dict(state_dict)
    layout = keys.UnetLayout.from_config(arch.unet)
    unet_ldm = _take(remaining, keys.UNET_PREFIX)
    unet, unknown = keys.unet_from_ldm(unet_ldm, layout)
    if unknown:
        raise UnsupportedModelError(
            source,
            f"has UNet weights that do not fit its architecture, e.g. {keys.UNET_PREFIX}{unknown[0]}",
        )
    vae, unknown = keys.vae_from_ldm(
        _take(remaining, keys.VAE_PREFIX), len(arch.vae["block_out_channels"])
    )
    if unknown:
        raise UnsupportedModelError(
            source,
            f"has VAE weights that do not fit its architecture, e.g. {keys.VAE_PREFIX}{unknown[0]}",
        )
    encoders = {
        slot.name: _read_text_encoder(remaining, slot, arch)
        for slot in keys.text_encoder_slots(arch.family.value)
    }
    ema = _read_ema(remaining, list(unet_ldm), layout)
    if use_ema:
        if ema is None or set(ema) != set(unet):
            raise ModelFileError(
                source,
                "has no complete EMA copy of the UNet (model_ema.*)",
                hint="read it without use_ema",
            )
        unet, ema = ema, None
    return Checkpoint(arch, unet, vae, encoders, ema, remaining, dict(metadata or {}))


def read_checkpoint(path: Path | str, *, use_ema: bool = False) -> Checkpoint:
    """Read an A1111/LDM checkpoint (.safetensors or a guarded .ckpt pickle)."""
    path = Path(path)
    model_file = read_model_file(path)
    _require_checkpoint(model_file, path)
    architecture = read_checkpoint_architecture(path, model_file.tensors)
    checkpoint = checkpoint_from_ldm(
        model_file.tensors, architecture, metadata=model_file.metadata, use_ema=use_ema, source=path
    )
    checkpoint.format = model_file.format
    return checkpoint


def read_checkpoint_architecture(
    path: Path | str, tensors: Mapping[str, Any] | None = None
) -> ModelArchitecture:
    """The architecture of a checkpoint file: its `<stem>.yaml` sidecar, else its tensor shapes.

    For a .safetensors file only the header is read (unless `tensors` are given).
    """
    path = Path(path)
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        logger.info("%s: architecture from the sidecar %s", path, sidecar.name)
        return read_ldm_yaml(sidecar)
    if tensors is None:
        if sniff_format(path) is FileFormat.SAFETENSORS:
            tensors = read_header(path).tensors
        else:
            tensors = read_model_file(path).tensors
    if not any(str(k).startswith(keys.UNET_PREFIX) for k in tensors):
        raise WrongKindError(
            path, f"is not a checkpoint (it has no {keys.UNET_PREFIX}* UNet weights)"
        )
    return infer_architecture(tensors, source=path)


# ---------------------------------------------------------------------------------------------
# components -> LDM


def _export_text_encoder(
    state_dict: Mapping[str, torch.Tensor], slot: keys.TextEncoderSlot
) -> dict[str, torch.Tensor]:
    body = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    if slot.layout == "clip":
        unknown = [k for k in body if not k.startswith(_CLIP_BODY)]
        ldm = body
    else:
        ldm, unknown = keys.openclip_to_ldm(body)
    if unknown:
        raise ConfigError(
            f"text encoder {slot.name!r} has weights with no place in the LDM layout: {unknown[:3]}"
        )
    return {slot.prefix + k: v for k, v in ldm.items()}


def checkpoint_to_ldm(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The LDM/A1111 single-file state dict of a checkpoint (extra entries included)."""
    arch = checkpoint.architecture
    layout = keys.UnetLayout.from_config(arch.unet)
    unet, unknown = keys.unet_to_ldm(checkpoint.unet, layout)
    vae, unknown_vae = keys.vae_to_ldm(checkpoint.vae, len(arch.vae["block_out_channels"]))
    if unknown or unknown_vae:
        raise ConfigError(
            f"weights with no place in the LDM layout: {(unknown + unknown_vae)[:3]}",
            hint="only SD 1.x/2.x/XL UNets and AutoencoderKL VAEs can be written as checkpoints",
        )
    out = {keys.UNET_PREFIX + k: v for k, v in unet.items()}
    out |= {keys.VAE_PREFIX + k: v for k, v in vae.items()}
    slots = keys.text_encoder_slots(arch.family.value)
    stray = sorted(set(checkpoint.text_encoders) - {s.name for s in slots})
    if stray:
        raise ConfigError(f"a {arch.family.value} checkpoint has no text encoder named {stray}")
    for slot in slots:
        out |= _export_text_encoder(checkpoint.text_encoders.get(slot.name, {}), slot)
    if checkpoint.ema_unet:
        ema, _ = keys.unet_to_ldm(checkpoint.ema_unet, layout)
        out |= {keys.ema_key(k): v for k, v in ema.items()}
    clashes = sorted(set(checkpoint.extra) & set(out))
    if clashes:
        raise ConfigError(f"extra entries {clashes[:3]} clash with model weights of the same name")
    return out | checkpoint.extra


def components_to_checkpoint(
    unet_sd: Mapping[str, torch.Tensor],
    vae_sd: Mapping[str, torch.Tensor],
    text_encoder_sds: Mapping[str, Mapping[str, torch.Tensor]],
    architecture: ModelArchitecture,
    *,
    ema_unet: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Checkpoint:
    """A checkpoint from module state dicts (e.g. `unet.state_dict()`)."""
    names = {slot.name for slot in keys.text_encoder_slots(architecture.family.value)}
    if set(text_encoder_sds) != names:
        raise ConfigError(
            f"a {architecture.family.value} model has text encoders {sorted(names)}, "
            f"not {sorted(text_encoder_sds)}"
        )
    encoders = {
        name: _native_text_keys(sd, architecture.has_projection(name))
        for name, sd in text_encoder_sds.items()
    }
    return Checkpoint(
        architecture,
        dict(unet_sd),
        dict(vae_sd),
        encoders,
        None if ema_unet is None else dict(ema_unet),
        {},
        dict(metadata or {}),
    )


def file_format_for(path: Path) -> FileFormat:
    """The container a model file of this name is written as."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return FileFormat.SAFETENSORS
    if suffix in PICKLE_SUFFIXES:
        return FileFormat.PICKLE
    raise ConfigError(
        f"cannot tell how to write {path.name!r}",
        hint=f"name it .safetensors (recommended) or one of {', '.join(PICKLE_SUFFIXES)}",
    )


def needs_yaml_sidecar(tensors: Mapping[str, torch.Tensor], arch: ModelArchitecture) -> bool:
    """Whether reading the file back without a yaml would get a different architecture."""
    try:
        return infer_architecture(tensors) != arch
    except ModelFileError:
        return True


def _cast(
    tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None, keep: set[str]
) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(tensors)
    return {
        k: v.to(dtype) if v.is_floating_point() and k not in keep else v for k, v in tensors.items()
    }


def write_model_tensors(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    overwrite: bool,
) -> None:
    """Write an LDM state dict as .safetensors, or as a `{"state_dict": ...}` pickle (A1111 style)."""
    if file_format_for(path) is FileFormat.SAFETENSORS:
        write_safetensors(path, tensors, metadata, overwrite=overwrite)
        return
    if metadata:
        logger.warning(
            "%s: a pickle cannot carry metadata; %d entries not written", path, len(metadata)
        )
    write_pickle(path, {"state_dict": dict(tensors)}, overwrite=overwrite)


def write_checkpoint(
    path: Path | str,
    checkpoint: Checkpoint,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    write_yaml: bool | None = None,
) -> Path | None:
    """Write an A1111/LDM checkpoint (.safetensors, or .ckpt/.pt as a pickle), atomically.

    `dtype` casts the model weights (not the `extra` buffers). A `<stem>.yaml` sidecar is
    written when the architecture cannot be read back from the shapes alone (a non-standard size,
    v-prediction SD2, ...), or when a sidecar already exists (it would win on reading), unless
    `write_yaml` says otherwise. Returns the sidecar's path when one was written.
    """
    path = Path(path)
    file_format_for(path)
    tensors = _cast(checkpoint_to_ldm(checkpoint), dtype, set(checkpoint.extra))
    sidecar = path.with_suffix(".yaml")
    if write_yaml is None:
        write_yaml = sidecar.exists() or needs_yaml_sidecar(tensors, checkpoint.architecture)
    elif not write_yaml and sidecar.exists():
        logger.warning("%s: the existing sidecar %s will be used when reading", path, sidecar.name)
    if not overwrite:
        for target in [path, sidecar] if write_yaml else [path]:
            if target.exists():
                raise ConfigError(
                    f"{target} already exists", hint="choose another name, or overwrite"
                )
    write_model_tensors(path, tensors, checkpoint.metadata, overwrite=overwrite)
    if write_yaml:
        write_ldm_yaml(checkpoint.architecture, sidecar, overwrite=True)
        return sidecar
    return None
