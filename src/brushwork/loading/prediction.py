"""Telling an SD 2.x v-prediction model (768-v) from an epsilon one (512-base) by running it.

The two have the same shapes, and most files come without a yaml. A1111
(`sd_models_config.is_using_v_parameterization_for_sd2`) runs the UNet once on constant inputs
(latents 0.5, timestep 999, a 2-token context of 0.5): at the last timestep a v-prediction model
predicts about minus the clean signal, so its output falls far below its input, while an epsilon
model predicts the noise, about the input itself. A mean difference under -1 means v-prediction.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

V_PREDICTION_THRESHOLD = -1.0
_PROBE_VALUE = 0.5
_PROBE_STEP = 999
_PROBE_TOKENS = 2


def probe_v_prediction(unet: UNet2DConditionModel) -> float:
    """A1111's probe: mean(UNet(x, 999, c) - x) for constant x and c (below -1: v-prediction)."""
    parameter = next(unet.parameters())
    device, dtype = parameter.device, parameter.dtype
    channels = int(unet.config.in_channels)
    width = int(unet.config.cross_attention_dim)
    latents = torch.full((1, channels, 8, 8), _PROBE_VALUE, device=device, dtype=dtype)
    context = torch.full((1, _PROBE_TOKENS, width), _PROBE_VALUE, device=device, dtype=dtype)
    step = torch.tensor([_PROBE_STEP], device=device)
    with torch.inference_mode():
        out = unet(latents, step, encoder_hidden_states=context).sample
    return float((out.float() - latents.float()).mean())


def looks_like_v_prediction(unet: UNet2DConditionModel) -> bool:
    return probe_v_prediction(unet) < V_PREDICTION_THRESHOLD
