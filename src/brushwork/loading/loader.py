"""`load_model`: a checkpoint file -> modules on a device, in the dtype policy's precision."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from brushwork.core.arch import family_facts, skeleton_config
from brushwork.core.errors import ModelFileError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.architecture import ModelArchitecture, standard_architecture
from brushwork.formats.checkpoint import Checkpoint
from brushwork.loading.model import BAKED, FileStamp, LoadedModel
from brushwork.loading.modules import (
    TextEncoder,
    assign_weights,
    build_meta_text_encoder,
    build_meta_unet,
    build_meta_vae,
    check_weights,
    clean_tensor,
    load_tokenizers,
)
from brushwork.loading.precision import choose_dtype, choose_vae_dtype, resolve_device
from brushwork.loading.prediction import V_PREDICTION_THRESHOLD, probe_v_prediction
from brushwork.loading.reading import open_checkpoint, read_components
from brushwork.loading.vae import VaeSpec, assign_vae, read_vae_weights, resolve_vae_choice
from brushwork.samplers.sigmas import sd_alphas_cumprod

logger = logging.getLogger(__name__)


def alphas_cumprod_for(architecture: ModelArchitecture) -> torch.Tensor:
    """The model's alpha-bar table from its scheduler betas (SD's scaled-linear schedule)."""
    skeleton = architecture.skeleton or family_facts(architecture.family).skeleton
    scheduler = skeleton_config(skeleton, "scheduler")
    return sd_alphas_cumprod(
        int(scheduler["num_train_timesteps"]),
        float(scheduler["beta_start"]),
        float(scheduler["beta_end"]),
    )


def settle_sd2_prediction(
    architecture: ModelArchitecture, unet: UNet2DConditionModel, path: Path
) -> ModelArchitecture:
    """For an SD 2.x file that does not say, A1111's probe decides epsilon or v-prediction."""
    config = unet.config
    if architecture.family is not BaseFamily.SD2 or config.in_channels != config.out_channels:
        return architecture
    probe = probe_v_prediction(unet)
    if probe >= V_PREDICTION_THRESHOLD:
        return architecture
    logger.info("%s: the UNet answers like a v-prediction model (probe %.2f)", path.name, probe)
    if architecture.skeleton == "sd2":
        return standard_architecture("sd2-v")
    return replace(architecture, prediction_type="v_prediction", skeleton=None)


def _load_text_encoders(
    checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device, source: Path
) -> dict[str, TextEncoder]:
    encoders: dict[str, TextEncoder] = {}
    for name, config in checkpoint.architecture.text_encoders.items():
        module = build_meta_text_encoder(config)
        weights = checkpoint.text_encoders.get(name, {})
        assign_weights(
            module, weights, dtype=dtype, device=device, what=f"{name} (CLIP)", source=source
        )
        encoders[name] = module
    return encoders


def _baked_vae_backup(checkpoint: Checkpoint, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    if not checkpoint.vae:
        return None
    cpu = torch.device("cpu")
    return {k: clean_tensor(checkpoint.vae.pop(k), dtype, cpu) for k in list(checkpoint.vae)}


def _attach_vae(model: LoadedModel, checkpoint: Checkpoint, vae_file: Path | None) -> None:
    """Give the meta-built VAE its weights: the chosen file's, else the checkpoint's own."""
    path = model.source.path
    model.has_baked_vae = bool(checkpoint.vae)
    if vae_file is None:
        if not checkpoint.vae:
            raise ModelFileError(
                path,
                "has no VAE weights of its own (first_stage_model.*)",
                hint="choose a VAE file for it",
            )
        assign_weights(
            model.vae,
            checkpoint.vae,
            dtype=model.vae_dtype,
            device=model.device,
            what="VAE",
            source=path,
        )
        return
    if checkpoint.vae:
        check_weights(model.vae, checkpoint.vae, "VAE", path)
    weights = read_vae_weights(model, vae_file)
    model.baked_vae = _baked_vae_backup(checkpoint, model.vae_dtype)
    assign_vae(model, weights)
    model.vae_source = str(vae_file)


def load_model(
    checkpoint: Path | str,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    vae: VaeSpec = "auto",
    use_ema: bool = False,
    prediction_type: str | None = None,
    vae_precision: str = "auto",
    vae_folders: Sequence[Path] = (),
) -> LoadedModel:
    """Load an A1111/LDM checkpoint (.safetensors or .ckpt) into diffusers/transformers modules.

    `device`/`precision`: see `loading.precision` (auto: CUDA fp16, else CPU bf16 where native,
    else fp32). `vae`: `auto`, `none` (baked) or a VAE file (see `loading.vae`). `use_ema`: run the
    EMA copy of the UNet. `prediction_type` (`epsilon`/`v_prediction`) overrides the file's; when
    neither it nor a yaml sidecar says, an SD 2.x UNet is probed once as A1111 does
    (`loading.prediction`), other families take their shapes' answer (epsilon, or SDXL `v_pred`).
    """
    started = time.perf_counter()
    stamp = FileStamp.of(checkpoint)
    target = resolve_device(device)
    dtype = choose_dtype(target, precision)
    vae_file = resolve_vae_choice(stamp.path, vae, vae_folders)
    opened = open_checkpoint(stamp.path, prediction_type=prediction_type)
    arch = opened.architecture
    vae_dtype = choose_vae_dtype(arch.family, dtype, vae_precision)
    ckpt = read_components(opened, use_ema=use_ema, dtype=dtype, vae_dtype=vae_dtype)
    unet = build_meta_unet(arch.unet)
    assign_weights(unet, ckpt.unet, dtype=dtype, device=target, what="UNet", source=stamp.path)
    if not opened.prediction_given:
        arch = settle_sd2_prediction(arch, unet, stamp.path)
    encoders = _load_text_encoders(ckpt, dtype, target, stamp.path)
    model = LoadedModel(
        architecture=arch,
        unet=unet,
        vae=build_meta_vae(arch.vae),
        text_encoders=encoders,
        tokenizers=load_tokenizers(arch.family, list(encoders)),
        device=target,
        dtype=dtype,
        vae_dtype=vae_dtype,
        source=stamp,
        alphas_cumprod=alphas_cumprod_for(arch),
        vae_source=BAKED,
        metadata=dict(ckpt.metadata),
    )
    _attach_vae(model, ckpt, vae_file)
    logger.info(
        "loaded %s (%s, %s) on %s in %s in %.2f s",
        stamp.path.name,
        arch.family.value,
        arch.prediction_type,
        target,
        str(dtype).removeprefix("torch."),
        time.perf_counter() - started,
    )
    return model
