"""The `ss_*` training metadata sd-scripts writes into a LoRA (reference: training.md §1.5).

`formats.lora.write_lora` adds the network shape (`ss_network_module/dim/alpha/args`),
`ss_base_model_version`, `ss_v2`, `modelspec.*` and the `sshs_*` hashes; this module supplies
the run's facts: learning rates, step arithmetic, dataset folders, tag frequency, base model
name and hashes, and per save the epoch and step.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brushwork.core import hashing
from brushwork.training.config import LoraTrainingConfig

# the keys sd-scripts keeps with --no_metadata (plus modelspec and sshs, which write_lora adds)
MINIMUM_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args")


@dataclass(frozen=True)
class RunFacts:
    """What the metadata needs from the run's setup."""

    num_train_images: int
    num_reg_images: int
    batches_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    optimizer: str  # sd-scripts' "class(args)" form
    num_processes: int
    clip_skip: int
    max_token_length: int
    dataset_dirs: dict[str, Any]
    reg_dataset_dirs: dict[str, Any]
    tag_frequency: dict[str, Any]
    bucket_info: dict[str, Any] | None
    base_model: Path


def base_model_hashes(path: Path) -> dict[str, str]:
    """`ss_sd_model_name`, the A1111 old hash and the full SHA-256, as sd-scripts records them."""
    return {
        "ss_sd_model_name": path.name,
        "ss_sd_model_hash": hashing.legacy_model_hash(path),
        "ss_new_sd_model_hash": hashing.sha256_file(path),
    }


def _lr_text(value: float | None) -> str:
    return "None" if value is None else str(value)


def training_metadata(config: LoraTrainingConfig, facts: RunFacts) -> dict[str, str]:
    """The metadata fixed for the whole run (strings, nested values as JSON)."""
    width, height = config.resolution
    values: dict[str, Any] = {
        "ss_session_id": random.SystemRandom().randrange(2**31),
        "ss_training_started_at": time.time(),
        "ss_output_name": config.output_name,
        "ss_learning_rate": config.learning_rate,
        "ss_text_encoder_lr": _lr_text(config.text_encoder_lr),
        "ss_unet_lr": _lr_text(config.unet_lr),
        "ss_num_train_images": facts.num_train_images,
        "ss_num_reg_images": facts.num_reg_images,
        "ss_num_batches_per_epoch": facts.batches_per_epoch,
        "ss_num_epochs": facts.epochs,
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_gradient_accumulation_steps": config.gradient_accumulation_steps,
        "ss_max_train_steps": facts.total_steps,
        "ss_lr_warmup_steps": facts.warmup_steps,
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_network_dropout": config.network_dropout,
        "ss_mixed_precision": config.mixed_precision,
        "ss_full_fp16": False,
        "ss_clip_skip": facts.clip_skip,
        "ss_max_token_length": facts.max_token_length,
        "ss_cache_latents": config.cache_latents,
        "ss_seed": config.seed,
        "ss_noise_offset": config.noise_offset,
        "ss_min_snr_gamma": config.min_snr_gamma,
        "ss_optimizer": facts.optimizer,
        "ss_max_grad_norm": config.max_grad_norm,
        "ss_caption_dropout_rate": config.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": config.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": config.caption_tag_dropout_rate,
        "ss_prior_loss_weight": config.prior_loss_weight,
        "ss_training_comment": config.training_comment,
        "ss_batch_size_per_device": config.train_batch_size,
        "ss_total_batch_size": config.train_batch_size
        * config.gradient_accumulation_steps
        * facts.num_processes,
        "ss_resolution": f"({width}, {height})",
        "ss_flip_aug": config.flip_aug,
        "ss_shuffle_caption": config.shuffle_caption,
        "ss_keep_tokens": config.keep_tokens,
        "ss_enable_bucket": config.enable_bucket,
        "ss_bucket_no_upscale": config.bucket_no_upscale,
        "ss_min_bucket_reso": config.min_bucket_reso,
        "ss_max_bucket_reso": config.max_bucket_reso,
        "ss_dataset_dirs": json.dumps(facts.dataset_dirs),
        "ss_reg_dataset_dirs": json.dumps(facts.reg_dataset_dirs),
        "ss_tag_frequency": json.dumps(facts.tag_frequency),
        "ss_v2": config.v2,
        "modelspec.title": config.metadata_title or config.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.encoder_layer": facts.clip_skip if facts.clip_skip > 1 else None,
        "modelspec.author": config.metadata_author,
        "modelspec.description": config.metadata_description,
        "modelspec.license": config.metadata_license,
        "modelspec.tags": config.metadata_tags,
    }
    if facts.bucket_info is not None:
        values["ss_bucket_info"] = json.dumps(facts.bucket_info)
    if facts.base_model.is_file():
        values.update(base_model_hashes(facts.base_model))
    if config.vae:
        values["ss_vae_name"] = Path(config.vae).name
    values.pop("ss_v2")  # write_lora sets it from the model's family
    return {k: str(v) for k, v in values.items() if v is not None}


def save_metadata(
    run_metadata: dict[str, str], *, epoch: int, step: int, no_metadata: bool
) -> dict[str, str]:
    """The metadata of one save: the run's plus `ss_epoch`, `ss_steps`, the finish time."""
    if no_metadata:
        keep = {k: v for k, v in run_metadata.items() if k.startswith("modelspec.")}
        return keep | {"ss_output_name": run_metadata.get("ss_output_name", "")}
    return run_metadata | {
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_training_finished_at": str(time.time()),
    }
