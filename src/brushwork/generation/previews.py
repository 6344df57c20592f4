"""Training previews drawn by generation: a trainer's preview request (training/samples.py's
`PreviewRequest`: prompt, negative prompt, size, steps, CFG, sampler, seed) -> images, each with
its A1111 infotext in `image.info["parameters"]` so the saved sample carries it."""

from __future__ import annotations

from typing import Any

from PIL import Image

from brushwork.generation.engine import Generator
from brushwork.generation.request import GenerationRequest


def preview_images(generator: Generator, request: Any, **extra: Any) -> list[Image.Image]:
    """Draw one preview request with `generator` (`extra` goes to `Generator.generate`)."""
    result = generator.generate(
        GenerationRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=request.width,
            height=request.height,
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            sampler_name=request.sampler_name,
            seed=request.seed,
        ),
        **extra,
    )
    images = []
    for item in result.generated:
        item.image.info["parameters"] = item.infotext
        images.append(item.image)
    return images
