"""patching floor (F3): LoRA and hypernetworks applied to loaded modules, scoped and exactly
reversible. See `patching.lora` and `patching.hypernetwork`; docs/architecture.md."""

from brushwork.patching.hypernetwork import (
    HypernetworkApplication,
    HypernetworkPatcher,
    HypernetworkProjection,
    HypernetworkReport,
    apply_hypernetworks,
    load_hypernetwork_application,
)
from brushwork.patching.lora import (
    LoraApplication,
    LoraPatcher,
    LoraReport,
    Unmatched,
    apply_loras,
    load_lora_application,
)

__all__ = [
    "HypernetworkApplication",
    "HypernetworkPatcher",
    "HypernetworkProjection",
    "HypernetworkReport",
    "LoraApplication",
    "LoraPatcher",
    "LoraReport",
    "Unmatched",
    "apply_hypernetworks",
    "apply_loras",
    "load_hypernetwork_application",
    "load_lora_application",
]
