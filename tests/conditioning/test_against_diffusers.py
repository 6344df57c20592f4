"""Cross-check with diffusers' own prompt encoding (short prompts without weights, where the
two agree): SD1, SDXL's joined context, pooled output and zeroed empty negative."""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

from brushwork.conditioning import PromptEncoder, schedule_prompt
from brushwork.loading import LoadedModel

PROMPT = "a photo of a cat, highly detailed"


def test_sd1_matches_diffusers(sd1: LoadedModel) -> None:
    # (diffusers 0.42's clip_skip path reads `text_encoder.text_model`, which transformers 5's
    # CLIPTextModel no longer has; clip skip is checked by hand in test_encoder.py)
    pipe = StableDiffusionPipeline(
        vae=sd1.vae,
        text_encoder=sd1.text_encoders["text_encoder"],
        tokenizer=sd1.tokenizers["text_encoder"],
        unet=sd1.unet,
        scheduler=EulerDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    expected, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)

    context = PromptEncoder(sd1).encode(PROMPT).context

    torch.testing.assert_close(context, expected, rtol=0, atol=1e-5)


def test_sdxl_matches_diffusers(sdxl: LoadedModel) -> None:
    pipe = StableDiffusionXLPipeline(
        vae=sdxl.vae,
        text_encoder=sdxl.text_encoders["text_encoder"],
        text_encoder_2=sdxl.text_encoders["text_encoder_2"],
        tokenizer=sdxl.tokenizers["text_encoder"],
        tokenizer_2=sdxl.tokenizers["text_encoder_2"],
        unet=sdxl.unet,
        scheduler=EulerDiscreteScheduler(),
    )
    pipe.config.force_zeros_for_empty_prompt = True
    context, negative, pooled, negative_pooled = pipe.encode_prompt(
        PROMPT, device="cpu", do_classifier_free_guidance=True, negative_prompt=None
    )
    encoder = PromptEncoder(sdxl)

    conditioning = encoder.encode(PROMPT)
    ((empty, _),) = schedule_prompt(encoder, "", 20, allow_and=False).at_step(0)

    torch.testing.assert_close(conditioning.context, context, rtol=0, atol=1e-5)
    assert conditioning.pooled is not None and empty.pooled is not None
    torch.testing.assert_close(conditioning.pooled, pooled, rtol=0, atol=1e-5)
    assert torch.equal(empty.context, negative) and torch.equal(empty.pooled, negative_pooled)
