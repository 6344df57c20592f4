"""The layers a kohya LoRA patches, as the module paths of the diffusers/transformers models.

kohya `networks/lora.py` (training.md 1.1): every `Linear` / `Conv2d` inside the UNet's
`Transformer2DModel`s; with a conv dim also inside `ResnetBlock2D`, `Downsample2D` and
`Upsample2D`; inside the text encoders' `CLIPAttention` and `CLIPMLP`. The modules are built on
the `meta` device from the architecture's configs, so listing them costs no memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from brushwork.formats.architecture import ModelArchitecture
from brushwork.loading.modules import build_meta_text_encoder, build_meta_unet

UNET_CONTAINERS = ("Transformer2DModel",)
UNET_CONV_CONTAINERS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_CONTAINERS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


@dataclass(frozen=True)
class LoraTarget:
    """One layer a LoRA can patch."""

    component: str  # unet, text_encoder, text_encoder_2
    path: str  # module path inside the component
    weight_shape: tuple[int, ...]

    @property
    def target(self) -> str:
        """The `LoraModule.target` of this layer."""
        return f"{self.component}.{self.path}"

    @property
    def weight_key(self) -> str:
        """The layer's weight in the component's state dict."""
        return f"{self.path}.weight"


def _targets_in(
    component: str, root: torch.nn.Module, containers: tuple[str, ...]
) -> list[LoraTarget]:
    found: dict[str, LoraTarget] = {}
    for name, module in root.named_modules():
        if type(module).__name__ not in containers:
            continue
        for child_name, child in module.named_modules():
            if child_name and isinstance(child, torch.nn.Linear | torch.nn.Conv2d):
                path = f"{name}.{child_name}" if name else child_name
                found[path] = LoraTarget(component, path, tuple(child.weight.shape))
    return list(found.values())


def unet_targets(architecture: ModelArchitecture, *, with_convs: bool) -> list[LoraTarget]:
    """kohya's UNet targets (plus the resnet / sampler layers when `with_convs`)."""
    unet = build_meta_unet(architecture.unet)
    containers = UNET_CONTAINERS + (UNET_CONV_CONTAINERS if with_convs else ())
    return _targets_in("unet", unet, containers)


def text_encoder_targets(architecture: ModelArchitecture) -> dict[str, list[LoraTarget]]:
    """kohya's targets in each text encoder, by component name."""
    return {
        name: _targets_in(name, build_meta_text_encoder(config), TEXT_CONTAINERS)
        for name, config in architecture.text_encoders.items()
    }
