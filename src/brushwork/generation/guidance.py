"""Classifier-free guidance over a UNet, as A1111's ``CFGDenoiser`` combines it.

Per model call (``k``, counted from 0, selects the prompt schedule's entry):

* every image is denoised once per ``AND`` part of the prompt and once with the negative
  prompt; the denoised results combine as ``uncond + sum_i (cond_i - uncond) * w_i * cfg``
  (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion Models");
* the parts' contexts are padded to the longest by repeating their last vector; when the prompt
  and the negative prompt have the same token count, everything runs as one UNet batch,
  otherwise the prompt rows run in batches of ``2 * batch`` and the negative rows apart, as in
  A1111 (without ``pad_cond_uncond``);
* inpainting keeps the original latent outside the mask: ``denoised = init * keep + denoised *
  paint``.

The UNet sees the latent in the model dtype; the solver's arithmetic stays in float32.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from brushwork.conditioning import Conditioning, ScheduledPrompt
from brushwork.core.errors import BrushworkError
from brushwork.loading import LoadedModel
from brushwork.samplers import ModelSigmas, network_denoiser
from brushwork.samplers.denoisers import Prediction

UNetCall = Callable[[Tensor, Tensor, Tensor, dict[str, Tensor] | None], Tensor]
"""``unet(sample, timestep, context, added_cond_kwargs) -> prediction`` (model dtype in, any out)."""


class GenerationCancelledError(BrushworkError):
    """The caller asked the generation to stop (the images finished before are kept)."""

    def __init__(self) -> None:
        super().__init__("generation cancelled")


def sdxl_time_ids(width: int, height: int) -> Tensor:
    """SDXL's size conditioning: original size, crop top-left, target size (all ``H, W``)."""
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


@dataclass(frozen=True)
class Guidance:
    """The text side of one sampling pass: prompt and negative schedules and the CFG scale."""

    cond: ScheduledPrompt
    uncond: ScheduledPrompt
    cfg_scale: float


@dataclass(frozen=True)
class InpaintLatents:
    """The original latent and the latent mask (1 = paint) of an inpainting pass."""

    init_latent: Tensor
    paint: Tensor  # (B or 1, 1 or C, h, w), on the latent's device

    def blend(self, latent: Tensor) -> Tensor:
        return self.init_latent * (1.0 - self.paint) + self.paint * latent


def _pad_tokens(context: Tensor, tokens: int) -> Tensor:
    """Repeat the last vector until ``tokens`` (A1111's ``stack_conds``)."""
    missing = tokens - context.shape[1]
    if missing <= 0:
        return context
    return torch.cat([context, context[:, -1:].expand(-1, missing, -1)], dim=1)


class GuidedDenoiser:
    """A k-diffusion denoiser ``model(x, sigma)`` that applies the prompt with CFG."""

    def __init__(
        self,
        model: LoadedModel,
        unet: UNetCall,
        guidance: Guidance,
        *,
        size: tuple[int, int],
        inpaint: InpaintLatents | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.model = model
        self.unet = unet
        self.guidance = guidance
        self.inpaint = inpaint
        self.cancel = cancel
        self.table: ModelSigmas = model.sigmas()
        self.prediction: Prediction = (
            "v_prediction" if model.prediction_type == "v_prediction" else "epsilon"
        )
        self.time_ids = sdxl_time_ids(*size).to(model.device) if self._is_sdxl else None
        self.step = 0

    @property
    def _is_sdxl(self) -> bool:
        return "text_encoder_2" in self.model.text_encoders

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelledError()
        parts = self.guidance.cond.at_step(self.step)
        uncond = self.guidance.uncond.at_step(self.step)[0][0]
        batch = x.shape[0]
        tokens = max(cond.context.shape[1] for cond, _ in parts)
        cond_context = torch.cat([_pad_tokens(c.context, tokens) for c, _ in parts]).repeat(
            batch, 1, 1
        )
        cond_pooled = _stack_pooled([c for c, _ in parts], batch)
        repeats = len(parts)
        x_cond, sigma_cond = x.repeat_interleave(repeats, 0), sigma.repeat_interleave(repeats, 0)
        uncond_context = uncond.context.expand(batch, -1, -1)
        uncond_pooled = _stack_pooled([uncond], batch)
        if cond_context.shape[1] == uncond_context.shape[1]:
            out = self._denoise(
                torch.cat([x_cond, x]),
                torch.cat([sigma_cond, sigma]),
                torch.cat([cond_context, uncond_context]),
                _cat_optional(cond_pooled, uncond_pooled),
            )
            cond_out, uncond_out = out[: batch * repeats], out[batch * repeats :]
        else:
            cond_out = self._denoise_chunked(
                x_cond, sigma_cond, cond_context, cond_pooled, 2 * batch
            )
            uncond_out = self._denoise(x, sigma, uncond_context, uncond_pooled)
        denoised = self._combine(cond_out, uncond_out, [w for _, w in parts])
        if self.inpaint is not None:
            denoised = self.inpaint.blend(denoised)
        self.step += 1
        return denoised

    def _combine(self, cond_out: Tensor, uncond_out: Tensor, weights: Sequence[float]) -> Tensor:
        denoised = uncond_out.clone()
        repeats = len(weights)
        for index, weight in enumerate(weights):
            part = cond_out[index::repeats]
            denoised += (part - uncond_out) * (weight * self.guidance.cfg_scale)
        return denoised

    def _denoise_chunked(
        self, x: Tensor, sigma: Tensor, context: Tensor, pooled: Tensor | None, chunk: int
    ) -> Tensor:
        outs = []
        for start in range(0, x.shape[0], chunk):
            end = start + chunk
            part_pooled = None if pooled is None else pooled[start:end]
            outs.append(
                self._denoise(x[start:end], sigma[start:end], context[start:end], part_pooled)
            )
        return torch.cat(outs)

    def _denoise(self, x: Tensor, sigma: Tensor, context: Tensor, pooled: Tensor | None) -> Tensor:
        dtype, device = self.model.dtype, self.model.device
        context = context.to(device, dtype)
        added: dict[str, Tensor] | None = None
        if self.time_ids is not None and pooled is not None:
            added = {
                "text_embeds": pooled.to(device, dtype),
                "time_ids": self.time_ids.expand(x.shape[0], -1).to(dtype),
            }

        def network(scaled: Tensor, timestep: Tensor) -> Tensor:
            output = self.unet(scaled.to(dtype), timestep.to(device), context, added)
            return output.float()

        denoiser = network_denoiser(network, self.table, self.prediction)
        return denoiser(x, sigma)


def _stack_pooled(conds: Sequence[Conditioning], batch: int) -> Tensor | None:
    pooled = [c.pooled for c in conds]
    if any(p is None for p in pooled):
        return None
    return torch.cat([p for p in pooled if p is not None]).repeat(batch, 1)


def _cat_optional(first: Tensor | None, second: Tensor | None) -> Tensor | None:
    if first is None or second is None:
        return None
    return torch.cat([first, second])
