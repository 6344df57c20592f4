"""How the UNet is called: eagerly, or through ``torch.compile`` (opt-in).

The compiled path compiles the UNet's forward once per loaded model and keeps it between
generations. On CUDA it uses the ``reduce-overhead`` mode, which records CUDA graphs for each
static input shape (one per batch layout: the prompt and negative prompt batched together, or
apart when their token counts differ) and replays them; the first call of each shape is slow
(compilation), later ones launch the whole UNet at once. On the CPU it uses inductor's default
mode (C++ kernels; it needs a C compiler). LoRA merges change the weights in place, so
compiled graphs stay valid; hypernetworks replace modules and make torch recompile.

The compile mode and backend can be chosen (``backend="eager"`` runs dynamo without code
generation: the plumbing without the cost, for tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor

from brushwork.core.errors import ConfigError

logger = logging.getLogger(__name__)

CUDA_GRAPH_MODE = "reduce-overhead"


@dataclass(frozen=True)
class CompileOptions:
    """The opt-in compiled path. ``mode`` None: CUDA graphs on CUDA, default elsewhere."""

    enabled: bool = False
    mode: str | None = None
    backend: str = "inductor"

    def resolved_mode(self, device: torch.device) -> str | None:
        if self.backend != "inductor":
            return None
        if self.mode is not None:
            return self.mode
        return CUDA_GRAPH_MODE if device.type == "cuda" else "default"


class UNetRunner:
    """Calls ``unet(sample, timestep, context, added_cond_kwargs)`` and returns its prediction."""

    def __init__(
        self, unet: UNet2DConditionModel, device: torch.device, options: CompileOptions
    ) -> None:
        self.unet = unet
        self.options = options
        self.mode = options.resolved_mode(device) if options.enabled else None
        self._forward: Any = unet
        if options.enabled:
            self._forward = _compile(unet, options, self.mode)
        self._cuda_graphs = self.mode == CUDA_GRAPH_MODE and device.type == "cuda"
        self.calls = 0  # forward calls so far (for timings)

    @property
    def compiled(self) -> bool:
        return self.options.enabled

    def __call__(
        self,
        sample: Tensor,
        timestep: Tensor,
        context: Tensor,
        added: dict[str, Tensor] | None,
    ) -> Tensor:
        self.calls += 1
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        output: Tensor = self._forward(
            sample,
            timestep,
            encoder_hidden_states=context,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        # a CUDA graph's output buffer is overwritten by its next replay: keep a copy
        return output.clone() if self._cuda_graphs else output


def _compile(unet: UNet2DConditionModel, options: CompileOptions, mode: str | None) -> Any:
    if not hasattr(torch, "compile"):
        raise ConfigError("this torch has no torch.compile", hint="run without --compile")
    logger.info("compiling the UNet (backend %s, mode %s)", options.backend, mode)
    kwargs: dict[str, Any] = {"backend": options.backend, "dynamic": False, "fullgraph": False}
    if mode is not None:
        kwargs["mode"] = mode
    return torch.compile(unet, **kwargs)
