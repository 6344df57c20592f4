"""Which VAE a checkpoint runs with, swapping it in place, and decoding with an fp32 fallback.

The choice, as A1111's `resolve_vae` without its settings layer:

* `auto`: a VAE file beside the checkpoint named `<stem>*.vae.{safetensors,pt,ckpt}` (A1111 lists
  those with the checkpoints' VAEs), or a file in one of `vae_folders` whose name starts with the
  checkpoint's stem; else the VAE baked into the checkpoint;
* `none` / None / `baked`: the baked VAE;
* a path: that VAE file (A1111 or diffusers layout, through `formats.vae.read_vae`).

A VAE file must have the shapes of the checkpoint's VAE; the checkpoint's latent scaling factor
is kept whatever VAE is used (as in A1111). Swapping keeps the checkpoint's own VAE weights
aside (A1111's `base_vae`) so that switching back restores them bit for bit without rereading
the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from brushwork.core.errors import ConfigError, IncompatibleModelError, NotAModelError
from brushwork.formats.vae import read_vae
from brushwork.loading.model import BAKED, LoadedModel
from brushwork.loading.modules import build_meta_vae, clean_tensor, weight_problems

logger = logging.getLogger(__name__)

VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt")
_BAKED_WORDS = frozenset({"none", "baked", ""})

VaeSpec = str | Path | None


def _near_checkpoint(checkpoint: Path, vae_folders: Sequence[Path]) -> Path | None:
    stem = checkpoint.name.rsplit(".", 1)[0]
    beside = sorted(
        p
        for p in checkpoint.parent.glob(f"{stem}*.vae.*")
        if p.suffix.lower() in VAE_SUFFIXES and p.is_file()
    )
    if beside:
        return beside[0]
    for folder in vae_folders:
        matches = sorted(
            p
            for p in Path(folder).glob(f"{stem}*")
            if p.suffix.lower() in VAE_SUFFIXES and p.is_file()
        )
        if matches:
            return matches[0]
    return None


def resolve_vae_choice(
    checkpoint: Path, vae: VaeSpec = "auto", vae_folders: Sequence[Path] = ()
) -> Path | None:
    """The VAE file to use with `checkpoint`, or None for the baked one."""
    if vae is None or (isinstance(vae, str) and vae.strip().lower() in _BAKED_WORDS):
        return None
    if isinstance(vae, str) and vae.strip().lower() == "auto":
        found = _near_checkpoint(checkpoint, vae_folders)
        if found is not None:
            logger.info("%s: using the VAE beside it, %s", checkpoint.name, found.name)
        return None if found is None else found.absolute()
    path = Path(vae).expanduser()
    if not path.is_file():
        raise NotAModelError(
            path, "no such VAE file", hint="give a VAE file's path, `auto`, or `none` (baked)"
        )
    return path.absolute()


def read_vae_weights(model: LoadedModel, vae_file: Path) -> dict[str, torch.Tensor]:
    """A VAE file's weights, checked against the model's VAE, in the model's VAE dtype/device.

    For a checkpoint without a VAE of its own, the model's VAE is rebuilt to the file's config.
    """
    vae = read_vae(vae_file, family=model.family)
    if not model.has_baked_vae:  # nothing to match: the file says what the VAE is
        scale = model.vae_scaling_factor
        model.vae = build_meta_vae(vae.config | {"scaling_factor": scale})
    problems = weight_problems(model.vae, vae.state_dict, "VAE")
    if problems:
        raise IncompatibleModelError(
            f"{vae_file}: this VAE does not fit the VAE of {model.source.path.name}: "
            + "; ".join(problems),
            hint="use a VAE made for this model's family and size, or `none` for the baked one",
        )
    return {
        k: clean_tensor(vae.state_dict.pop(k), model.vae_dtype, model.device)
        for k in list(vae.state_dict)
    }


def assign_vae(model: LoadedModel, state_dict: dict[str, torch.Tensor]) -> None:
    model.vae.load_state_dict(state_dict, strict=True, assign=True)
    model.vae.requires_grad_(False)
    model.vae.eval()


def _set_aside_baked(model: LoadedModel) -> None:
    """Keep the baked VAE's tensors (moved to the CPU) before another VAE replaces them."""
    if model.vae_source == BAKED and model.has_baked_vae:
        model.baked_vae = {k: v.detach().to("cpu") for k, v in model.vae.state_dict().items()}


def swap_vae(model: LoadedModel, vae: VaeSpec, *, vae_folders: Sequence[Path] = ()) -> LoadedModel:
    """Use another VAE (or the baked one again) without rereading the checkpoint. In place."""
    target = resolve_vae_choice(model.source.path, vae, vae_folders)
    wanted = BAKED if target is None else str(target)
    if wanted == model.vae_source:
        return model
    if target is None:
        if model.baked_vae is None:
            raise ConfigError(
                f"{model.source.path} has no VAE of its own to switch back to",
                hint="choose a VAE file for it",
            )
        restored = {
            k: clean_tensor(v, model.vae_dtype, model.device) for k, v in model.baked_vae.items()
        }
        assign_vae(model, restored)
        model.baked_vae = None
    else:
        weights = read_vae_weights(model, target)
        _set_aside_baked(model)
        assign_vae(model, weights)
    model.vae_source = wanted
    logger.info("%s: VAE is now %s", model.source.path.name, wanted)
    return model


def _decode(model: LoadedModel, scaled: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        images: torch.Tensor = model.vae.decode(scaled.to(model.vae_dtype)).sample
    return images


def decode_latents(
    model: LoadedModel, latents: torch.Tensor, *, retry_fp32: bool = True
) -> torch.Tensor:
    """Decode latents to images in [-1, 1] (float32, on the model's device).

    Latents are divided by the checkpoint's scaling factor first. When a half-precision VAE
    returns NaN (the fp16 overflow of the SDXL and some SD1 VAEs), the VAE is upcast to fp32 for
    good and the batch decoded again, as A1111's `auto_vae_precision` does.
    """
    scaled = latents.to(model.device, torch.float32) / model.vae_scaling_factor
    images = _decode(model, scaled)
    if retry_fp32 and model.vae_dtype != torch.float32 and bool(torch.isnan(images).any()):
        logger.warning(
            "%s: the VAE gave NaN in %s; switching it to fp32",
            model.source.path.name,
            model.vae_dtype,
        )
        model.vae.to(torch.float32)
        model.vae_dtype = torch.float32
        images = _decode(model, scaled)
    return images.float()
