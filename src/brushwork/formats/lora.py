"""LoRA files: every key family read into one representation; kohya files written back.

A `LoraNetwork` holds `LoraModule`s keyed by *target*: the component and the module's path in
the diffusers / transformers 5 object it patches (see `_lora_names`; key names: `lora_keys`), e.g.
``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`` or
``text_encoder.encoder.layers.0.self_attn.q_proj``. Module kinds:

* ``"lora"`` (LoRA / LoCon): parts ``down`` [r, in(, k, k)], ``up`` [out, r(, 1, 1)], optional
  ``mid`` [r, r, k, k] (CP/Tucker conv). ΔW = scale · up @ down, reshaped to the layer.
* ``"loha"``: ``w1_a``, ``w1_b``, ``w2_a``, ``w2_b``, optional ``t1``/``t2``. ΔW = (w1a@w1b) ⊙ (w2a@w2b).
* ``"lokr"``: ``w1`` or ``w1_a``+``w1_b``; ``w2`` or ``w2_a``+``w2_b``; optional ``t2``. ΔW = w1 ⊗ w2.
* ``"full"``: ``diff`` (and ``diff_b``, a bias delta). ΔW = diff.

``scale = alpha / rank``; a module without alpha (or without a rank, like a full-matrix LoKr) has
scale 1, as kohya, A1111 and diffusers all read it. The writer always stores the module's true
alpha, unlike diffusers' `convert_state_dict_to_kohya`, which writes alpha = rank.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save_bytes

from brushwork.core import hashing
from brushwork.core.arch import family_facts, skeleton_config
from brushwork.core.errors import (
    ConfigError,
    CorruptModelError,
    IncompatibleModelError,
    UnsupportedModelError,
)
from brushwork.core.kinds import BaseFamily
from brushwork.formats import _lora_names as names
from brushwork.formats import lora_keys, safeio

logger = logging.getLogger(__name__)

MODULE_KINDS = lora_keys.READ_TYPES
SOURCE_FORMATS = ("kohya", "kohya-ldm", "diffusers", "peft")
_REQUIRED = {
    "lora": ({"down", "up"},),
    "loha": ({"w1_a", "w1_b", "w2_a", "w2_b"},),
    "lokr": ({"w1"}, {"w1_a", "w1_b"}),
    "full": ({"diff"},),
}
_SDXL_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


@dataclass(frozen=True, eq=False)
class LoraModule:
    """The change one LoRA makes to one layer."""

    target: str  # component + module path, e.g. "unet.mid_block.attentions.0.proj_in"
    kind: str  # one of MODULE_KINDS
    parts: Mapping[str, torch.Tensor]  # internal part names, see the module docstring
    alpha: float | None = None
    dora_scale: torch.Tensor | None = None  # DoRA magnitude ([out, 1..] / [1, in, ..] / [out])

    def __post_init__(self) -> None:
        if self.kind not in MODULE_KINDS:
            raise ValueError(f"{self.target}: unknown LoRA module kind {self.kind!r}")
        if not _complete(self.kind, set(self.parts)):
            raise ValueError(f"{self.target}: parts {sorted(self.parts)} do not make a {self.kind}")
        if self.kind == "lora" and self.parts["down"].shape[0] != self.parts["up"].shape[1]:
            shapes = tuple(self.parts["down"].shape), tuple(self.parts["up"].shape)
            raise ValueError(f"{self.target}: down/up shapes {shapes} have different ranks")

    @classmethod
    def lora(
        cls,
        target: str,
        down: torch.Tensor,
        up: torch.Tensor,
        alpha: float | None = None,
        *,
        mid: torch.Tensor | None = None,
        dora_scale: torch.Tensor | None = None,
    ) -> LoraModule:
        parts = {"down": down, "up": up} | ({} if mid is None else {"mid": mid})
        return cls(target, "lora", parts, alpha, dora_scale)

    @property
    def component(self) -> str:
        return self.target.partition(".")[0]

    @property
    def module_path(self) -> str:
        """The path inside the component (`get_submodule` takes it)."""
        return self.target.partition(".")[2]

    @property
    def rank(self) -> int | None:
        """The LoRA dimension (kohya's `dim`); None for full-matrix LoKr and `full` diffs."""
        p = self.parts
        if self.kind == "lora":
            return int(p["down"].shape[0])
        if self.kind == "loha":
            return int(p["w1_b"].shape[0])
        if self.kind == "lokr":
            for name in ("w1_b", "w2_b"):
                if name in p:
                    return int(p[name].shape[0])
        return None

    @property
    def scale(self) -> float:
        rank = self.rank
        return 1.0 if self.alpha is None or rank is None else self.alpha / rank

    def delta_weight(
        self,
        layer_shape: tuple[int, ...] | torch.Size | None = None,
        *,
        base_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ΔW (float32, scale applied) shaped like the layer's weight (`layer_shape`, if given).

        DoRA modules need the layer's current `base_weight`; the result is then W' - W.
        """
        if base_weight is not None and layer_shape is None:
            layer_shape = tuple(base_weight.shape)
        raw = _raw_delta(self) * self.scale
        if layer_shape is not None:
            shape = tuple(layer_shape)
            if raw.numel() != math.prod(shape):
                raise ValueError(f"{self.target}: ΔW {tuple(raw.shape)} does not fit {shape}")
            raw = raw.reshape(shape)
        if self.dora_scale is None:
            return raw
        if base_weight is None:
            raise ValueError(f"{self.target}: a DoRA module needs the layer's base_weight")
        return _dora(raw, base_weight.float(), self.dora_scale.float())


def _complete(kind: str, have: set[str]) -> bool:
    lokr_w2 = kind != "lokr" or {"w2"} <= have or {"w2_a", "w2_b"} <= have
    return lokr_w2 and any(need <= have for need in _REQUIRED[kind])


def _cp(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """Rebuild a Tucker/CP factorised kernel: t [r, r, k, k], wa [r, out], wb [r, in]."""
    return torch.einsum("ijkl,jr,ip->prkl", t.float(), wb.float().flatten(1), wa.float().flatten(1))


def _raw_delta(module: LoraModule) -> torch.Tensor:
    p = module.parts
    if module.kind == "lora":
        up, down = p["up"].float().flatten(1), p["down"].float()
        if "mid" in p:
            return torch.einsum("nmkl,in,mj->ijkl", p["mid"].float(), up, down.flatten(1))
        delta = up @ down.flatten(1)
        return delta.reshape(up.shape[0], *down.shape[1:]) if down.dim() == 4 else delta
    if module.kind == "loha":
        halves = []
        for i in ("1", "2"):
            wa, wb = p[f"w{i}_a"], p[f"w{i}_b"]
            t = p.get(f"t{i}")
            halves.append(_cp(t, wa, wb) if t is not None else wa.float() @ wb.float().flatten(1))
        return halves[0] * halves[1]
    if module.kind == "lokr":
        w1 = p["w1"].float() if "w1" in p else p["w1_a"].float() @ p["w1_b"].float()
        if "w2" in p:
            w2 = p["w2"].float()
        elif "t2" in p:
            w2 = _cp(p["t2"], p["w2_a"], p["w2_b"])
        else:
            w2 = p["w2_a"].float() @ p["w2_b"].float().flatten(1)
        if w2.dim() == 4:
            w1 = w1.reshape(*w1.shape, 1, 1)
        return torch.kron(w1, w2)
    return p["diff"].float()


def _dora(delta: torch.Tensor, base: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """DoRA: W' = m · (W + ΔW) / ‖W + ΔW‖, the norm per output row or per input column."""
    merged = base + delta
    ones = [1] * (merged.dim() - 1)
    per_input = magnitude.dim() >= 2 and magnitude.shape[0] == 1 and magnitude.shape[1] != 1
    if per_input:
        cols = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        norm = cols.reshape(merged.shape[1], *ones).transpose(0, 1)
    else:
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(merged.shape[0], *ones)
    result: torch.Tensor = merged * (magnitude.reshape(norm.shape) / norm) - base
    return result


@dataclass
class LoraNetwork:
    """A whole LoRA file, whatever key family it came in."""

    modules: dict[str, LoraModule]  # by target
    metadata: dict[str, str] = field(default_factory=dict)
    source_format: str = "kohya"  # one of SOURCE_FORMATS
    family: BaseFamily | None = None
    unmatched: list[str] = field(default_factory=list)  # keys that were not understood


# ---------------------------------------------------------------------------------------------
# reading


def read_lora(path: Path | str, *, unet_config: dict[str, Any] | None = None) -> LoraNetwork:
    """Read a LoRA file (`.safetensors`, or a kohya `.pt`/`.ckpt` pickle, safely)."""
    model = safeio.read_model_file(path)
    return _network(model.tensors, model.metadata, unet_config, model.path, model.raw)


def lora_from_state_dict(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    unet_config: dict[str, Any] | None = None,
) -> LoraNetwork:
    """Read a LoRA held in memory (any key family; see the module docstring)."""
    return _network(dict(tensors), dict(metadata or {}), unet_config, None, None)


def lora_from_peft(
    peft_state_dict: Mapping[str, torch.Tensor],
    *,
    component: str,
    alpha: float | None,
    use_rslora: bool = False,
    family: BaseFamily | str | None = None,
) -> LoraNetwork:
    """A LoraNetwork from `peft.get_peft_model_state_dict(module)` of one component.

    `alpha` is the adapter's `lora_alpha`; with `use_rslora` (scale alpha/√r) it is stored as the
    kohya alpha that gives the same scale.
    """
    if component not in (lora_keys.UNET, lora_keys.TEXT_ENCODER, lora_keys.TEXT_ENCODER_2):
        raise ConfigError(f"unknown component {component!r}", hint="unet or text_encoder[_2]")
    peft = {k.removeprefix(lora_keys.PEFT_PREFIX): v for k, v in peft_state_dict.items()}
    network = _network({f"{component}.{k}": v for k, v in peft.items()}, {}, None, None, None)
    network.source_format = "peft"
    if family is not None:
        network.family = BaseFamily(family)
    for target, module in list(network.modules.items()):
        if module.alpha is None and alpha is not None:
            rank = module.rank or 1
            eff = alpha * math.sqrt(rank) if use_rslora else alpha
            network.modules[target] = replace(module, alpha=eff)
    return network


def _network(
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    unet_config: dict[str, Any] | None,
    path: Path | None,
    raw: Any,
) -> LoraNetwork:
    groups = names.group_keys(tensors)
    if not groups.parts:
        names.raise_not_lora(path, tensors, raw, groups.refused_types)
    family = names.detect_family(metadata, tensors)
    layout = None
    if any(style == "kohya-ldm" for style, _, _ in groups.parts):
        layout = names.UnetLayout(unet_config or names.default_unet_config(family, groups))
    modules: dict[str, LoraModule] = {}
    unmatched = list(groups.unmatched)
    formats: Counter[str] = Counter()
    for gkey, parts in groups.parts.items():
        target = names.target_for(*gkey, layout)
        kind = groups.kinds[gkey]
        module = None
        if target is not None and target not in modules:
            module = _module(target, kind, parts, path)
        if module is None:
            unmatched.extend(groups.keys[gkey])
            continue
        modules[module.target] = module
        formats[gkey[0]] += 1
    if unmatched:
        logger.warning("LoRA %s: %d keys not understood: %s", path, len(unmatched), unmatched[:3])
    if not modules:
        raise UnsupportedModelError(path, f"no LoRA key names a known module: {unmatched[:3]}")
    _apply_adapter_metadata(modules, metadata)
    source = "kohya-ldm" if formats["kohya-ldm"] else formats.most_common(1)[0][0]
    return LoraNetwork(modules, metadata, source, family, sorted(unmatched))


def _module(
    target: str, kind: str | None, parts: dict[str, torch.Tensor], path: Path | None
) -> LoraModule | None:
    extra = {k: parts[k] for k in ("alpha", "scale", "dora_scale") if k in parts}
    parts = {k: v for k, v in parts.items() if k not in extra}
    alpha = float(extra["alpha"].item()) if "alpha" in extra else None
    if kind is None or not _complete(kind, set(parts)):
        return None  # an incomplete module: its keys are reported as unmatched
    try:
        module = LoraModule(target, kind, parts, alpha, extra.get("dora_scale"))
    except ValueError as exc:  # all parts there, but they do not fit together
        raise CorruptModelError(path, str(exc)) from None
    if "scale" in extra and alpha is None and module.rank is not None:
        module = replace(module, alpha=float(extra["scale"].item()) * module.rank)
    return module


def _apply_adapter_metadata(modules: dict[str, LoraModule], metadata: Mapping[str, str]) -> None:
    """diffusers' `lora_adapter_metadata` (the peft LoraConfig per component) gives lora_alpha."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return
    try:
        config = json.loads(raw)
    except ValueError:
        logger.warning("ignoring malformed lora_adapter_metadata")
        return
    for target, module in list(modules.items()):
        if module.alpha is not None:
            continue
        component, path = module.component, module.module_path
        alpha = config.get(f"{component}.lora_alpha")
        for pattern, value in (config.get(f"{component}.alpha_pattern") or {}).items():
            if re.fullmatch(rf"(.*\.)?({pattern})", path):
                alpha = value
        if alpha is not None and module.rank:
            rslora = config.get(f"{component}.use_rslora")
            eff = float(alpha) * (math.sqrt(module.rank) if rslora else 1.0)
            modules[target] = replace(module, alpha=eff)


# ---------------------------------------------------------------------------------------------
# writing


def lora_to_kohya(
    network: LoraNetwork,
    *,
    family: BaseFamily | str,
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
    unet_config: dict[str, Any] | None = None,
    output_name: str | None = None,
    v_prediction: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """kohya sd-scripts tensors + `__metadata__` (ss_*, modelspec.*, sshs_* hashes) for a network.

    SD1/SD2 get diffusers-style UNet names and ``lora_te_``; SDXL gets LDM names (`unet_config`
    gives the layout; the SDXL base layout by default) and ``lora_te1_``/``lora_te2_``.
    """
    family = BaseFamily(family)
    if network.family is not None and network.family != family:
        raise IncompatibleModelError(f"this LoRA is for {network.family}, not {family}")
    layout = None
    if family is BaseFamily.SDXL:
        layout = names.UnetLayout(unet_config or skeleton_config("sdxl", "unet"))
    tensors: dict[str, torch.Tensor] = {}
    for module in network.modules.values():
        name = names.kohya_name(
            module.target, ldm_layout=layout, te_prefix=lora_keys.KOHYA_TE_PREFIXES[family]
        )
        if name is None:
            raise IncompatibleModelError(
                f"LoRA module {module.target} has no place in a kohya {family} file"
            )
        tensors.update(_kohya_tensors(name, module, dtype))
    meta = _kohya_metadata(network, family, output_name, v_prediction) | dict(metadata or {})
    meta.update(_sshs_hashes(tensors, meta))
    return tensors, meta


def write_lora(
    path: Path | str,
    network: LoraNetwork,
    *,
    family: BaseFamily | str,
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    unet_config: dict[str, Any] | None = None,
    v_prediction: bool = False,
) -> None:
    """Write a kohya-format LoRA: `.safetensors` (with metadata) or `.pt`/`.ckpt` (tensors only)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pt", ".ckpt"):
        raise ConfigError(f"cannot write a LoRA as {path.name!r}", hint="use .safetensors (or .pt)")
    tensors, meta = lora_to_kohya(
        network,
        family=family,
        metadata=metadata,
        dtype=dtype,
        unet_config=unet_config,
        output_name=path.stem,
        v_prediction=v_prediction,
    )
    if suffix == ".safetensors":
        safeio.write_safetensors(path, tensors, meta, overwrite=overwrite)
    else:
        logger.info("%s: a pickled LoRA holds no metadata; only tensors are written", path)
        safeio.write_pickle(path, tensors, overwrite=overwrite)


def _kohya_tensors(
    name: str, module: LoraModule, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    save_dtype = dtype or next(iter(module.parts.values())).dtype
    out: dict[str, torch.Tensor] = {}
    for part, tensor in module.parts.items():
        out[f"{name}.{lora_keys.WRITE_PARTS[module.kind][part]}"] = _plain(tensor, save_dtype)
    alpha = module.alpha
    if alpha is None and module.kind == "lora":
        alpha = float(module.rank or 1)
    if alpha is not None:
        out[f"{name}.alpha"] = torch.tensor(alpha, dtype=save_dtype)
    if module.dora_scale is not None:
        out[f"{name}.dora_scale"] = _plain(module.dora_scale, save_dtype)
    return out


def _plain(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to("cpu", dtype).contiguous().clone()


def _network_shape(network: LoraNetwork) -> dict[str, str]:
    """ss_network_module / dim / alpha / args, as kohya (and LyCORIS) write them."""

    def alpha_of(m: LoraModule) -> float:
        return float(m.alpha if m.alpha is not None else (m.rank or 1))

    def one(values: set[Any]) -> str:
        return str(values.pop()) if len(values) == 1 else "Dynamic"

    mods = list(network.modules.values())
    conv3 = [m for m in mods if m.kind == "lora" and m.parts["down"].shape[2:3] not in ((), (1,))]
    main = [m for m in mods if m not in conv3] or conv3
    others = Counter(m.kind for m in mods if m.kind != "lora")
    args = {"algo": others.most_common(1)[0][0]} if others else {}
    if conv3 and main is not conv3:
        args |= {
            "conv_dim": one({m.rank for m in conv3}),
            "conv_alpha": one(set(map(alpha_of, conv3))),
        }
    shape = {
        "ss_network_module": "lycoris.kohya" if others else "networks.lora",
        "ss_network_dim": one({m.rank for m in main}),
        "ss_network_alpha": one(set(map(alpha_of, main))),
    }
    return shape | ({"ss_network_args": json.dumps(args)} if args else {})


def _kohya_metadata(
    network: LoraNetwork, family: BaseFamily, name: str | None, v_prediction: bool
) -> dict[str, str]:
    facts = family_facts(family)
    arch, version = facts.modelspec_architecture, facts.kohya_base_model_version
    resolution = facts.default_resolution
    if v_prediction and family is BaseFamily.SD2:
        arch, version, resolution = "stable-diffusion-v2-768-v", "sd_v2_v", 768
    elif v_prediction and family is BaseFamily.SD1:
        version = "sd_v1_v"
    kept = {k: v for k, v in network.metadata.items() if k.startswith(("ss_", "modelspec."))}
    explicit = name is not None
    name = name or kept.get("ss_output_name") or "lora"
    date = datetime.now().replace(microsecond=0).isoformat()
    sdxl = family is BaseFamily.SDXL
    return (
        {"modelspec.date": date}
        | kept
        | _network_shape(network)
        | {
            "ss_output_name": name,
            "ss_base_model_version": version,
            "ss_v2": str(family is BaseFamily.SD2),
            "modelspec.sai_model_spec": "1.0.1",
            "modelspec.architecture": f"{arch}/lora",
            "modelspec.implementation": _SDXL_IMPLEMENTATION if sdxl else "diffusers",
            "modelspec.title": name if explicit else kept.get("modelspec.title", name),
            "modelspec.resolution": f"{resolution}x{resolution}",
            "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        }
    )


def _sshs_hashes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> dict[str, str]:
    """kohya's precalculated hashes: addnet (tensor bytes) and legacy (of an ss_*-only buffer)."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = st_save_bytes(dict(tensors), metadata=ss_only or None)
    return {
        "sshs_model_hash": hashing.addnet_hash_bytes(data),
        "sshs_legacy_hash": hashing.legacy_hash_bytes(data),
    }
