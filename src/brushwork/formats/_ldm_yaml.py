"""LDM/CompVis inference configs (A1111 `<stem>.yaml` sidecars) <-> diffusers config fields.

Pure functions on plain dicts. The documents follow the configs A1111 ships
(`v1-inference.yaml`, `v2-inference(-v).yaml`, `sd_xl_base.yaml`), so A1111 can use a sidecar
written here for a standard-size model. Only the fields an LDM config can express are derived
from it; everything else comes from the family's shipped skeleton. A brushwork-specific
top-level `brushwork:` section (ignored by A1111, which reads only `model:`) carries what LDM
configs cannot say: the text-encoder sizes of non-standard (e.g. tiny test) models and any other
diffusers field that differs from the skeleton. Its layout::

    brushwork:
      version: 1
      family: sd1 | sd2 | sdxl
      unet: {<diffusers UNet2DConditionModel config field>: value, ...}   # overrides
      vae: {<diffusers AutoencoderKL config field>: value, ...}           # overrides
      text_encoders: {text_encoder: {<CLIPTextConfig field>: value}, ...} # overrides
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brushwork.core.errors import ArchitectureError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.core.kinds import BaseFamily

BRUSHWORK_SECTION = "brushwork"
_SDXL_TIME_INPUTS = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
_SGM = "sgm.modules"


@dataclass(frozen=True)
class LdmFields:
    """What an LDM config says, as diffusers config fields (plus brushwork's overrides)."""

    family: BaseFamily
    prediction_type: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# writing


def _unet_params(unet: Mapping[str, Any]) -> dict[str, Any]:
    channels = [int(c) for c in unet["block_out_channels"]]
    base = channels[0]
    params: dict[str, Any] = {
        "use_checkpoint": True,
        "image_size": 32,  # unused by LDM
        "in_channels": unet["in_channels"],
        "out_channels": unet["out_channels"],
        "model_channels": base,
        "attention_resolutions": [
            2**level for level, kind in enumerate(unet["down_block_types"]) if "CrossAttn" in kind
        ],
        "num_res_blocks": unet["layers_per_block"],
        "channel_mult": [c // base for c in channels],
    }
    heads = unet["attention_head_dim"]
    if isinstance(heads, int):
        params["num_heads"] = heads
    else:
        params["num_head_channels"] = channels[0] // max(int(heads[0]), 1)
    params["use_spatial_transformer"] = True
    if unet.get("use_linear_projection"):
        params["use_linear_in_transformer"] = True
    params["transformer_depth"] = unet.get("transformer_layers_per_block", 1)
    params["context_dim"] = unet["cross_attention_dim"]
    params["legacy"] = False
    return params


def _first_stage(vae: Mapping[str, Any], target: str) -> dict[str, Any]:
    channels = [int(c) for c in vae["block_out_channels"]]
    ddconfig = {
        "double_z": True,
        "z_channels": vae["latent_channels"],
        "resolution": 256,
        "in_channels": vae["in_channels"],
        "out_ch": vae["out_channels"],
        "ch": channels[0],
        "ch_mult": [c // channels[0] for c in channels],
        "num_res_blocks": vae["layers_per_block"],
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    params = {"embed_dim": vae["latent_channels"], "monitor": "val/rec_loss", "ddconfig": ddconfig}
    params["lossconfig"] = {"target": "torch.nn.Identity"}
    return {"target": target, "params": params}


def vae_document(vae: Mapping[str, Any]) -> dict[str, Any]:
    """A standalone LDM autoencoder config (`ldm.models.autoencoder.AutoencoderKL`)."""
    return {"model": _first_stage(vae, "ldm.models.autoencoder.AutoencoderKL")}


def _ldm_document(
    family: BaseFamily, prediction_type: str, unet: Mapping[str, Any], vae: Mapping[str, Any]
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if prediction_type == "v_prediction":
        params["parameterization"] = "v"
    params |= {
        "linear_start": 0.00085,
        "linear_end": 0.012,
        "num_timesteps_cond": 1,
        "log_every_t": 200,
        "timesteps": 1000,
        "first_stage_key": "jpg",
        "cond_stage_key": "txt",
        "image_size": unet.get("sample_size", 64),
        "channels": vae["latent_channels"],
        "cond_stage_trainable": False,
        "conditioning_key": "crossattn",
        "monitor": "val/loss_simple_ema",
        "scale_factor": vae["scaling_factor"],
        "use_ema": False,
        "unet_config": {
            "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
            "params": _unet_params(unet),
        },
        "first_stage_config": _first_stage(vae, "ldm.models.autoencoder.AutoencoderKL"),
    }
    if family is BaseFamily.SD1:
        params["cond_stage_config"] = {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"}
    else:
        params["cond_stage_config"] = {
            "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
            "params": {"freeze": True, "layer": "penultimate"},
        }
    return {
        "model": {
            "base_learning_rate": 1.0e-04,
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": params,
        }
    }


def _sgm_conditioner(time_dim: int) -> dict[str, Any]:
    models: list[dict[str, Any]] = [
        {
            "is_trainable": False,
            "input_key": "txt",
            "target": f"{_SGM}.encoders.modules.FrozenCLIPEmbedder",
            "params": {"layer": "hidden", "layer_idx": 11},
        },
        {
            "is_trainable": False,
            "input_key": "txt",
            "target": f"{_SGM}.encoders.modules.FrozenOpenCLIPEmbedder2",
            "params": {
                "arch": "ViT-bigG-14",
                "version": "laion2b_s39b_b160k",
                "freeze": True,
                "layer": "penultimate",
                "always_return_pooled": True,
                "legacy": False,
            },
        },
    ]
    models += [
        {
            "is_trainable": False,
            "input_key": key,
            "target": f"{_SGM}.encoders.modules.ConcatTimestepEmbedderND",
            "params": {"outdim": time_dim},
        }
        for key in _SDXL_TIME_INPUTS
    ]
    return {"target": "sgm.modules.GeneralConditioner", "params": {"emb_models": models}}


def _sgm_document(
    prediction_type: str, unet: Mapping[str, Any], vae: Mapping[str, Any]
) -> dict[str, Any]:
    network = _unet_params(unet)
    network = {
        "adm_in_channels": unet["projection_class_embeddings_input_dim"],
        "num_classes": "sequential",
    } | network
    network["spatial_transformer_attn_type"] = "softmax-xformers"
    scaling = "VScaling" if prediction_type == "v_prediction" else "EpsScaling"
    weighting = "VWeighting" if prediction_type == "v_prediction" else "EpsWeighting"
    diffusion = f"{_SGM}.diffusionmodules"
    denoiser = {
        "target": f"{diffusion}.denoiser.DiscreteDenoiser",
        "params": {
            "num_idx": 1000,
            "weighting_config": {"target": f"{diffusion}.denoiser_weighting.{weighting}"},
            "scaling_config": {"target": f"{diffusion}.denoiser_scaling.{scaling}"},
            "discretization_config": {
                "target": f"{diffusion}.discretizer.LegacyDDPMDiscretization"
            },
        },
    }
    params = {
        "scale_factor": vae["scaling_factor"],
        "disable_first_stage_autocast": True,
        "denoiser_config": denoiser,
        "network_config": {"target": f"{diffusion}.openaimodel.UNetModel", "params": network},
        "conditioner_config": _sgm_conditioner(int(unet.get("addition_time_embed_dim") or 256)),
        "first_stage_config": _first_stage(
            vae, "sgm.models.autoencoder.AutoencoderKLInferenceWrapper"
        ),
    }
    return {"model": {"target": "sgm.models.diffusion.DiffusionEngine", "params": params}}


def ldm_document(
    family: BaseFamily, prediction_type: str, unet: Mapping[str, Any], vae: Mapping[str, Any]
) -> dict[str, Any]:
    """The LDM (SD1/SD2) or SGM (SDXL) inference config of a model, without brushwork's section."""
    if family is BaseFamily.SDXL:
        return _sgm_document(prediction_type, unet, vae)
    return _ldm_document(family, prediction_type, unet, vae)


# ---------------------------------------------------------------------------------------------
# reading


def _mapping(value: Any, where: str, source: Path | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ArchitectureError(source, f"config entry {where} is missing or not a mapping")
    return value


def _depth(value: Any, levels: int, source: Path | None) -> int | list[int]:
    if isinstance(value, int):
        return value
    depths = [int(d) for d in value]
    if len(depths) != levels:
        raise ArchitectureError(
            source, f"transformer_depth {depths} does not have one entry per level ({levels})"
        )
    return depths[0] if len(set(depths)) == 1 else depths


def unet_fields(params: Mapping[str, Any], source: Path | None = None) -> dict[str, Any]:
    """diffusers UNet config fields from LDM `unet_config.params` / `network_config.params`."""
    try:
        base = int(params["model_channels"])
        channels = [base * int(m) for m in params["channel_mult"]]
        layers = params["num_res_blocks"]
        resolutions = {int(r) for r in params.get("attention_resolutions", [])}
        context = params.get("context_dim")
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchitectureError(source, f"UNet config lacks or mangles {exc}") from None
    if not isinstance(layers, int):
        raise ArchitectureError(source, f"per-level num_res_blocks {layers!r} is not supported")
    attention = [2**level in resolutions for level in range(len(channels))]
    if int(params.get("num_heads", -1)) != -1:
        heads: int | list[int] = int(params["num_heads"])
    else:
        head_channels = int(params.get("num_head_channels", 64))
        heads = [max(c // head_channels, 1) for c in channels]
    return {
        "in_channels": int(params.get("in_channels", 4)),
        "out_channels": int(params.get("out_channels", 4)),
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "cross_attention_dim": context[0] if isinstance(context, list) else context,
        "use_linear_projection": bool(params.get("use_linear_in_transformer", False)),
        "attention_head_dim": heads,
        "transformer_layers_per_block": _depth(
            params.get("transformer_depth", 1), len(channels), source
        ),
    }


def vae_fields(first_stage: Mapping[str, Any], source: Path | None = None) -> dict[str, Any]:
    """diffusers AutoencoderKL config fields from an LDM `first_stage_config`."""
    params = _mapping(first_stage.get("params"), "first_stage_config.params", source)
    dd = _mapping(params.get("ddconfig"), "first_stage_config.params.ddconfig", source)
    try:
        channels = [int(dd["ch"]) * int(m) for m in dd["ch_mult"]]
        fields = {
            "in_channels": int(dd.get("in_channels", 3)),
            "out_channels": int(dd.get("out_ch", 3)),
            "block_out_channels": channels,
            "down_block_types": ["DownEncoderBlock2D"] * len(channels),
            "up_block_types": ["UpDecoderBlock2D"] * len(channels),
            "layers_per_block": int(dd["num_res_blocks"]),
            "latent_channels": int(dd.get("z_channels", 4)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchitectureError(source, f"VAE ddconfig lacks or mangles {exc}") from None
    if "scale_factor" in params:
        fields["scaling_factor"] = float(params["scale_factor"])
    return fields


def _family_of(
    model: Mapping[str, Any], params: Mapping[str, Any], source: Path | None
) -> BaseFamily:
    section = model.get(BRUSHWORK_SECTION)
    if isinstance(section, Mapping) and section.get("family"):
        return BaseFamily(str(section["family"]))
    if "network_config" in params:
        embedders = params.get("conditioner_config", {}).get("params", {}).get("emb_models", [])
        targets = [str(e.get("target", "")) for e in embedders if isinstance(e, Mapping)]
        if any(t.endswith("FrozenCLIPEmbedder") for t in targets):
            return BaseFamily.SDXL
        raise ArchitectureError(
            source,
            "is an SGM config without a CLIP-L text encoder (an SDXL refiner?): not supported",
        )
    target = str(params.get("cond_stage_config", {}).get("target", ""))
    if target.endswith("FrozenOpenCLIPEmbedder"):
        return BaseFamily.SD2
    if target.endswith("FrozenCLIPEmbedder"):
        return BaseFamily.SD1
    raise ArchitectureError(
        source,
        f"cannot tell the model family from cond_stage_config target {target!r}",
        hint="only SD 1.x (FrozenCLIPEmbedder), SD 2.x (FrozenOpenCLIPEmbedder) and SDXL configs are supported",
    )


def _prediction_of(params: Mapping[str, Any]) -> str:
    if str(params.get("parameterization", "eps")) == "v":
        return "v_prediction"
    denoiser = params.get("denoiser_config", {}).get("params", {})
    scaling = str(denoiser.get("scaling_config", {}).get("target", ""))
    return "v_prediction" if scaling.endswith("VScaling") else "epsilon"


def _time_embed_dim(params: Mapping[str, Any]) -> int | None:
    embedders = params.get("conditioner_config", {}).get("params", {}).get("emb_models", [])
    for embedder in embedders:
        if str(embedder.get("target", "")).endswith("ConcatTimestepEmbedderND"):
            return int(embedder.get("params", {}).get("outdim", 256))
    return None


def parse_document(doc: Any, source: Path | None = None) -> LdmFields:
    """Read an LDM/SGM inference config (already parsed from yaml)."""
    top = _mapping(doc, "(top level)", source)
    model = _mapping(top.get("model"), "model", source)
    params = _mapping(model.get("params"), "model.params", source)
    family = _family_of(top, params, source)
    network = params.get("unet_config") or params.get("network_config")
    unet_params = _mapping(
        _mapping(network, "model.params.unet_config", source).get("params"),
        "unet_config.params",
        source,
    )
    unet = unet_fields(unet_params, source)
    if unet_params.get("num_classes") == "sequential":
        unet["addition_embed_type"] = "text_time"
        unet["projection_class_embeddings_input_dim"] = int(unet_params["adm_in_channels"])
        unet["addition_time_embed_dim"] = _time_embed_dim(params) or 256
    elif "num_classes" in unet_params:
        raise ArchitectureError(source, "class-conditioned UNets (num_classes) are not supported")
    first_stage = _mapping(
        params.get("first_stage_config"), "model.params.first_stage_config", source
    )
    vae = vae_fields(first_stage, source)
    if "scale_factor" in params:
        vae["scaling_factor"] = float(params["scale_factor"])
    section = top.get(BRUSHWORK_SECTION)
    overrides = dict(section) if isinstance(section, Mapping) else {}
    return LdmFields(family, _prediction_of(params), unet, vae, overrides)


def parse_vae_document(
    doc: Any, source: Path | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a standalone VAE config: (AutoencoderKL fields, brushwork overrides)."""
    top = _mapping(doc, "(top level)", source)
    model = _mapping(top.get("model"), "model", source)
    params = model.get("params", {})
    first_stage = params.get("first_stage_config", model) if isinstance(params, Mapping) else model
    fields = vae_fields(_mapping(first_stage, "model", source), source)
    if first_stage is not model and "scale_factor" in params:  # a whole-checkpoint config
        fields["scaling_factor"] = float(params["scale_factor"])
    section = top.get(BRUSHWORK_SECTION)
    overrides = dict(section.get("vae", {})) if isinstance(section, Mapping) else {}
    return fields, overrides


def load_yaml_file(path: Path) -> Any:
    """A yaml file's content (safe loader), with errors that name the file."""
    try:
        loader = getattr(
            yaml, "CSafeLoader", yaml.SafeLoader
        )  # the C loader when built with libyaml
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except OSError as exc:
        raise ArchitectureError(path, f"cannot be read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ArchitectureError(path, f"is not valid yaml: {exc}") from None


def dump_yaml_file(doc: Any, path: Path, *, overwrite: bool) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(doc, Dumper=dumper, sort_keys=False, default_flow_style=False)
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
