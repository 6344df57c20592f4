"""Key maps between the LDM/CompVis ("original", A1111) layout and the diffusers layout.

Pure functions on key strings and state dicts, generic over the number of levels, layers per
block and transformer depth, so a tiny test model converts exactly like SD 1.5. Every converter
returns `(converted, unknown_keys)`; callers decide whether an unknown key is an error or is
kept verbatim.

Layouts (LDM side, prefixes stripped):

* UNet (`model.diffusion_model.`): `input_blocks.0.0` is conv_in; each level has
  `layers_per_block` (resnet `.0`, attention `.1`) blocks, then a downsampler `.0.op` except on
  the last level; `middle_block.{0,1,2}`; `output_blocks` mirror with one more layer per level
  and the upsampler at `.1.conv` (no attention) or `.2.conv` (attention).
* VAE (`first_stage_model.`): `encoder.down.{i}.block.{j}`, `decoder.up.{i}` numbered from the
  bottom (reversed against diffusers' `up_blocks`), `mid.block_{1,2}`, `mid.attn_1.{q,k,v,
  proj_out,norm}` with 1x1-conv weights where diffusers has linear ones.
* OpenCLIP text towers (SD2 `cond_stage_model.model.`, SDXL `conditioner.embedders.1.model.`):
  `transformer.resblocks.{n}.attn.in_proj_{weight,bias}` fuse q/k/v; `text_projection` is the
  transpose of transformers' `text_projection.weight`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
EMA_PREFIX = "model_ema."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")

Converted = tuple[dict[str, torch.Tensor], list[str]]

_UNET_FIXED = MappingProxyType(
    {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
)
_UNET_FIXED_BACK = MappingProxyType({v: k for k, v in _UNET_FIXED.items()})
_UNET_RESNET = MappingProxyType(
    {
        "norm1": "in_layers.0",
        "conv1": "in_layers.2",
        "time_emb_proj": "emb_layers.1",
        "norm2": "out_layers.0",
        "conv2": "out_layers.3",
        "conv_shortcut": "skip_connection",
    }
)
_UNET_RESNET_BACK = MappingProxyType({v: k for k, v in _UNET_RESNET.items()})
_VAE_ATTENTION = MappingProxyType(
    {
        "group_norm": "norm",
        "to_q": "q",
        "to_k": "k",
        "to_v": "v",
        "to_out.0": "proj_out",
        # diffusers < 0.14 VAE files
        "query": "q",
        "key": "k",
        "value": "v",
        "proj_attn": "proj_out",
    }
)
_VAE_ATTENTION_BACK = MappingProxyType(
    {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
)

_D_BLOCK = re.compile(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)")
_D_SAMPLE = re.compile(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)")
_U_BLOCK = re.compile(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)")
_U_SAMPLE = re.compile(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)")
_L_IN = re.compile(r"input_blocks\.(\d+)\.(\d+)\.(.+)")
_L_MID = re.compile(r"middle_block\.(\d+)\.(.+)")
_L_OUT = re.compile(r"output_blocks\.(\d+)\.(\d+)\.(.+)")
_V_MID_ATTN = re.compile(
    r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn)\.(.+)"
)
_LV_BLOCK = re.compile(r"(down|up)\.(\d+)\.block\.(\d+)\.(.+)")
_LV_SAMPLE = re.compile(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(.+)")
_LV_MID = re.compile(r"mid\.block_(\d+)\.(.+)")
_LV_MID_ATTN = re.compile(r"mid\.attn_1\.(norm|q|k|v|proj_out)\.(.+)")
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_CLIP_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")


@dataclass(frozen=True)
class UnetLayout:
    """What the UNet key map needs to know beyond the key itself."""

    layers_per_block: int
    up_block_has_attention: tuple[bool, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UnetLayout:
        layers = config["layers_per_block"]
        if not isinstance(layers, int):
            raise ValueError(f"per-level layers_per_block {layers!r} has no LDM layout")
        up_types = tuple(str(t) for t in config["up_block_types"])
        return cls(layers, tuple("CrossAttn" in t for t in up_types))


def _rename_head(rest: str, table: Mapping[str, str]) -> str | None:
    """`rest` with its leading module path renamed by `table`, or None if none applies."""
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    return None


def _fixed(key: str, table: Mapping[str, str]) -> str | None:
    module, _, param = key.rpartition(".")
    new = table.get(module)
    return None if new is None else f"{new}.{param}"


# ---------------------------------------------------------------------------------------------
# UNet


def unet_key_to_ldm(key: str, layout: UnetLayout) -> str | None:
    """diffusers UNet key -> LDM key (without `model.diffusion_model.`), or None if unknown."""
    per = layout.layers_per_block + 1
    if match := _D_BLOCK.fullmatch(key):
        level, kind, layer, rest = match.groups()
        index = 1 + int(level) * per + int(layer)
        if kind == "attentions":
            return f"input_blocks.{index}.1.{rest}"
        new = _rename_head(rest, _UNET_RESNET)
        return None if new is None else f"input_blocks.{index}.0.{new}"
    if match := _D_SAMPLE.fullmatch(key):
        return f"input_blocks.{(int(match[1]) + 1) * per}.0.op.{match[2]}"
    if match := _MID.fullmatch(key):
        kind, number, rest = match.groups()
        if kind == "attentions":
            return f"middle_block.{2 * int(number) + 1}.{rest}"
        new = _rename_head(rest, _UNET_RESNET)
        return None if new is None else f"middle_block.{2 * int(number)}.{new}"
    if match := _U_BLOCK.fullmatch(key):
        level, kind, layer, rest = match.groups()
        index = int(level) * per + int(layer)
        if kind == "attentions":
            return f"output_blocks.{index}.1.{rest}"
        new = _rename_head(rest, _UNET_RESNET)
        return None if new is None else f"output_blocks.{index}.0.{new}"
    if match := _U_SAMPLE.fullmatch(key):
        level = int(match[1])
        slot = (
            2
            if level < len(layout.up_block_has_attention) and layout.up_block_has_attention[level]
            else 1
        )
        return f"output_blocks.{level * per + per - 1}.{slot}.conv.{match[2]}"
    return _fixed(key, _UNET_FIXED)


def unet_key_from_ldm(key: str, layout: UnetLayout) -> str | None:
    """LDM UNet key (without prefix) -> diffusers key, or None if unknown."""
    per = layout.layers_per_block + 1
    if (match := _L_IN.fullmatch(key)) and match[1] != "0":
        level, layer = divmod(int(match[1]) - 1, per)
        slot, rest = match[2], match[3]
        if layer == per - 1:
            if slot == "0" and rest.startswith("op."):
                return f"down_blocks.{level}.downsamplers.0.conv.{rest[3:]}"
            return None
        if slot == "1":
            return f"down_blocks.{level}.attentions.{layer}.{rest}"
        new = _rename_head(rest, _UNET_RESNET_BACK) if slot == "0" else None
        return None if new is None else f"down_blocks.{level}.resnets.{layer}.{new}"
    if match := _L_MID.fullmatch(key):
        number, rest = int(match[1]), match[2]
        if number % 2:
            return f"mid_block.attentions.{number // 2}.{rest}"
        new = _rename_head(rest, _UNET_RESNET_BACK)
        return None if new is None else f"mid_block.resnets.{number // 2}.{new}"
    if match := _L_OUT.fullmatch(key):
        level, layer = divmod(int(match[1]), per)
        slot, rest = match[2], match[3]
        if slot in {"1", "2"} and rest.startswith("conv.") and layer == per - 1:
            return f"up_blocks.{level}.upsamplers.0.conv.{rest[5:]}"
        if slot == "1":
            return f"up_blocks.{level}.attentions.{layer}.{rest}"
        new = _rename_head(rest, _UNET_RESNET_BACK) if slot == "0" else None
        return None if new is None else f"up_blocks.{level}.resnets.{layer}.{new}"
    return _fixed(key, _UNET_FIXED_BACK)


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], layout: UnetLayout) -> Converted:
    """A diffusers UNet state dict in LDM layout (keys without prefix)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        new = unet_key_to_ldm(key, layout)
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    return out, unknown


def unet_from_ldm(state_dict: Mapping[str, torch.Tensor], layout: UnetLayout) -> Converted:
    """An LDM UNet state dict (keys without prefix) in diffusers layout."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        new = unet_key_from_ldm(key, layout)
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    return out, unknown


def ema_key(ldm_unet_key: str) -> str:
    """The flat name LDM's EMA keeps a UNet weight under (`model_ema.diffusion_modelinput_blocks00weight`)."""
    return EMA_PREFIX + ("diffusion_model." + ldm_unet_key).replace(".", "")


# ---------------------------------------------------------------------------------------------
# VAE


def _vae_resnet_to_ldm(rest: str) -> str:
    return (
        rest.replace("conv_shortcut.", "nin_shortcut.", 1)
        if rest.startswith("conv_shortcut.")
        else rest
    )


def _vae_resnet_from_ldm(rest: str) -> str:
    return (
        rest.replace("nin_shortcut.", "conv_shortcut.", 1)
        if rest.startswith("nin_shortcut.")
        else rest
    )


def vae_key_to_ldm(key: str, num_levels: int) -> str | None:
    """diffusers VAE key -> LDM key (without `first_stage_model.`), or None if unknown."""
    part, _, rest = key.partition(".")
    if part in {"quant_conv", "post_quant_conv"}:
        return key
    if part not in {"encoder", "decoder"}:
        return None
    new: str | None = None
    if rest.startswith(("conv_in.", "conv_out.")):
        new = rest
    elif rest.startswith("conv_norm_out."):
        new = "norm_out." + rest[len("conv_norm_out.") :]
    elif match := _V_MID_ATTN.fullmatch(rest):
        new = f"mid.attn_1.{_VAE_ATTENTION[match[1]]}.{match[2]}"
    elif (match := _MID.fullmatch(rest)) and match[1] == "resnets":
        new = f"mid.block_{int(match[2]) + 1}.{_vae_resnet_to_ldm(match[3])}"
    elif (match := _D_BLOCK.fullmatch(rest)) and part == "encoder" and match[2] == "resnets":
        new = f"down.{match[1]}.block.{match[3]}.{_vae_resnet_to_ldm(match[4])}"
    elif (match := _D_SAMPLE.fullmatch(rest)) and part == "encoder":
        new = f"down.{match[1]}.downsample.conv.{match[2]}"
    elif (match := _U_BLOCK.fullmatch(rest)) and part == "decoder" and match[2] == "resnets":
        new = f"up.{num_levels - 1 - int(match[1])}.block.{match[3]}.{_vae_resnet_to_ldm(match[4])}"
    elif (match := _U_SAMPLE.fullmatch(rest)) and part == "decoder":
        new = f"up.{num_levels - 1 - int(match[1])}.upsample.conv.{match[2]}"
    return None if new is None else f"{part}.{new}"


def vae_key_from_ldm(key: str, num_levels: int) -> str | None:
    """LDM VAE key (without prefix) -> diffusers key, or None if unknown."""
    part, _, rest = key.partition(".")
    if part in {"quant_conv", "post_quant_conv"}:
        return key
    if part not in {"encoder", "decoder"}:
        return None
    new: str | None = None
    if rest.startswith(("conv_in.", "conv_out.")):
        new = rest
    elif rest.startswith("norm_out."):
        new = "conv_norm_out." + rest[len("norm_out.") :]
    elif match := _LV_MID_ATTN.fullmatch(rest):
        new = f"mid_block.attentions.0.{_VAE_ATTENTION_BACK[match[1]]}.{match[2]}"
    elif match := _LV_MID.fullmatch(rest):
        new = f"mid_block.resnets.{int(match[1]) - 1}.{_vae_resnet_from_ldm(match[2])}"
    elif (match := _LV_BLOCK.fullmatch(rest)) and (match[1] == "down") == (part == "encoder"):
        side, level, layer, tail = match.groups()
        index = int(level) if side == "down" else num_levels - 1 - int(level)
        new = f"{side}_blocks.{index}.resnets.{layer}.{_vae_resnet_from_ldm(tail)}"
    elif (match := _LV_SAMPLE.fullmatch(rest)) and (match[1] == "down") == (part == "encoder"):
        side, level, _kind, tail = match.groups()
        index = int(level) if side == "down" else num_levels - 1 - int(level)
        new = f"{side}_blocks.{index}.{side}samplers.0.conv.{tail}"
    return None if new is None else f"{part}.{new}"


def _is_vae_attention_weight(ldm_key: str) -> bool:
    return ".mid.attn_1." in f".{ldm_key}" and ldm_key.endswith(
        ("q.weight", "k.weight", "v.weight", "proj_out.weight")
    )


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> Converted:
    """A diffusers VAE state dict in LDM layout; mid-attention linear weights become 1x1 convs."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        new = vae_key_to_ldm(key, num_levels)
        if new is None:
            unknown.append(key)
            continue
        if _is_vae_attention_weight(new) and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[new] = tensor
    return out, unknown


def vae_from_ldm(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> Converted:
    """An LDM VAE state dict in diffusers layout; 1x1-conv attention weights become linear."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        new = vae_key_from_ldm(key, num_levels)
        if new is None:
            unknown.append(key)
            continue
        if _is_vae_attention_weight(key) and tensor.ndim > 2:
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
        out[new] = tensor
    return out, unknown


# ---------------------------------------------------------------------------------------------
# OpenCLIP text towers (transformers body keys: no `text_model.` prefix)

_OPENCLIP_FIXED = MappingProxyType(
    {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
)
_OPENCLIP_FIXED_BACK = MappingProxyType({v: k for k, v in _OPENCLIP_FIXED.items()})
_OPENCLIP_LAYER = MappingProxyType(
    {
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
)
_OPENCLIP_LAYER_BACK = MappingProxyType({v: k for k, v in _OPENCLIP_LAYER.items()})
_QKV = ("q_proj", "k_proj", "v_proj")


def openclip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> Converted:
    """transformers CLIP text body keys -> OpenCLIP keys (q/k/v fused into `in_proj`)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    fused: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if key == "text_projection.weight":
            out["text_projection"] = tensor.T.contiguous()
        elif key in _OPENCLIP_FIXED:
            out[_OPENCLIP_FIXED[key]] = tensor
        elif match := _CLIP_LAYER.fullmatch(key):
            layer, rest = match.groups()
            module, _, param = rest.rpartition(".")
            if module.startswith("self_attn.") and module[len("self_attn.") :] in _QKV:
                fused.setdefault((layer, param), {})[module[len("self_attn.") :]] = tensor
            elif module in _OPENCLIP_LAYER:
                out[f"transformer.resblocks.{layer}.{_OPENCLIP_LAYER[module]}.{param}"] = tensor
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    for (layer, param), parts in fused.items():
        if set(parts) != set(_QKV):
            unknown.extend(f"encoder.layers.{layer}.self_attn.{p}.{param}" for p in parts)
            continue
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(
            [parts[p] for p in _QKV]
        )
    return out, unknown


def openclip_from_ldm(state_dict: Mapping[str, torch.Tensor]) -> Converted:
    """OpenCLIP text-tower keys (prefix stripped) -> transformers CLIP text body keys."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if key == "text_projection":
            out["text_projection.weight"] = tensor.T.contiguous()
        elif key in _OPENCLIP_FIXED_BACK:
            out[_OPENCLIP_FIXED_BACK[key]] = tensor
        elif match := _RESBLOCK.fullmatch(key):
            layer, rest = match.groups()
            module, _, param = rest.rpartition(".")
            if module == "attn" and param in {"in_proj_weight", "in_proj_bias"}:
                for name, chunk in zip(_QKV, tensor.chunk(3, dim=0), strict=True):
                    out[f"encoder.layers.{layer}.self_attn.{name}.{param[len('in_proj_') :]}"] = (
                        chunk
                    )
            elif module in _OPENCLIP_LAYER_BACK:
                out[f"encoder.layers.{layer}.{_OPENCLIP_LAYER_BACK[module]}.{param}"] = tensor
            else:
                unknown.append(key)
        else:
            unknown.append(key)
    return out, unknown


def openclip_layer_of(ldm_key: str) -> int | None:
    """The resblock number of an OpenCLIP key (prefix stripped), if it belongs to one."""
    match = _RESBLOCK.fullmatch(ldm_key)
    return None if match is None else int(match[1])


def clip_layer_of(body_key: str) -> int | None:
    """The encoder layer number of a transformers CLIP text body key, if it belongs to one."""
    match = _CLIP_LAYER.fullmatch(body_key)
    return None if match is None else int(match[1])


# ---------------------------------------------------------------------------------------------
# where each family keeps its text encoders


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family: diffusers component name, LDM prefix, tower layout."""

    name: str
    prefix: str
    layout: str  # "clip": transformers CLIP inside the LDM file; "openclip": OpenCLIP keys


def text_encoder_slots(family: str) -> tuple[TextEncoderSlot, ...]:
    """The text encoders of `family` ("sd1", "sd2", "sdxl"), in diffusers order."""
    if family == "sd1":
        return (
            TextEncoderSlot("text_encoder", "cond_stage_model.transformer.text_model.", "clip"),
        )
    if family == "sd2":
        return (TextEncoderSlot("text_encoder", "cond_stage_model.model.", "openclip"),)
    if family == "sdxl":
        return (
            TextEncoderSlot(
                "text_encoder", "conditioner.embedders.0.transformer.text_model.", "clip"
            ),
            TextEncoderSlot("text_encoder_2", "conditioner.embedders.1.model.", "openclip"),
        )
    raise ValueError(f"unknown family {family!r}")


LEGACY_SD1_CLIP_PREFIX = "cond_stage_model.transformer."
