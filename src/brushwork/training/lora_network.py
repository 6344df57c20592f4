"""LoRA adapters for training: peft layers on kohya sd-scripts' default modules.

Targets, as sd-scripts' `networks.lora` (reference: training.md §1.1):

* UNet: every Linear and 1x1 Conv2d inside each `Transformer2DModel` (proj_in/proj_out, attention
  to_q/to_k/to_v/to_out.0 of attn1 and attn2, ff.net.0.proj and ff.net.2) at `network_dim` /
  `network_alpha`. With `conv_dim` (LoCon) also the layers of `ResnetBlock2D`, `Downsample2D` and
  `Upsample2D`: 3x3 convs at `conv_dim`/`conv_alpha`, the others (time_emb_proj, 1x1
  conv_shortcut) at `network_dim`/`network_alpha`.
* Text encoder: self-attention q/k/v/out_proj and MLP fc1/fc2 of every layer.

Initialisation is kohya's (down: Kaiming-uniform, up: zeros), so training starts from the base
model exactly. `network_dropout` drops rank activations (after `lora_down`) as sd-scripts does,
not peft's input dropout. Saved files are kohya files with the true alpha
(`formats.lora.lora_from_peft` + `write_lora`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.lora import LoraModule, LoraNetwork, lora_from_peft

UNET_CONTAINERS = frozenset({"Transformer2DModel"})
UNET_CONV_CONTAINERS = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})
TEXT_ENCODER_CONTAINERS = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"})
ADAPTER = "default"


@dataclass(frozen=True)
class NetworkShape:
    """kohya's network options. alpha 0 means alpha = dim (scale 1), as sd-scripts reads it."""

    dim: int = 4
    alpha: float = 1.0
    conv_dim: int | None = None
    conv_alpha: float | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"network_dim is {self.dim}; it must be >= 1")
        if self.alpha < 0:
            raise ConfigError(f"network_alpha is {self.alpha}; it must be >= 0")
        if self.conv_dim is not None and self.conv_dim < 1:
            raise ConfigError(f"conv_dim is {self.conv_dim}; it must be >= 1")
        if self.conv_alpha is not None and self.conv_dim is None:
            raise ConfigError("conv_alpha is set but conv_dim is not", hint="set conv_dim too")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError(f"network_dropout is {self.dropout}; it must be in [0, 1)")

    @property
    def effective_alpha(self) -> float:
        return self.alpha or float(self.dim)

    @property
    def effective_conv_alpha(self) -> float:
        """sd-scripts: conv_alpha defaults to 1.0; 0 means conv_dim (scale 1)."""
        alpha = 1.0 if self.conv_alpha is None else self.conv_alpha
        return alpha or float(self.conv_dim or self.dim)


@dataclass(frozen=True)
class Targets:
    plain: tuple[str, ...]  # Linear and 1x1 Conv2d: network_dim / network_alpha
    conv3x3: tuple[str, ...]  # k x k convs (LoCon): conv_dim / conv_alpha


def _is_target(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear | torch.nn.Conv2d)


def _is_conv_kxk(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def find_targets(model: torch.nn.Module, containers: frozenset[str], *, conv: bool) -> Targets:
    """The layer names kohya would wrap: Linear / Conv2d children of `containers` classes
    (k x k convs only with `conv`)."""
    plain: list[str] = []
    conv3: list[str] = []
    seen: set[str] = set()
    for name, module in model.named_modules():
        if type(module).__name__ not in containers:
            continue
        for child_name, child in module.named_modules():
            full = f"{name}.{child_name}" if name else child_name
            if not child_name or full in seen or not _is_target(child):
                continue
            seen.add(full)
            if _is_conv_kxk(child):
                if conv:
                    conv3.append(full)
            else:
                plain.append(full)
    return Targets(tuple(plain), tuple(conv3))


def unet_targets(unet: torch.nn.Module, shape: NetworkShape) -> Targets:
    attention = find_targets(unet, UNET_CONTAINERS, conv=False)
    if shape.conv_dim is None:
        return attention
    resnets = find_targets(unet, UNET_CONV_CONTAINERS, conv=True)
    return Targets(attention.plain + resnets.plain, resnets.conv3x3)


def text_encoder_targets(encoder: torch.nn.Module) -> Targets:
    return find_targets(encoder, TEXT_ENCODER_CONTAINERS, conv=False)


def _dropout_hook(p: float) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(output, p=p, training=module.training)

    return hook


class LoraAdapters:
    """peft LoRA layers injected in place into the named components (unet, text_encoder)."""

    def __init__(
        self, components: Mapping[str, torch.nn.Module], targets: Mapping[str, Targets]
    ) -> None:
        self.components = dict(components)
        self.targets = dict(targets)

    @classmethod
    def inject(cls, components: Mapping[str, torch.nn.Module], shape: NetworkShape) -> LoraAdapters:
        """Freeze the components and add adapters (kohya init; fp32 adapter weights)."""
        targets: dict[str, Targets] = {}
        for name, module in components.items():
            found = unet_targets(module, shape) if name == "unet" else text_encoder_targets(module)
            if not found.plain and not found.conv3x3:
                raise ConfigError(f"{name}: no layer to put a LoRA on")
            module.requires_grad_(False)
            inject_adapter_in_model(_peft_config(found, shape), module, adapter_name=ADAPTER)
            targets[name] = found
        adapters = cls(components, targets)
        for _name, param in adapters.named_parameters():
            param.data = param.data.float()
            param.requires_grad_(True)
        if shape.dropout:
            adapters.add_rank_dropout(shape.dropout)
        return adapters

    def add_rank_dropout(self, p: float) -> None:
        for module in self.components.values():
            for name, child in module.named_modules():
                if name.endswith(f"lora_A.{ADAPTER}"):
                    child.register_forward_hook(_dropout_hook(p))

    def named_parameters(
        self, component: str | None = None
    ) -> list[tuple[str, torch.nn.Parameter]]:
        """Adapter parameters as ``<component>.<peft name>``."""
        out: list[tuple[str, torch.nn.Parameter]] = []
        for name, module in self.components.items():
            if component not in (None, name):
                continue
            for pname, param in module.named_parameters():
                if ".lora_A." in pname or ".lora_B." in pname:
                    out.append((f"{name}.{pname}", param))
        return out

    def parameters(self, component: str) -> tuple[torch.nn.Parameter, ...]:
        return tuple(p for _, p in self.named_parameters(component))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters()}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        if set(own) != set(tensors):
            missing = sorted(set(own) - set(tensors))[:3]
            extra = sorted(set(tensors) - set(own))[:3]
            raise ConfigError(
                f"the saved LoRA state does not fit this network (missing {missing}, extra {extra})",
                hint="resume with the same network_dim, conv_dim and trained components",
            )
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(tensors[name])

    def to_network(self, shape: NetworkShape, family: BaseFamily) -> LoraNetwork:
        """The trained adapters as a kohya-ready `LoraNetwork` with the true alphas."""
        modules: dict[str, LoraModule] = {}
        for name, module in self.components.items():
            state = get_peft_model_state_dict(module, adapter_name=ADAPTER)
            conv_names = set(self.targets[name].conv3x3)
            conv_part = {k: v for k, v in state.items() if k.rsplit(".lora_", 1)[0] in conv_names}
            plain_part = {k: v for k, v in state.items() if k not in conv_part}
            for part, alpha in (
                (plain_part, shape.effective_alpha),
                (conv_part, shape.effective_conv_alpha),
            ):
                if part:
                    network = lora_from_peft(part, component=name, alpha=alpha, family=family)
                    modules.update(network.modules)
        return LoraNetwork(modules, {}, "peft", family)


def _peft_config(targets: Targets, shape: NetworkShape) -> LoraConfig:
    conv_dim = shape.conv_dim or shape.dim
    conv_patterns = {re.escape(name): conv_dim for name in targets.conv3x3}
    conv_alphas = {re.escape(name): shape.effective_conv_alpha for name in targets.conv3x3}
    return LoraConfig(
        r=shape.dim,
        lora_alpha=shape.effective_alpha,
        target_modules=list(targets.plain + targets.conv3x3),
        rank_pattern=conv_patterns,
        alpha_pattern=conv_alphas,
        lora_dropout=0.0,
        init_lora_weights=True,
    )
