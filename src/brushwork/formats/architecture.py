"""What a Stable Diffusion model is built like: family, component configs, prediction type.

An architecture is read from tensor SHAPES alone (a safetensors header is enough), or from an
A1111-style `<stem>.yaml` sidecar (an LDM/SGM inference config). What shapes cannot show is
filled in with each family's conventions, the ones every real model follows:

* SD1 UNets have 8 attention heads; SD2/SDXL UNets have 64-channel heads;
* CLIP text encoders have 64-channel heads; CLIP-L uses quick_gelu, OpenCLIP towers gelu;
* the SD2 OpenCLIP tower of a real file has 24 layers, of which SD2 uses 23 (the penultimate
  output): as in diffusers, the text encoder keeps 23 and the last layer is left out;
* norm groups are 32; sample sizes and scaling factors are the family's.

SD 2.x 512 (epsilon) and SD 2.x 768-v (v-prediction) have the same shapes. A1111 tells them apart
by running the UNet once; brushwork does not run models here: it takes epsilon unless a yaml
sidecar says `parameterization: "v"`, the caller passes `prediction_type=`, or (SDXL, as A1111's
dev branch) the file holds a `v_pred` key.

Architectures whose configs equal a shipped skeleton (`brushwork.core.arch`) carry its name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from brushwork.core.arch import skeleton_config
from brushwork.core.errors import ArchitectureError, ConfigError, UnsupportedModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats import _ldm_yaml
from brushwork.formats._ldm_keys import (
    LEGACY_SD1_CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    TextEncoderSlot,
    text_encoder_slots,
)
from brushwork.formats._shapes import Shapes, count_indices, need_shape, shape_map, sub_shapes
from brushwork.formats.families import detect_family

__all__ = [
    "ModelArchitecture",
    "architecture_from_configs",
    "architecture_from_ldm_config",
    "detect_family",
    "infer_architecture",
    "infer_vae_config",
    "ldm_config_document",
    "plain_config",
    "read_ldm_yaml",
    "shape_map",
    "standard_architecture",
    "write_ldm_yaml",
]

PREDICTION_TYPES = ("epsilon", "v_prediction")
WITH_PROJECTION = "CLIPTextModelWithProjection"
# the CLIPTextConfig fields an architecture keeps
TEXT_ENCODER_FIELDS = (
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "projection_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
    "initializer_range",
    "initializer_factor",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)
_FAMILY_SKELETONS = {
    BaseFamily.SD1: ("sd1",),
    BaseFamily.SD2: ("sd2", "sd2-v"),
    BaseFamily.SDXL: ("sdxl",),
}
_HEAD_CHANNELS = 64
_SD1_UNET_HEADS = 8


@dataclass(frozen=True)
class ModelArchitecture:
    """A whole model's build plan, as diffusers/transformers configs.

    `unet` and `vae` are UNet2DConditionModel / AutoencoderKL configs (no `_`-keys);
    `text_encoders` maps "text_encoder" (and "text_encoder_2") to CLIPTextConfig kwargs, whose
    `architectures` says whether it is a CLIPTextModel or a CLIPTextModelWithProjection.
    """

    family: BaseFamily
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: dict[str, dict[str, Any]]
    prediction_type: str = "epsilon"
    skeleton: str | None = None

    def has_projection(self, text_encoder: str) -> bool:
        """Whether that text encoder is a CLIPTextModelWithProjection (keys under `text_model.`)."""
        return WITH_PROJECTION in (self.text_encoders[text_encoder].get("architectures") or [])


# ---------------------------------------------------------------------------------------------
# configs and skeletons


def plain_config(config: Any) -> dict[str, Any]:
    """A JSON-plain copy of a config (lists, not tuples), without diffusers' `_` keys."""
    if hasattr(config, "to_dict") and not isinstance(config, Mapping):
        config = config.to_dict()
    data = json.loads(json.dumps(dict(config), default=list))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _text_encoder_config(config: Any, base: Mapping[str, Any]) -> dict[str, Any]:
    data = plain_config(config)
    return {f: data[f] if data.get(f) is not None else base.get(f) for f in TEXT_ENCODER_FIELDS}


def _skeleton_components(name: str) -> dict[str, dict[str, Any]]:
    components = {"unet": plain_config(skeleton_config(name, "unet"))}
    components["vae"] = plain_config(skeleton_config(name, "vae"))
    for slot in text_encoder_slots(_skeleton_family(name).value):
        raw = skeleton_config(name, slot.name)
        components[slot.name] = {f: raw.get(f) for f in TEXT_ENCODER_FIELDS}
    return components


def _skeleton_family(name: str) -> BaseFamily:
    return next(f for f, names in _FAMILY_SKELETONS.items() if name in names)


def _base_skeleton(family: BaseFamily, prediction_type: str) -> str:
    if family is BaseFamily.SD2 and prediction_type == "v_prediction":
        return "sd2-v"
    return _FAMILY_SKELETONS[family][0]


def _check_prediction(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"unknown prediction type {prediction_type!r}", hint=f"use one of {PREDICTION_TYPES}"
        )
    return prediction_type


def standard_architecture(skeleton: str) -> ModelArchitecture:
    """The architecture of one shipped skeleton (`sd1`, `sd2`, `sd2-v`, `sdxl`)."""
    family = _skeleton_family(skeleton)
    parts = _skeleton_components(skeleton)
    prediction = str(skeleton_config(skeleton, "scheduler").get("prediction_type", "epsilon"))
    names = [slot.name for slot in text_encoder_slots(family.value)]
    return ModelArchitecture(
        family, parts["unet"], parts["vae"], {n: parts[n] for n in names}, prediction, skeleton
    )


def _assemble(
    family: BaseFamily,
    unet: dict[str, Any],
    vae: dict[str, Any],
    text_encoders: dict[str, dict[str, Any]],
    prediction_type: str,
) -> ModelArchitecture:
    arch = ModelArchitecture(family, unet, vae, text_encoders, prediction_type, None)
    for name in _FAMILY_SKELETONS[family]:
        if replace(standard_architecture(name), skeleton=None) == arch:
            return replace(arch, skeleton=name)
    return arch


def architecture_from_configs(
    family: BaseFamily | str,
    unet: Any,
    vae: Any,
    text_encoders: Mapping[str, Any],
    *,
    prediction_type: str = "epsilon",
) -> ModelArchitecture:
    """An architecture from full component configs (e.g. `unet.config`, `text_encoder.config`)."""
    family = BaseFamily(family)
    base = _skeleton_components(_base_skeleton(family, _check_prediction(prediction_type)))
    names = [slot.name for slot in text_encoder_slots(family.value)]
    if sorted(text_encoders) != sorted(names):
        raise ConfigError(
            f"a {family.value} model has text encoders {names}, not {sorted(text_encoders)}"
        )
    encoders = {n: _text_encoder_config(text_encoders[n], base[n]) for n in names}
    return _assemble(
        family,
        base["unet"] | plain_config(unet),
        base["vae"] | plain_config(vae),
        encoders,
        prediction_type,
    )


# ---------------------------------------------------------------------------------------------
# inference from shapes


def _transformer_depths(
    down: list[int], up: list[int], mid: int, source: Path | None
) -> tuple[int | list[int], list[int] | None]:
    """diffusers' transformer_layers_per_block (and reverse_...) from counted depths (0 = none)."""
    depths = [d or 1 for d in down]
    if down[-1] == 0:
        depths[-1] = mid  # unused by the level; diffusers gives the mid block depths[-1]
    elif down[-1] != mid:
        raise UnsupportedModelError(
            source, f"mid-block transformer depth {mid} differs from the last level's {down[-1]}"
        )
    expected = list(reversed(depths))
    actual = [u or e for u, e in zip(up, expected, strict=True)]
    reverse = None if actual == expected else actual
    return (depths[0] if len(set(depths)) == 1 else depths), reverse


def _unet_levels(shapes: Shapes, source: Path | None) -> tuple[int, int]:
    """(levels, layers_per_block) from the input-block numbering."""
    inputs = count_indices(shapes, "input_blocks.")
    samplers = [i for i in range(inputs) if f"input_blocks.{i}.0.op.weight" in shapes]
    per = samplers[0] if samplers else inputs
    levels = inputs // per if per else 0
    if (
        per < 2
        or inputs != levels * per
        or samplers != [per * (b + 1) for b in range(levels - 1)]
        or count_indices(shapes, "output_blocks.") != levels * per
    ):
        raise ArchitectureError(source, "has a UNet block layout brushwork cannot read")
    return levels, per - 1


def _infer_unet(
    shapes: Shapes,
    family: BaseFamily,
    base: Mapping[str, Any],
    text_encoders: Mapping[str, Mapping[str, Any]],
    source: Path | None,
) -> dict[str, Any]:
    in_channels = need_shape(shapes, "input_blocks.0.0.weight", UNET_PREFIX, source)[1]
    levels, layers = _unet_levels(shapes, source)
    firsts = [1 + level * (layers + 1) for level in range(levels)]
    channels = [
        need_shape(shapes, f"input_blocks.{i}.0.out_layers.3.weight", UNET_PREFIX, source)[0]
        for i in firsts
    ]
    down = [count_indices(shapes, f"input_blocks.{i}.1.transformer_blocks.") for i in firsts]
    up = [
        count_indices(shapes, f"output_blocks.{lv * (layers + 1)}.1.transformer_blocks.")
        for lv in range(levels)
    ]
    mid = count_indices(shapes, "middle_block.1.transformer_blocks.")
    if mid == 0:
        raise UnsupportedModelError(source, "has a UNet without mid-block attention (SSD-1B style)")
    depths, reverse = _transformer_depths(down, up, mid, source)
    proj_in = need_shape(shapes, "middle_block.1.proj_in.weight", UNET_PREFIX, source)
    context = next(s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight"))
    heads: int | list[int] = (
        _SD1_UNET_HEADS
        if family is BaseFamily.SD1
        else [max(c // _HEAD_CHANNELS, 1) for c in channels]
    )
    fields: dict[str, Any] = {
        "in_channels": in_channels,
        "out_channels": need_shape(shapes, "out.2.weight", UNET_PREFIX, source)[0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in down],
        "up_block_types": ["CrossAttnUpBlock2D" if u else "UpBlock2D" for u in up],
        "cross_attention_dim": context,
        "use_linear_projection": len(proj_in) == 2,
        "attention_head_dim": heads,
        "transformer_layers_per_block": depths,
        "reverse_transformer_layers_per_block": reverse,
    }
    return dict(base) | fields | _addition_embedding(shapes, family, text_encoders, source)


def _addition_embedding(
    shapes: Shapes,
    family: BaseFamily,
    text_encoders: Mapping[str, Mapping[str, Any]],
    source: Path | None,
) -> dict[str, Any]:
    label = shapes.get("label_emb.0.0.weight")
    if label is None:
        if family is BaseFamily.SDXL:
            raise ArchitectureError(source, "is an SDXL model without the UNet's label_emb weights")
        return {}
    if family is not BaseFamily.SDXL:
        raise UnsupportedModelError(
            source, "has a class-conditioned UNet (label_emb): not supported"
        )
    pooled = int(text_encoders["text_encoder_2"]["projection_dim"])
    time_dim, remainder = divmod(label[1] - pooled, 6)
    if remainder or time_dim <= 0:
        raise ArchitectureError(
            source, f"SDXL label_emb width {label[1]} does not fit a {pooled}-wide pooled embedding"
        )
    return {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": label[1],
    }


def infer_vae_config(
    ldm_vae_shapes: Mapping[str, Any],
    *,
    base: Mapping[str, Any] | None = None,
    source: Path | None = None,
) -> dict[str, Any]:
    """An AutoencoderKL config from LDM-layout VAE shapes (no `first_stage_model.` prefix)."""
    shapes = shape_map(ldm_vae_shapes)
    base = base if base is not None else standard_architecture("sd1").vae
    in_channels = need_shape(shapes, "encoder.conv_in.weight", "VAE ", source)[1]
    levels = count_indices(shapes, "encoder.down.")
    layers = count_indices(shapes, "encoder.down.0.block.")
    if (
        not levels
        or count_indices(shapes, "decoder.up.") != levels
        or count_indices(shapes, "decoder.up.0.block.") != layers + 1
    ):
        raise ArchitectureError(source, "has a VAE block layout brushwork cannot read")
    channels = [
        need_shape(shapes, f"encoder.down.{i}.block.0.conv1.weight", "VAE ", source)[0]
        for i in range(levels)
    ]
    return dict(base) | {
        "in_channels": in_channels,
        "out_channels": need_shape(shapes, "decoder.conv_out.weight", "VAE ", source)[0],
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": layers,
        "latent_channels": need_shape(shapes, "decoder.conv_in.weight", "VAE ", source)[1],
        "use_quant_conv": "quant_conv.weight" in shapes,
        "use_post_quant_conv": "post_quant_conv.weight" in shapes,
        "mid_block_add_attention": "encoder.mid.attn_1.q.weight" in shapes,
    }


def _infer_text_encoder(
    shapes: Shapes,
    slot: TextEncoderSlot,
    family: BaseFamily,
    base: dict[str, Any],
    source: Path | None,
) -> dict[str, Any]:
    where = slot.prefix
    body = sub_shapes(shapes, slot.prefix)
    if not body and family is BaseFamily.SD1:
        body, where = sub_shapes(shapes, LEGACY_SD1_CLIP_PREFIX), LEGACY_SD1_CLIP_PREFIX
    if not body:
        return base
    projection: int | None = None
    if slot.layout == "clip":
        vocab, hidden = need_shape(body, "embeddings.token_embedding.weight", where, source)
        positions = need_shape(body, "embeddings.position_embedding.weight", where, source)[0]
        layers = count_indices(body, "encoder.layers.")
        inner = need_shape(body, "encoder.layers.0.mlp.fc1.weight", where, source)[0]
    else:
        vocab, hidden = need_shape(body, "token_embedding.weight", where, source)
        positions = need_shape(body, "positional_embedding", where, source)[0]
        layers = count_indices(body, "transformer.resblocks.")
        inner = need_shape(body, "transformer.resblocks.0.mlp.c_fc.weight", where, source)[0]
        projection = body["text_projection"][1] if "text_projection" in body else None
        if family is BaseFamily.SD2 and layers == 24 and hidden == 1024:
            layers = 23  # SD2 uses the penultimate layer; diffusers keeps 23 of the 24
    if WITH_PROJECTION in (base.get("architectures") or []) and projection is not None:
        projection_dim = projection
    else:
        projection_dim = base["projection_dim"] if hidden == base["hidden_size"] else hidden
    return base | {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inner,
        "projection_dim": projection_dim,
        "num_hidden_layers": layers,
        "num_attention_heads": max(hidden // _HEAD_CHANNELS, 1),
        "max_position_embeddings": positions,
    }


def infer_architecture(
    ldm_state_dict_or_shapes: Mapping[str, Any],
    *,
    family: BaseFamily | str | None = None,
    prediction_type: str | None = None,
    source: Path | None = None,
) -> ModelArchitecture:
    """The architecture of an LDM-layout checkpoint from its tensor shapes alone.

    Accepts a state dict, a mapping name -> shape, or a safetensors header's tensors. `source`
    only names the file in errors.
    """
    shapes = shape_map(ldm_state_dict_or_shapes)
    fam = BaseFamily(family) if family else detect_family(shapes, source=source)
    if prediction_type is None:
        prediction_type = "v_prediction" if "v_pred" in shapes else "epsilon"
    base = _skeleton_components(_base_skeleton(fam, _check_prediction(prediction_type)))
    encoders = {
        slot.name: _infer_text_encoder(shapes, slot, fam, base[slot.name], source)
        for slot in text_encoder_slots(fam.value)
    }
    unet_shapes = sub_shapes(shapes, UNET_PREFIX)
    if not unet_shapes:
        raise ArchitectureError(source, f"has no UNet weights ({UNET_PREFIX}*)")
    unet = _infer_unet(unet_shapes, fam, base["unet"], encoders, source)
    vae_shapes = sub_shapes(shapes, VAE_PREFIX)
    vae = (
        infer_vae_config(vae_shapes, base=base["vae"], source=source) if vae_shapes else base["vae"]
    )
    return _assemble(fam, unet, vae, encoders, prediction_type)


# ---------------------------------------------------------------------------------------------
# LDM yaml sidecars


def _diff(wanted: Mapping[str, Any], derived: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wanted.items() if k not in derived or derived[k] != v}


def architecture_from_ldm_config(doc: Any, *, source: Path | None = None) -> ModelArchitecture:
    """An architecture from a parsed LDM/SGM inference config (A1111 yaml), with brushwork's overrides."""
    fields = _ldm_yaml.parse_document(doc, source)
    base = _skeleton_components(_base_skeleton(fields.family, fields.prediction_type))
    overrides = fields.overrides
    unet = base["unet"] | fields.unet | dict(overrides.get("unet") or {})
    vae = base["vae"] | fields.vae | dict(overrides.get("vae") or {})
    encoder_overrides = overrides.get("text_encoders") or {}
    encoders = {
        slot.name: base[slot.name] | dict(encoder_overrides.get(slot.name) or {})
        for slot in text_encoder_slots(fields.family.value)
    }
    return _assemble(fields.family, unet, vae, encoders, fields.prediction_type)


def ldm_config_document(arch: ModelArchitecture) -> dict[str, Any]:
    """The LDM/SGM inference config of `arch`, plus a `brushwork:` section for what LDM cannot say."""
    doc = _ldm_yaml.ldm_document(arch.family, arch.prediction_type, arch.unet, arch.vae)
    derived = architecture_from_ldm_config(doc)
    section: dict[str, Any] = {"version": 1, "family": arch.family.value}
    for name, wanted, have in (("unet", arch.unet, derived.unet), ("vae", arch.vae, derived.vae)):
        if changed := _diff(wanted, have):
            section[name] = changed
    encoders = {
        name: changed
        for name, config in arch.text_encoders.items()
        if (changed := _diff(config, derived.text_encoders[name]))
    }
    if encoders:
        section["text_encoders"] = encoders
    doc[_ldm_yaml.BRUSHWORK_SECTION] = section
    if replace(architecture_from_ldm_config(doc), skeleton=None) != replace(arch, skeleton=None):
        raise ArchitectureError(None, "this architecture cannot be written as an LDM config")
    return doc


def read_ldm_yaml(path: Path | str) -> ModelArchitecture:
    """The architecture an A1111 `<stem>.yaml` sidecar describes."""
    path = Path(path)
    return architecture_from_ldm_config(_ldm_yaml.load_yaml_file(path), source=path)


def write_ldm_yaml(arch: ModelArchitecture, path: Path | str, *, overwrite: bool = True) -> None:
    """Write `arch` as an A1111-style LDM/SGM yaml (atomic)."""
    _ldm_yaml.dump_yaml_file(ldm_config_document(arch), Path(path), overwrite=overwrite)
