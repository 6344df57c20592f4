"""BLIP captioning from a local transformers folder (kohya's `make_captions.py`, A1111's BLIP).

The folder is what `save_pretrained` writes for `BlipForConditionalGeneration` and its
`BlipProcessor` (`config.json` with `"model_type": "blip"`, `model.safetensors`, the processor
and tokenizer files), e.g. a local copy of `Salesforce/blip-image-captioning-large`. It is
read with `local_files_only` (never the hub) and only from safetensors (no unpickling).
Captions come from beam search (3 beams, 5 to 75 tokens: kohya's length limits; deterministic,
unlike kohya's default nucleus sampling), and are written as the caption's first entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from brushwork.core.errors import CorruptModelError, ModelFileError
from brushwork.datasets.taggers.base import Prediction

NUM_BEAMS = 3
MIN_LENGTH = 5
MAX_LENGTH = 75


class BlipCaptioner:
    """A BLIP captioning model and its processor, on the CPU (or the first CUDA device)."""

    def __init__(
        self,
        folder: Path,
        *,
        num_beams: int = NUM_BEAMS,
        min_length: int = MIN_LENGTH,
        max_length: int = MAX_LENGTH,
    ) -> None:
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        if not any(folder.glob("*.safetensors")):
            raise ModelFileError(
                folder,
                "holds no .safetensors weights",
                hint="BLIP folders are read from safetensors only; re-save the model with "
                "save_pretrained(..., safe_serialization=True)",
            )
        try:
            self._processor: Any = BlipProcessor.from_pretrained(folder, local_files_only=True)
            model = BlipForConditionalGeneration.from_pretrained(
                folder, local_files_only=True, use_safetensors=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptModelError(folder, f"is not a readable BLIP model ({exc})") from exc
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._model: Any = model.to(self._device).eval()
        self._name = folder.name
        self._generate = {
            "num_beams": num_beams,
            "min_length": min_length,
            "max_length": max_length,
        }

    @property
    def name(self) -> str:
        return self._name

    def predict(self, images: Sequence[Image.Image], floor: float) -> list[Prediction]:
        import torch

        inputs = self._processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self._device)
        with torch.inference_mode():
            tokens = self._model.generate(pixel_values=pixels, **self._generate)
        texts = self._processor.batch_decode(tokens, skip_special_tokens=True)
        return [Prediction(caption=" ".join(str(text).split()) or None) for text in texts]
