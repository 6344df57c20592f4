"""The LoRA merge itself: which layer each module patches, whether the model fits, ΔW in fp32,
and an exact backup of every tensor touched. `patching.lora` is the public face."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from brushwork.core.arch import FAMILIES
from brushwork.core.errors import IncompatibleModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.lora import LoraModule, LoraNetwork

logger = logging.getLogger(__name__)

UNET = "unet"
TEXT_ENCODER_2 = "text_encoder_2"
_CROSS_KV = (".attn2.to_k", ".attn2.to_v")
_TE_INPUTS = (".q_proj", ".k_proj", ".v_proj", ".fc1")  # layers that read the hidden width
_CONTEXT_FAMILY = {facts.context_dim: facts.family for facts in FAMILIES.values()}
_CONTEXT_NAMES = {width: family.value.upper() for width, family in _CONTEXT_FAMILY.items()}
_TE_WIDTH_NAMES = {768: "CLIP ViT-L, SD1", 1024: "OpenCLIP ViT-H, SD2", 1280: "OpenCLIP bigG, SDXL"}


@dataclass(frozen=True)
class Unmatched:
    """One LoRA module that patched nothing, and why."""

    lora: str  # the application's name
    target: str  # e.g. "unet.mid_block.attentions.0.proj_in"
    reason: str


@dataclass
class LayerPatch:
    """Every contribution to one layer: (module, multiplier, LoRA name), in application order."""

    component: str
    path: str
    layer: torch.nn.Module
    contributions: list[tuple[LoraModule, float, str]] = field(default_factory=list)


class WeightBackup:
    """Exact copies of the tensors a patch touched, restored with `copy_` (same objects, same bits)."""

    def __init__(self, device: torch.device | str | None) -> None:
        self._device = device
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self._saved)

    def save(self, tensor: torch.Tensor) -> None:
        device = tensor.device if self._device is None else self._device
        self._saved.append((tensor, tensor.detach().to(device, copy=True)))

    def restore(self) -> None:
        with torch.no_grad():
            for tensor, copy in reversed(self._saved):
                tensor.copy_(copy)
        self._saved.clear()


# ---------------------------------------------------------------------------------------------
# finding layers and checking the family


def find_layer(root: torch.nn.Module | None, path: str) -> torch.nn.Module | str:
    """The weighted layer at `path`, looking through wrappers that keep it as `base_layer`."""
    if root is None:
        return "this model has no such component"
    try:
        module = root.get_submodule(path)
    except AttributeError:
        return "no such module in this model"
    base = getattr(module, "base_layer", None)
    layer = base if isinstance(base, torch.nn.Module) else module
    if not isinstance(getattr(layer, "weight", None), torch.Tensor):
        return f"{type(layer).__name__} has no weight to patch"
    return layer


def input_width(module: LoraModule) -> int | None:
    """The width of the input ΔW reads (from shapes only)."""
    p = module.parts
    if module.kind == "lora":
        return int(p["down"].shape[1])
    if module.kind == "loha":
        return int(p["w1_b"].shape[1])
    if module.kind == "lokr":
        w1, w2 = p.get("w1", p.get("w1_b")), p.get("w2", p.get("w2_b"))
        if w1 is None or w2 is None or w1.dim() < 2 or w2.dim() < 2:
            return None
        return int(w1.shape[1] * w2.shape[1])
    diff = p["diff"]
    return int(diff.shape[1]) if diff.dim() > 1 else None


def _unet_family(unet: torch.nn.Module | None) -> BaseFamily | None:
    config = getattr(unet, "config", None)
    width = getattr(config, "cross_attention_dim", None) if config is not None else None
    return _CONTEXT_FAMILY.get(width) if isinstance(width, int) else None


def _named(width: int, names: Mapping[int, str]) -> str:
    name = names.get(width)
    return f"{width} ({name})" if name is not None else str(width)


def check_family(
    name: str,
    network: LoraNetwork,
    unet: torch.nn.Module | None,
    text_encoders: Mapping[str, torch.nn.Module],
) -> None:
    """Raise `IncompatibleModelError` when the LoRA was made for another base family."""
    evidence = False
    for module in network.modules.values():
        component, path = module.component, module.module_path
        if component == TEXT_ENCODER_2 and text_encoders and component not in text_encoders:
            raise IncompatibleModelError(
                f"LoRA {name!r} patches SDXL's second text encoder ({module.target}), and this "
                "model has only one text encoder (SD1/SD2)",
                hint="use a LoRA made for this model's family",
            )
        if component == UNET and path.endswith(_CROSS_KV):
            evidence |= _check_width(name, module, unet, "UNet cross-attention", _CONTEXT_NAMES)
        elif component != UNET and path.endswith(_TE_INPUTS):
            root = text_encoders.get(component)
            evidence |= _check_width(name, module, root, f"{component} width", _TE_WIDTH_NAMES)
    model_family = _unet_family(unet)
    if not evidence and network.family is not None and model_family not in (None, network.family):
        raise IncompatibleModelError(
            f"LoRA {name!r} says it is for {network.family.value.upper()}, and this model is "
            f"{model_family.value.upper()}",
            hint="use a LoRA made for this model's family",
        )


def _check_width(
    name: str,
    module: LoraModule,
    root: torch.nn.Module | None,
    what: str,
    names: Mapping[int, str],
) -> bool:
    layer = find_layer(root, module.module_path)
    lora_width = input_width(module)
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or lora_width is None:
        return False
    model_width = int(weight.shape[1])
    if lora_width != model_width:
        raise IncompatibleModelError(
            f"LoRA {name!r} is for a model whose {what} is {_named(lora_width, names)}; this "
            f"model's is {_named(model_width, names)} ({module.target})",
            hint="use a LoRA made for this model's base family",
        )
    return True


# ---------------------------------------------------------------------------------------------
# planning and merging


def plan(
    entries: Sequence[tuple[str, LoraNetwork, float, float]],
    unet: torch.nn.Module | None,
    text_encoders: Mapping[str, torch.nn.Module],
) -> tuple[list[LayerPatch], list[Unmatched]]:
    """Group every module of every (name, network, te, unet multiplier) by the layer it patches."""
    layers: dict[tuple[str, str], LayerPatch] = {}
    unmatched: list[Unmatched] = []
    for name, network, te_multiplier, unet_multiplier in entries:
        for module in network.modules.values():
            component = module.component
            multiplier = unet_multiplier if component == UNET else te_multiplier
            if multiplier == 0:
                continue
            root = unet if component == UNET else text_encoders.get(component)
            found = find_layer(root, module.module_path)
            if isinstance(found, str):
                unmatched.append(Unmatched(name, module.target, found))
                continue
            key = (component, module.module_path)
            patch = layers.setdefault(key, LayerPatch(component, module.module_path, found))
            patch.contributions.append((module, multiplier, name))
    return list(layers.values()), unmatched


def merge_layer(patch: LayerPatch, backup: WeightBackup) -> tuple[list[str], list[Unmatched]]:
    """Add every contribution's ΔW (fp32, one rounding to the weight's dtype); back up first."""
    weight = patch.layer.weight
    assert isinstance(weight, torch.Tensor)  # find_layer only returns layers with a weight
    bias = getattr(patch.layer, "bias", None)
    merged: torch.Tensor | None = None  # fp32; the weight itself when it is fp32
    bias_delta: torch.Tensor | None = None
    fitted: list[str] = []
    unmatched: list[Unmatched] = []
    for module, multiplier, name in patch.contributions:
        module = _on_device(module, weight.device)
        delta = _fitted_delta(module, weight.detach() if merged is None else merged, patch.path)
        extra = module.parts.get("diff_b") if module.kind == "full" else None
        if extra is not None and (
            not isinstance(bias, torch.Tensor) or extra.numel() != bias.numel()
        ):
            delta = "its bias delta (diff_b) does not fit the layer's bias"
        if isinstance(delta, str):
            unmatched.append(Unmatched(name, module.target, delta))
            continue
        if merged is None:
            backup.save(weight)
            merged = weight.detach()
            merged = merged if merged.dtype == torch.float32 else merged.to(torch.float32)
        if isinstance(delta, LowRank):  # up @ down added in one fused pass, no ΔW tensor
            flat = merged.view(merged.shape[0], -1)
            flat.addmm_(delta.up, delta.down, alpha=delta.scale * multiplier)
        else:
            merged.add_(delta, alpha=multiplier)
        if extra is not None:
            step = extra.float().reshape(bias.shape) * multiplier  # type: ignore[union-attr]
            bias_delta = step if bias_delta is None else bias_delta + step
        fitted.append(name)
    with torch.no_grad():
        if merged is not None and merged.data_ptr() != weight.data_ptr():
            weight.copy_(merged)  # one rounding to the weight's dtype
        if bias_delta is not None and isinstance(bias, torch.Tensor):
            backup.save(bias)
            bias.copy_((bias.detach().float() + bias_delta).to(bias.dtype))
    return fitted, unmatched


def _on_device(module: LoraModule, device: torch.device) -> LoraModule:
    tensors = [*module.parts.values(), *([] if module.dora_scale is None else [module.dora_scale])]
    if all(t.device == device for t in tensors):
        return module
    dora = None if module.dora_scale is None else module.dora_scale.to(device)
    parts = {k: v.to(device) for k, v in module.parts.items()}
    return replace(module, parts=parts, dora_scale=dora)


@dataclass(frozen=True)
class LowRank:
    """A plain LoRA's ΔW = scale · up @ down, as fp32 [out, r] and [r, rest of the layer]."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float


def _low_rank(module: LoraModule, merged: torch.Tensor) -> LowRank | None:
    """The factors of a plain LoRA / LoCon module whose ΔW fits the layer as it is."""
    parts = module.parts
    if module.kind != "lora" or "mid" in parts or module.dora_scale is not None:
        return None
    up, down = parts["up"].flatten(1), parts["down"].flatten(1)
    out = merged.shape[0]
    if up.shape[0] != out or down.shape[1] * out != merged.numel() or not merged.is_contiguous():
        return None
    return LowRank(up.float(), down.float(), module.scale)


def _fitted_delta(
    module: LoraModule, merged: torch.Tensor, path: str
) -> LowRank | torch.Tensor | str:
    """ΔW shaped like the layer (scale applied), its factors, or why it does not fit."""
    low_rank = _low_rank(module, merged)
    if low_rank is not None:
        return low_rank
    shape = tuple(merged.shape)
    plain = module if module.dora_scale is None else replace(module, dora_scale=None)
    raw = plain.delta_weight()
    if raw.numel() == merged.numel():
        if module.dora_scale is None:
            return raw.reshape(shape)
        try:  # DoRA: W' - W against the weight as merged so far, as A1111 does
            return module.delta_weight(base_weight=merged)
        except torch.OutOfMemoryError:
            raise
        except (ValueError, RuntimeError) as exc:
            return f"its DoRA scale does not fit the layer: {exc}"
    padded = (
        _inpaint_padded(raw, shape) if path == "conv_in" and module.dora_scale is None else None
    )
    if padded is not None:
        return padded
    return f"ΔW {list(raw.shape)} does not fit the layer's weight {list(shape)}"


def _inpaint_padded(raw: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """A 4-channel conv_in ΔW on a 9-channel (inpainting) UNet: zero for the extra channels."""
    fits = (
        raw.dim() == 4
        and len(shape) == 4
        and raw.shape[0] == shape[0]
        and tuple(raw.shape[2:]) == shape[2:]
        and raw.shape[1] < shape[1]
    )
    if not fits:
        return None
    padded = raw.new_zeros(shape)
    padded[:, : raw.shape[1]] = raw
    return padded
