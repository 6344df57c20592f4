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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
EMA_PREFIX = "model_ema."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")

Converted = tuple[dict[str, torch.Tensor], list[str]]

UNET_TOP_MODULES = MappingProxyType(
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
_UNET_TOP_BACK = MappingProxyType({v: k for k, v in UNET_TOP_MODULES.items()})
UNET_RESNET_MODULES = MappingProxyType(
    {
        "norm1": "in_layers.0",
        "conv1": "in_layers.2",
        "time_emb_proj": "emb_layers.1",
        "norm2": "out_layers.0",
        "conv2": "out_layers.3",
        "conv_shortcut": "skip_connection",
    }
)
_UNET_RESNET_BACK = MappingProxyType({v: k for k, v in UNET_RESNET_MODULES.items()})
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


def _convert(
    state_dict: Mapping[str, torch.Tensor],
    rename: Callable[[str], str | None],
    reshape: Callable[[str, str, torch.Tensor], torch.Tensor] | None = None,
) -> Converted:
    """Every key renamed (`reshape(old, new, tensor)` may change the tensor); None is unknown."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        new = rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor if reshape is None else reshape(key, new, tensor)
    return out, unknown


# ---------------------------------------------------------------------------------------------
# UNet


def _block_to_ldm(block: str, kind: str, rest: str, *, numbered: bool = True) -> str | None:
    """A resnet (`<block>.0`) or attention (`<block>.1`) key of an LDM UNet block."""
    if kind == "attentions":
        return f"{block}.1.{rest}"
    new = _rename_head(rest, UNET_RESNET_MODULES)
    return None if new is None else f"{block}{'.0' if numbered else ''}.{new}"


def _block_from_ldm(block: str, layer: int, slot: str, rest: str) -> str | None:
    """The diffusers key of what sits in `slot` of an LDM block: 0 a resnet, 1 an attention."""
    if slot == "1":
        return f"{block}.attentions.{layer}.{rest}"
    new = _rename_head(rest, _UNET_RESNET_BACK) if slot == "0" else None
    return None if new is None else f"{block}.resnets.{layer}.{new}"


def unet_key_to_ldm(key: str, layout: UnetLayout) -> str | None:
    """diffusers UNet key -> LDM key (without `model.diffusion_model.`), or None if unknown."""
    per = layout.layers_per_block + 1
    if match := _D_BLOCK.fullmatch(key):
        level, kind, layer, rest = match.groups()
        return _block_to_ldm(f"input_blocks.{1 + int(level) * per + int(layer)}", kind, rest)
    if match := _D_SAMPLE.fullmatch(key):
        return f"input_blocks.{(int(match[1]) + 1) * per}.0.op.{match[2]}"
    if match := _MID.fullmatch(key):
        kind, number, rest = match.groups()
        if kind == "attentions":
            return f"middle_block.{2 * int(number) + 1}.{rest}"
        return _block_to_ldm(f"middle_block.{2 * int(number)}", kind, rest, numbered=False)
    if match := _U_BLOCK.fullmatch(key):
        level, kind, layer, rest = match.groups()
        return _block_to_ldm(f"output_blocks.{int(level) * per + int(layer)}", kind, rest)
    if match := _U_SAMPLE.fullmatch(key):
        level = int(match[1])
        slot = (
            2
            if level < len(layout.up_block_has_attention) and layout.up_block_has_attention[level]
            else 1
        )
        return f"output_blocks.{level * per + per - 1}.{slot}.conv.{match[2]}"
    return _fixed(key, UNET_TOP_MODULES)


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
        return _block_from_ldm(f"down_blocks.{level}", layer, slot, rest)
    if match := _L_MID.fullmatch(key):
        number, rest = int(match[1]), match[2]
        return _block_from_ldm("mid_block", number // 2, "1" if number % 2 else "0", rest)
    if match := _L_OUT.fullmatch(key):
        level, layer = divmod(int(match[1]), per)
        slot, rest = match[2], match[3]
        if slot in {"1", "2"} and rest.startswith("conv.") and layer == per - 1:
            return f"up_blocks.{level}.upsamplers.0.conv.{rest[5:]}"
        return _block_from_ldm(f"up_blocks.{level}", layer, slot, rest)
    return _fixed(key, _UNET_TOP_BACK)


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], layout: UnetLayout) -> Converted:
    """A diffusers UNet state dict in LDM layout (keys without prefix)."""
    return _convert(state_dict, lambda key: unet_key_to_ldm(key, layout))


def unet_from_ldm(state_dict: Mapping[str, torch.Tensor], layout: UnetLayout) -> Converted:
    """An LDM UNet state dict (keys without prefix) in diffusers layout."""
    return _convert(state_dict, lambda key: unet_key_from_ldm(key, layout))


def ema_key(ldm_unet_key: str) -> str:
    """The flat name LDM's EMA keeps a UNet weight under (`model_ema.diffusion_modelinput_blocks00weight`)."""
    return EMA_PREFIX + ("diffusion_model." + ldm_unet_key).replace(".", "")


# ---------------------------------------------------------------------------------------------
# VAE


# VAE keys below `encoder.` / `decoder.`: (side, diffusers template, LDM template). Fields:
# {t} any tail, {i} a layer, {n} a level, {u} a decoder level (LDM numbers them from the
# bottom), {b} a mid-block resnet (LDM counts from 1), {r} a resnet's tail (LDM's shortcut is
# `nin_shortcut`), {a} a mid-block attention module.
_VAE_RULES: tuple[tuple[str | None, str, str], ...] = (
    (None, "conv_in.{t}", "conv_in.{t}"),
    (None, "conv_out.{t}", "conv_out.{t}"),
    (None, "conv_norm_out.{t}", "norm_out.{t}"),
    (None, "mid_block.attentions.0.{a}.{t}", "mid.attn_1.{a}.{t}"),
    (None, "mid_block.resnets.{b}.{r}", "mid.block_{b}.{r}"),
    ("encoder", "down_blocks.{n}.resnets.{i}.{r}", "down.{n}.block.{i}.{r}"),
    ("encoder", "down_blocks.{n}.downsamplers.0.conv.{t}", "down.{n}.downsample.conv.{t}"),
    ("decoder", "up_blocks.{u}.resnets.{i}.{r}", "up.{u}.block.{i}.{r}"),
    ("decoder", "up_blocks.{u}.upsamplers.0.conv.{t}", "up.{u}.upsample.conv.{t}"),
)
_VAE_SHORTCUT = ("conv_shortcut.", "nin_shortcut.")  # (diffusers, LDM)


def _vae_pattern(template: str, to_ldm: bool) -> str:
    """A template (letters, digits, `_`, `.` and fields) as a regex with a group per field."""

    def field(match: re.Match[str]) -> str:
        name = match[1]
        if name == "a":
            modules = _VAE_ATTENTION if to_ldm else _VAE_ATTENTION_BACK
            return f"(?P<a>{'|'.join(re.escape(module) for module in modules)})"
        number = r"\d+" if name in "inub" else ".+"
        return f"(?P<{name}>{number})"

    return re.sub(r"\{(\w)\}", field, template.replace(".", r"\."))


def _vae_field(name: str, value: str, to_ldm: bool, num_levels: int) -> str:
    """One matched field in the other layout."""
    if name == "u":
        return str(num_levels - 1 - int(value))
    if name == "b":
        return str(int(value) + (1 if to_ldm else -1))
    if name == "a":
        return (_VAE_ATTENTION if to_ldm else _VAE_ATTENTION_BACK)[value]
    if name == "r":
        old, new = _VAE_SHORTCUT if to_ldm else reversed(_VAE_SHORTCUT)
        return new + value[len(old) :] if value.startswith(old) else value
    return value


def _vae_key(key: str, num_levels: int, to_ldm: bool) -> str | None:
    side, _, rest = key.partition(".")
    if side in {"quant_conv", "post_quant_conv"}:
        return key
    if side not in {"encoder", "decoder"}:
        return None
    for rule_side, diffusers, ldm in _VAE_RULES:
        if rule_side not in (None, side):
            continue
        source, target = (diffusers, ldm) if to_ldm else (ldm, diffusers)
        match = re.fullmatch(_vae_pattern(source, to_ldm), rest)
        if match:
            fields = {k: _vae_field(k, v, to_ldm, num_levels) for k, v in match.groupdict().items()}
            return f"{side}.{target.format(**fields)}"
    return None


def vae_key_to_ldm(key: str, num_levels: int) -> str | None:
    """diffusers VAE key -> LDM key (without `first_stage_model.`), or None if unknown."""
    return _vae_key(key, num_levels, to_ldm=True)


def vae_key_from_ldm(key: str, num_levels: int) -> str | None:
    """LDM VAE key (without prefix) -> diffusers key, or None if unknown."""
    return _vae_key(key, num_levels, to_ldm=False)


def _is_vae_attention_weight(ldm_key: str) -> bool:
    return ".mid.attn_1." in f".{ldm_key}" and ldm_key.endswith(
        ("q.weight", "k.weight", "v.weight", "proj_out.weight")
    )


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> Converted:
    """A diffusers VAE state dict in LDM layout; mid-attention linear weights become 1x1 convs."""

    def as_conv(key: str, new: str, tensor: torch.Tensor) -> torch.Tensor:
        return (
            tensor[:, :, None, None]
            if _is_vae_attention_weight(new) and tensor.ndim == 2
            else tensor
        )

    return _convert(state_dict, lambda key: vae_key_to_ldm(key, num_levels), as_conv)


def vae_from_ldm(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> Converted:
    """An LDM VAE state dict in diffusers layout; 1x1-conv attention weights become linear."""

    def as_linear(key: str, new: str, tensor: torch.Tensor) -> torch.Tensor:
        if _is_vae_attention_weight(key) and tensor.ndim > 2:
            return tensor.reshape(tensor.shape[0], tensor.shape[1])
        return tensor

    return _convert(state_dict, lambda key: vae_key_from_ldm(key, num_levels), as_linear)


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
