"""What a loaded checkpoint is: its modules, tokenizers, dtypes, and the facts generation needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTokenizer

from brushwork.core.arch import family_facts
from brushwork.core.errors import NotAModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.architecture import ModelArchitecture
from brushwork.loading.modules import TextEncoder, module_bytes
from brushwork.samplers.sigmas import ModelSigmas

BAKED = "baked"


@dataclass(frozen=True)
class FileStamp:
    """Which file, in which state: absolute path, size and modification time (ns).

    Symlinks are not resolved: a VAE "beside" a checkpoint is beside where it is listed.
    """

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path | str) -> FileStamp:
        absolute = Path(path).expanduser().absolute()
        try:
            stat = absolute.stat()
        except FileNotFoundError:
            raise NotAModelError(absolute, "no such file") from None
        if not absolute.is_file():
            raise NotAModelError(absolute, "is not a file")
        return cls(absolute, stat.st_size, stat.st_mtime_ns)

    def is_current(self) -> bool:
        """Whether the file on disk is still the one stamped."""
        try:
            stat = self.path.stat()
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


@dataclass
class LoadedModel:
    """A checkpoint's modules on one device, ready to run.

    Mutable on purpose: `swap_vae` replaces the VAE's weights in place, and `decode_latents` may
    upcast a VAE whose half-precision output overflowed (then `vae_dtype` becomes fp32).
    `tokenizers` are keyed like `text_encoders` ("text_encoder", "text_encoder_2").
    `alphas_cumprod` is the SD scaled-linear table (float32), the one the samplers' sigmas use.
    """

    architecture: ModelArchitecture
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: dict[str, TextEncoder]
    tokenizers: dict[str, CLIPTokenizer]
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    source: FileStamp
    alphas_cumprod: torch.Tensor
    vae_source: str = BAKED  # "baked", or the path of the VAE file in use
    metadata: dict[str, str] = field(default_factory=dict)
    # the checkpoint's own VAE weights while another VAE is in use (CPU, vae_dtype), as A1111's
    # base_vae; None while the baked VAE is in use, or when the file has none
    baked_vae: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    has_baked_vae: bool = True

    @property
    def family(self) -> BaseFamily:
        return self.architecture.family

    @property
    def prediction_type(self) -> str:
        return self.architecture.prediction_type

    @property
    def vae_scaling_factor(self) -> float:
        """The checkpoint's latent scale (A1111 keeps the checkpoint's, whatever VAE is in use)."""
        value = self.architecture.vae.get("scaling_factor")
        return float(value) if value else family_facts(self.family).vae_scaling_factor

    @property
    def native_size(self) -> int:
        """The picture side the model was made for: the UNet's sample size times the VAE's
        downscale (512 for SD 1.x, 768 for SD 2.x-v, 1024 for SDXL, 64 for the demo model)."""
        downscale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * int(downscale)

    def sigmas(self) -> ModelSigmas:
        """The model's noise-level table (k-diffusion's discrete schedule)."""
        table = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        return ModelSigmas(table, family=self.family)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, **self.text_encoders}

    def nbytes(self) -> int:
        """Bytes of every weight held (the baked-VAE backup included)."""
        backup = sum(t.numel() * t.element_size() for t in (self.baked_vae or {}).values())
        return sum(module_bytes(m) for m in self.modules().values()) + backup

    def to(self, device: torch.device | str) -> LoadedModel:
        """Move every module to `device` (in place; the baked-VAE backup stays on the CPU)."""
        device = torch.device(device)
        for module in self.modules().values():
            module.to(device)
        self.device = device
        return self
