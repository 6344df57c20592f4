"""Live previews of a running generation (A1111's ``current_image`` in ``/sdapi/v1/progress``).

After each solver step the engine hands over its current prediction of the finished latents
(A1111's live preview content "Combined"). Every ``show_progress_every_n_steps`` steps (-1: at
the end of each pass only) the latest one is kept; how it becomes a picture is the option
``show_progress_type``:

* ``Approx cheap`` (the default here): A1111's linear latent -> RGB map (4x3 coefficients per
  family, from the Hugging Face forum post A1111 cites; SD1 and SD2 share one), at latent
  resolution. Nearly free, and done only when a client asks for the image, in its thread.
* ``Full``: the VAE decodes it on the worker, in the sampling thread, at the kept steps.

``Approx NN`` and ``TAESD`` need small decoder weights that brushwork does not ship (it never
downloads); they are served as ``Approx cheap``. A batch is shown as one grid, as A1111 does.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from brushwork.core.kinds import BaseFamily

if TYPE_CHECKING:
    import torch

# rows: latent channels 0..3; columns: R, G, B (output in [-1, 1] before * 0.5 + 0.5)
_SD_COEFFICIENTS = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
_SDXL_COEFFICIENTS = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
APPROX_CHEAP_COEFFICIENTS: Mapping[BaseFamily, tuple[tuple[float, float, float], ...]] = {
    BaseFamily.SD1: _SD_COEFFICIENTS,
    BaseFamily.SD2: _SD_COEFFICIENTS,
    BaseFamily.SDXL: _SDXL_COEFFICIENTS,
}

FullDecoder = Callable[["torch.Tensor"], list[Image.Image]]


def approx_cheap_images(latents: torch.Tensor, family: BaseFamily) -> list[Image.Image]:
    """Latents (``batch, 4, h, w``, as the sampler sees them) -> one RGB image each, h x w."""
    import torch

    coefficients = torch.tensor(APPROX_CHEAP_COEFFICIENTS[family], dtype=torch.float32)
    rgb = torch.einsum("blhw,lr->brhw", latents.detach().float().cpu(), coefficients)
    pixels = ((rgb * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB") for image in pixels]


def preview_grid(images: list[Image.Image]) -> Image.Image:
    """A batch as one picture: a near-square grid, as A1111's progress grid."""
    if len(images) == 1:
        return images[0]
    columns = 1
    while columns * columns < len(images):
        columns += 1
    rows = -(-len(images) // columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, ((index % columns) * width, (index // columns) * height))
    return grid


@dataclass(frozen=True)
class PreviewSettings:
    """The live-preview options of a job (A1111's names)."""

    enabled: bool = True
    every_n_steps: int = 10  # 0: never; -1: at the end of each pass
    kind: str = "Approx cheap"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PreviewSettings:
        return cls(
            enabled=bool(options.get("live_previews_enable", True)),
            every_n_steps=int(options.get("show_progress_every_n_steps", 10)),
            kind=str(options.get("show_progress_type", "Approx cheap")),
        )

    def due(self, step: int, steps: int) -> bool:
        """Whether the prediction after ``step`` of a ``steps``-step pass is kept."""
        if not self.enabled or self.every_n_steps == 0:
            return False
        if self.every_n_steps < 0:
            return step == steps
        return step % self.every_n_steps == 0 or step == steps


class LivePreview:
    """The latest preview of one running job. `offer` runs in the sampling thread; `png` in
    whichever thread asks (thread-safe; a PNG is made at most once per kept step)."""

    def __init__(
        self, settings: PreviewSettings, family: BaseFamily, full: FullDecoder | None = None
    ) -> None:
        self.settings = settings
        self.family = family
        self._full = full if settings.kind == "Full" else None
        self._lock = threading.Lock()
        self._latents: torch.Tensor | None = None
        self._images: list[Image.Image] | None = None
        self._png: bytes | None = None
        self.kept = 0  # how many predictions were kept (tests and the UI's preview id)

    def offer(self, step: int, steps: int, denoised: torch.Tensor) -> None:
        if not self.settings.due(step, steps):
            return
        if self._full is not None:
            images = self._full(denoised)
            with self._lock:
                self._latents, self._images, self._png = None, images, None
                self.kept += 1
            return
        import torch

        kept = denoised.detach().to("cpu", torch.float32, copy=True)
        with self._lock:
            self._latents, self._images, self._png = kept, None, None
            self.kept += 1

    def png(self) -> bytes | None:
        with self._lock:
            if self._png is not None:
                return self._png
            latents, decoded, kept = self._latents, self._images, self.kept
        if decoded is not None:
            images = decoded
        elif latents is not None:
            images = approx_cheap_images(latents, self.family)
        else:
            return None
        buffer = io.BytesIO()
        preview_grid(images).save(buffer, format="PNG")
        made = buffer.getvalue()
        with self._lock:
            if self.kept == kept:  # nothing newer arrived meanwhile
                self._png = made
        return made
