"""Standalone VAE files: the A1111 layout (read and written) and diffusers-layout files (read).

An A1111 VAE file is a checkpoint's `first_stage_model` state dict without the prefix
(`encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`), often wrapped in
`{"state_dict": ...}` and sometimes carrying training leftovers (`loss.*`,
`model_ema.decay/num_updates`), which are dropped as A1111 does. A1111 loads VAEs strictly, so
files are always written in this layout, never in diffusers'.

The config comes from a `<stem>.yaml` sidecar when there is one (an LDM autoencoder config plus a
`brushwork:` section, see `_ldm_yaml`), else from the shapes. A VAE file does not say which
family it is for: the scaling factor is the one of `family` (SD1/SD2: 0.18215, SDXL: 0.13025),
SD1's when not given. A1111 itself uses the checkpoint's scale factor, not the VAE's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError, UnsupportedModelError, WrongKindError
from brushwork.core.kinds import BaseFamily, FileFormat
from brushwork.formats import _ldm_keys as keys
from brushwork.formats import _ldm_yaml
from brushwork.formats._shapes import count_indices
from brushwork.formats.architecture import (
    infer_vae_config,
    plain_config,
    shape_map,
    standard_architecture,
)
from brushwork.formats.checkpoint import file_format_for, write_model_tensors
from brushwork.formats.safeio import read_model_file

logger = logging.getLogger(__name__)

_DROPPED = ("model_ema.decay", "model_ema.num_updates")
_SKELETON = {BaseFamily.SD1: "sd1", BaseFamily.SD2: "sd2", BaseFamily.SDXL: "sdxl"}


@dataclass
class VaeFile:
    """A VAE as read: diffusers AutoencoderKL state dict and config."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    format: FileFormat = FileFormat.SAFETENSORS
    layout: str = "ldm"  # the file's key layout: "ldm" (A1111) or "diffusers"


def _base_config(family: BaseFamily | str | None) -> dict[str, Any]:
    return standard_architecture(_SKELETON[BaseFamily(family or BaseFamily.SD1)]).vae


def _vae_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The VAE weights of a file, without training leftovers or a `first_stage_model.` prefix."""
    if any(k.startswith(keys.UNET_PREFIX) for k in tensors):
        raise WrongKindError(
            path,
            "is a whole checkpoint, not a VAE",
            hint="read it with read_checkpoint; its VAE is the checkpoint's `vae`",
        )
    kept = {k: v for k, v in tensors.items() if not k.startswith("loss") and k not in _DROPPED}
    if kept and all(k.startswith(keys.VAE_PREFIX) for k in kept):
        kept = {k[len(keys.VAE_PREFIX) :]: v for k, v in kept.items()}
    return kept


def _layout_of(tensors: Mapping[str, torch.Tensor], path: Path) -> str:
    if any(k.startswith("encoder.down.") for k in tensors):
        return "ldm"
    if any(k.startswith("encoder.down_blocks.") for k in tensors):
        return "diffusers"
    raise WrongKindError(
        path,
        "is not a VAE (no encoder.down.* or encoder.down_blocks.* weights)",
        hint="check that the file is a VAE; LoRAs, embeddings and checkpoints have their own readers",
    )


def vae_config_from_yaml(path: Path, *, family: BaseFamily | str | None = None) -> dict[str, Any]:
    """The AutoencoderKL config a VAE `<stem>.yaml` sidecar (or a checkpoint's yaml) describes."""
    doc = _ldm_yaml.load_yaml_file(path)
    fields, overrides = _ldm_yaml.parse_vae_document(doc, path)
    section = doc.get(_ldm_yaml.BRUSHWORK_SECTION) if isinstance(doc, Mapping) else None
    if family is None and isinstance(section, Mapping) and section.get("family"):
        family = str(section["family"])
    return _base_config(family) | fields | overrides


def read_vae(path: Path | str, *, family: BaseFamily | str | None = None) -> VaeFile:
    """Read a standalone VAE (.safetensors / .pt / .ckpt), A1111 or diffusers layout."""
    path = Path(path)
    model_file = read_model_file(path)
    tensors = _vae_tensors(model_file.tensors, path)
    layout = _layout_of(tensors, path)
    if layout == "diffusers":
        ldm, unknown = keys.vae_to_ldm(
            tensors, count_indices(shape_map(tensors), "encoder.down_blocks.")
        )
    else:
        ldm, unknown = tensors, []
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        logger.info("%s: VAE config from the sidecar %s", path, sidecar.name)
        config = vae_config_from_yaml(sidecar, family=family)
    else:
        config = infer_vae_config(ldm, base=_base_config(family), source=path)
    state_dict, unknown_ldm = keys.vae_from_ldm(ldm, len(config["block_out_channels"]))
    if unknown or unknown_ldm:
        raise UnsupportedModelError(
            path,
            f"has weights that do not belong to an AutoencoderKL: {(unknown + unknown_ldm)[:3]}",
        )
    return VaeFile(state_dict, config, dict(model_file.metadata), model_file.format, layout)


def vae_to_ldm_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """A diffusers VAE state dict in the A1111 standalone layout."""
    ldm, unknown = keys.vae_to_ldm(state_dict, len(config["block_out_channels"]))
    if unknown:
        raise ConfigError(f"VAE weights with no place in the LDM layout: {unknown[:3]}")
    return ldm


def vae_yaml_document(config: Mapping[str, Any]) -> dict[str, Any]:
    """An LDM autoencoder config for `config`, with a `brushwork:` section for the rest."""
    doc = _ldm_yaml.vae_document(config)
    fields, _ = _ldm_yaml.parse_vae_document(doc)
    derived = _base_config(None) | fields
    changed = {k: v for k, v in config.items() if k not in derived or derived[k] != v}
    changed["scaling_factor"] = config[
        "scaling_factor"
    ]  # always: it would otherwise follow `family=`
    doc[_ldm_yaml.BRUSHWORK_SECTION] = {"version": 1, "vae": changed}
    return doc


def write_vae(
    path: Path | str,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    write_yaml: bool | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path | None:
    """Write a VAE in the A1111 standalone layout (atomic); returns the sidecar's path if written.

    A `<stem>.yaml` sidecar is written when reading the file back without one would give another
    config (non-standard sizes, another scaling factor), unless `write_yaml` says otherwise.
    """
    path = Path(path)
    file_format_for(path)
    plain = _base_config(None) | plain_config(config)
    ldm = vae_to_ldm_state_dict(state_dict, plain)
    if dtype is not None:
        ldm = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ldm.items()}
    sidecar = path.with_suffix(".yaml")
    if write_yaml is None:
        inferred = infer_vae_config(shape_map(ldm), base=_base_config(None))
        write_yaml = sidecar.exists() or inferred != plain
    if not overwrite:
        for target in [path, sidecar] if write_yaml else [path]:
            if target.exists():
                raise ConfigError(
                    f"{target} already exists", hint="choose another name, or overwrite"
                )
    write_model_tensors(path, ldm, dict(metadata or {}), overwrite=overwrite)
    if write_yaml:
        _ldm_yaml.dump_yaml_file(vae_yaml_document(plain), sidecar, overwrite=True)
        return sidecar
    return None
