"""LoRA module names -> the modules they patch, for the reader and the kohya writer.

Key syntax (dialects, prefixes, parts, module types) lives in `lora_keys`; this module maps the
module names it parses to *targets*: the component (``unet``, ``text_encoder``,
``text_encoder_2``) and the module's path in the diffusers / transformers 5 object, e.g.
``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``. Note that transformers 5
`CLIPTextModel` (``text_encoder``) has no ``text_model.`` level, while
`CLIPTextModelWithProjection` (SDXL's ``text_encoder_2``) still has one.

Names read: kohya ``lora_unet_<name>`` / ``lora_te_`` (SD1/SD2) / ``lora_te1_``, ``lora_te2_``
(SDXL), with diffusers-style UNet names (SD1/SD2) or LDM/SGM ones (SDXL: ``input_blocks_4_1_...``,
mapped through `UnetLayout`); dotted diffusers paths (``unet.<path>``, ``text_encoder.<path>``)
and PEFT paths (``base_model.model.<path>`` or bare).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from brushwork.core.arch import skeleton_config
from brushwork.core.errors import UnsupportedModelError, WrongKindError
from brushwork.core.kinds import BaseFamily
from brushwork.formats import lora_keys
from brushwork.formats._ldm_keys import UNET_RESNET_MODULES, UNET_TOP_MODULES
from brushwork.formats.families import family_from_metadata

logger = logging.getLogger(__name__)

UNET, TEXT_ENCODER, TEXT_ENCODER_2 = (
    lora_keys.UNET,
    lora_keys.TEXT_ENCODER,
    lora_keys.TEXT_ENCODER_2,
)
_UNET_HEAD = re.compile(
    r"^(?:down_blocks|up_blocks|mid_block|conv_in|conv_out|conv_norm_out|time_embedding"
    r"|add_embedding)(?:\.|$)"
)
_TE_HEADS = ("text_model.", "encoder.layers.", "embeddings.", "final_layer_norm", "text_projection")

_UNET_PATH = re.compile(
    r"^(?:(?:down_blocks\.\d+|up_blocks\.\d+|mid_block)\.(?:"
    r"attentions\.\d+\.(?:proj_in|proj_out|norm|transformer_blocks\.\d+\.(?:"
    r"attn[12]\.(?:to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)|ff\.net\.0\.proj|ff\.net\.2"
    r"|norm[123]))"
    r"|resnets\.\d+\.(?:conv1|conv2|time_emb_proj|conv_shortcut|norm1|norm2)"
    r"|downsamplers\.0\.conv|upsamplers\.0\.conv)"
    r"|conv_in|conv_out|conv_norm_out|time_embedding\.linear_[12]|add_embedding\.linear_[12])$"
)
_TE_PATH = re.compile(
    r"^(?:encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12]"
    r"|layer_norm[12])|embeddings\.(?:token_embedding|position_embedding)|final_layer_norm"
    r"|text_projection)$"
)

# multi-word names that kohya's dots-to-underscores flattening glues together
_WORD_LIST = (
    "down_blocks up_blocks mid_block transformer_blocks proj_in proj_out to_q to_k to_v to_out "
    "add_k_proj add_v_proj time_emb_proj conv_shortcut conv_in conv_out conv_norm_out "
    "time_embedding add_embedding linear_1 linear_2 text_model self_attn q_proj k_proj v_proj "
    "out_proj layer_norm1 layer_norm2 final_layer_norm text_projection token_embedding "
    "position_embedding"
)
_WORDS = sorted((tuple(w.split("_")) for w in _WORD_LIST.split()), key=len, reverse=True)

_LDM_HEADS = ("input_blocks_", "middle_block_", "output_blocks_", "time_embed_", "label_emb_")
_LDM_CONTAINER = re.compile(
    r"^(input_blocks_\d+_\d+|middle_block_\d+|output_blocks_\d+_\d+)(?:_(.+))?$"
)
_DIFFUSERS_CONTAINER = re.compile(
    r"^((?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions)\.\d+"
    r"|(?:down_blocks|up_blocks)\.\d+\.(?:downsamplers|upsamplers)\.0"
    r"|mid_block\.(?:resnets|attentions)\.\d+)\.(.+)$"
)


@dataclass(frozen=True)
class ParsedKey:
    """One tensor key, split into the module it belongs to and the part it is."""

    source_format: str  # "kohya", "kohya-ldm", "diffusers" or "peft"
    component: str | None
    name: str  # kohya: the flat name after the prefix; dotted: the module path
    part: str  # internal part name ("down", "up", "alpha", "w1_a", ...)
    kind: str | None  # the module kind this part implies, if any


def parse_key(key: str) -> ParsedKey | str | None:
    """A LoRA key's parts; the LyCORIS type name for a known but unsupported part; else None."""
    parsed = lora_keys.parse_key(key)
    if parsed is None or parsed.dialect == "bundle":
        return None
    if parsed.dialect == "kohya":
        prefix = lora_keys.kohya_prefix(parsed.module) or ""
        component = lora_keys.KOHYA_PREFIXES.get(prefix)
        if component is None:
            return None
        if parsed.module_type in lora_keys.REFUSED_TYPES:
            return lora_keys.REFUSED_TYPES[parsed.module_type]
        source, name = "kohya", parsed.module[len(prefix) + 1 :]
        if component == UNET and (name.startswith(_LDM_HEADS) or re.fullmatch(r"out_\d+", name)):
            source = "kohya-ldm"
    else:
        source, component, name = _split_component(parsed.module)
    internal = parsed.internal_part
    if component is None or internal is None:
        return None
    return ParsedKey(source, component, name, internal, parsed.module_type)


def _split_component(path: str) -> tuple[str, str | None, str]:
    for component in (TEXT_ENCODER_2, TEXT_ENCODER, UNET):
        if path.startswith(component + "."):
            return "diffusers", component, path[len(component) + 1 :]
    path = path.removeprefix(lora_keys.PEFT_PREFIX)
    if _UNET_HEAD.match(path):
        return "peft", UNET, path
    if path.startswith(_TE_HEADS):
        return "peft", TEXT_ENCODER, path
    return "peft", None, path


def unflatten(name: str) -> str:
    """Undo kohya's dots-to-underscores: ``attn1_to_out_0`` -> ``attn1.to_out.0``."""
    tokens = name.split("_")
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for word in _WORDS:
            if tuple(tokens[i : i + len(word)]) == word:
                out.append("_".join(word))
                i += len(word)
                break
        else:
            out.append(tokens[i])
            i += 1
    return ".".join(out)


def canonical_te_path(component: str, path: str) -> str:
    """The module path inside the transformers 5 class each component uses."""
    path = path.removeprefix("text_model.")
    if component == TEXT_ENCODER_2 and path != "text_projection":
        return "text_model." + path
    return path


def target_for(
    source_format: str, component: str | None, name: str, layout: UnetLayout | None
) -> str | None:
    """The canonical target of a parsed module name, or None when it is not a known module."""
    if component is None:
        return None
    path: str | None = name
    if source_format == "kohya-ldm":
        path = layout.to_diffusers(name) if layout is not None else None
    elif source_format == "kohya":
        path = unflatten(name)
    if path is None:
        return None
    if component == UNET:
        return f"{UNET}.{path}" if _UNET_PATH.match(path) else None
    path = path.removeprefix("text_model.")
    if not _TE_PATH.match(path):
        return None
    return f"{component}.{canonical_te_path(component, path)}"


class UnetLayout:
    """Where each diffusers UNet block sits in the LDM/SGM numbering, for one UNet config."""

    def __init__(self, config: dict[str, Any]) -> None:
        down_types = list(config["down_block_types"])
        up_types = list(config["up_block_types"])
        per_block = config.get("layers_per_block", 2)
        layers = (
            list(per_block)
            if isinstance(per_block, list | tuple)
            else [per_block] * len(down_types)
        )
        self.to_ldm: dict[str, str] = {}
        n = 1
        for i, kind in enumerate(down_types):
            for j in range(layers[i]):
                self.to_ldm[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
                if "CrossAttn" in kind:
                    self.to_ldm[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
                n += 1
            if i < len(down_types) - 1:
                self.to_ldm[f"down_blocks.{i}.downsamplers.0"] = f"input_blocks.{n}.0"
                n += 1
        for j, mid in enumerate(("resnets.0", "attentions.0", "resnets.1")):
            self.to_ldm[f"mid_block.{mid}"] = f"middle_block.{j}"
        up_layers = list(reversed(layers))
        n = 0
        for i, kind in enumerate(up_types):
            attn = "CrossAttn" in kind
            for j in range(up_layers[i] + 1):
                self.to_ldm[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{n}.0"
                if attn:
                    self.to_ldm[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{n}.1"
                if i < len(up_types) - 1 and j == up_layers[i]:
                    self.to_ldm[f"up_blocks.{i}.upsamplers.0"] = (
                        f"output_blocks.{n}.{2 if attn else 1}"
                    )
                n += 1
        self.to_diffusers_map = {ldm: dif for dif, ldm in self.to_ldm.items()}

    def to_diffusers(self, flat_name: str) -> str | None:
        """``input_blocks_4_1_proj_in`` -> ``down_blocks.1.attentions.0.proj_in`` (None: no such)."""
        for diffusers_name, ldm in UNET_TOP_MODULES.items():
            if flat_name == ldm.replace(".", "_"):
                return diffusers_name
        match = _LDM_CONTAINER.match(flat_name)
        if not match:
            return None
        container = self.to_diffusers_map.get(re.sub(r"_(\d+)", r".\1", match.group(1)))
        leaf = match.group(2)
        if container is None or leaf is None:
            return None
        if ".resnets." in container:
            inverse = {v.replace(".", "_"): k for k, v in UNET_RESNET_MODULES.items()}
            dif_leaf = inverse.get(leaf)
        elif container.endswith("samplers.0"):
            dif_leaf = "conv" if leaf in ("op", "conv") else None
        else:
            dif_leaf = unflatten(leaf)
        return None if dif_leaf is None else f"{container}.{dif_leaf}"

    def to_ldm_name(self, path: str) -> str | None:
        """``down_blocks.1.attentions.0.proj_in`` -> ``input_blocks.4.1.proj_in`` (None: no such)."""
        if path in UNET_TOP_MODULES:
            return UNET_TOP_MODULES[path]
        match = _DIFFUSERS_CONTAINER.match(path)
        if not match or match.group(1) not in self.to_ldm:
            return None
        container, leaf = match.groups()
        ldm = self.to_ldm[container]
        if ".resnets." in container:
            ldm_leaf = UNET_RESNET_MODULES.get(leaf)
        elif container.startswith("down_blocks") and container.endswith("samplers.0"):
            ldm_leaf = "op" if leaf == "conv" else None
        else:
            ldm_leaf = leaf
        return None if ldm_leaf is None else f"{ldm}.{ldm_leaf}"


def kohya_name(
    target: str, *, ldm_layout: UnetLayout | None, te_prefix: dict[str, str]
) -> str | None:
    """The flat kohya module name of a target (None when it has no place in that layout)."""
    component, _, path = target.partition(".")
    if component == UNET:
        if ldm_layout is not None:
            ldm = ldm_layout.to_ldm_name(path)
            return None if ldm is None else "lora_unet_" + ldm.replace(".", "_")
        return "lora_unet_" + path.replace(".", "_")
    prefix = te_prefix.get(component)
    if prefix is None:
        return None
    path = path.removeprefix("text_model.")
    if path != "text_projection":
        path = "text_model." + path
    return f"{prefix}_" + path.replace(".", "_")


# ---------------------------------------------------------------------------------------------
# what a whole state dict says


GroupKey = tuple[str, str | None, str]  # (source format, component, module name)
SKELETONS = {BaseFamily.SD1: "sd1", BaseFamily.SD2: "sd2", BaseFamily.SDXL: "sdxl"}


@dataclass
class KeyGroups:
    """A state dict's keys grouped by module, and the keys that fit no module."""

    parts: dict[GroupKey, dict[str, torch.Tensor]] = field(default_factory=dict)
    keys: dict[GroupKey, list[str]] = field(default_factory=dict)
    kinds: dict[GroupKey, str | None] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    refused_types: set[str] = field(default_factory=set)  # LyCORIS types seen but not read


def group_keys(tensors: Mapping[str, torch.Tensor]) -> KeyGroups:
    out = KeyGroups()
    for key, tensor in tensors.items():
        parsed = parse_key(key)
        if not isinstance(parsed, ParsedKey):
            out.unmatched.append(key)
            if parsed is not None:
                out.refused_types.add(parsed)
            continue
        gkey = (parsed.source_format, parsed.component, parsed.name)
        out.parts.setdefault(gkey, {})[parsed.part] = tensor
        out.keys.setdefault(gkey, []).append(key)
        out.kinds[gkey] = out.kinds.get(gkey) or parsed.kind
    return out


def detect_family(
    metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]
) -> BaseFamily | None:
    """The base family its shapes agree on (as `detect` reads them), else what metadata says."""
    shapes = {key: tuple(tensor.shape) for key, tensor in tensors.items()}
    named = {vote.family for vote in lora_keys.family_votes(lora_keys.group_modules(shapes))}
    from_shapes = named.pop() if len(named) == 1 else None
    from_meta = family_from_metadata(metadata)
    if from_shapes and from_meta and from_shapes != from_meta:
        logger.warning(
            "LoRA metadata says %s, its shapes say %s: using the shapes", from_meta, from_shapes
        )
    return from_shapes or from_meta


def default_unet_config(family: BaseFamily | None, groups: KeyGroups) -> dict[str, Any]:
    """The standard UNet layout for LDM-named keys: the family's, else guessed from the indices."""
    if family is None:
        ldm = [name for style, _, name in groups.parts if style == "kohya-ldm"]
        sd1_like = any(re.match(r"input_blocks_(1|2|9|10|11)_", n) for n in ldm)
        family = BaseFamily.SD1 if sd1_like else BaseFamily.SDXL
        logger.info("LoRA with LDM block names and no family: using the %s UNet layout", family)
    return skeleton_config(SKELETONS[family], "unet")


def looks_like(tensors: Mapping[str, torch.Tensor], raw: Any) -> str | None:
    """What a state dict that holds no LoRA key looks like instead (None: nothing known)."""
    keys = list(tensors)
    if isinstance(raw, Mapping) and (
        "layer_structure" in raw or any(isinstance(k, int) for k in raw)
    ):
        return "a hypernetwork"
    if isinstance(raw, Mapping) and "string_to_param" in raw:
        return "a textual-inversion embedding"
    if any(k.startswith(("model.diffusion_model.", "conditioner.embedders.")) for k in keys):
        return "a Stable Diffusion checkpoint"
    if any(k.startswith(("encoder.down.", "decoder.up.", "first_stage_model.")) for k in keys):
        return "a VAE"
    if any(k.startswith(("down_blocks.", "conv_in.")) for k in keys):
        return "the full weights of a diffusers UNet"
    if any("token_embedding" in k for k in keys):
        return "the full weights of a CLIP text encoder"
    if keys and (set(keys) <= {"emb_params", "clip_l", "clip_g"} or len(keys) == 1):
        return "a textual-inversion embedding"
    return None


def raise_not_lora(
    path: Path | None, tensors: Mapping[str, torch.Tensor], raw: Any, refused: set[str]
) -> NoReturn:
    """Say what a state dict with no LoRA key is: a LyCORIS type we refuse, another kind, or junk."""
    if refused:
        kinds = ", ".join(sorted(refused))
        raise UnsupportedModelError(
            path,
            f"is a LyCORIS {kinds} network, which brushwork does not read",
            hint="LoRA, LoCon, LoHa, LoKr and full (diff) modules are supported",
        )
    looks = looks_like(tensors, raw)
    if looks is not None:
        raise WrongKindError(path, f"is {looks}, not a LoRA", hint="open it as that kind of model")
    sample = ", ".join(list(tensors)[:3]) or "no tensors at all"
    raise UnsupportedModelError(
        path,
        f"has no LoRA keys brushwork knows (first keys: {sample})",
        hint="LoRA for SD 1.x/2.x/SDXL in kohya, diffusers or PEFT naming are supported",
    )
