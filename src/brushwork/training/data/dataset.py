"""The training dataset: checked images, kohya's buckets and repeats, and a deterministic,
resumable order of batches.

Order: for epoch `e` (0-based) a `random.Random` seeded by (seed, e) shuffles the images of
each bucket, cuts each bucket into batches (a batch never mixes buckets), then shuffles all
batches. Per-sample choices (flip, random crop, caption shuffle and dropout) come from a
generator seeded by (seed, e, batch index), so any batch can be rebuilt on its own: resuming
at batch k gives exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError
from brushwork.training.data import latents as latent_cache
from brushwork.training.data.buckets import Size, crop_ltrb
from brushwork.training.data.captions import process_caption
from brushwork.training.data.images import ImageLoadError, load_rgb, resize_and_crop, to_tensor
from brushwork.training.data.metadata import (
    bucket_info_of,
    dataset_dirs_of,
    datasets_metadata_of,
    tag_frequency_of,
)
from brushwork.training.data.plan import StepPlan, step_plan
from brushwork.training.data.scan import DatasetPart, ImageRecord, ScanReport, scan_dataset
from brushwork.training.data.spec import DatasetSpec, SubsetSpec

logger = logging.getLogger(__name__)

FEW_IMAGES = 15
STATE_VERSION = 1
PlannedBatch = tuple[int, Size, tuple[int, ...]]  # (dataset part, bucket, image indices)


@dataclass(frozen=True)
class Batch:
    """One training batch; every sample comes from the same bucket."""

    images: torch.Tensor | None  # [B, 3, H, W] float32 in [-1, 1]; None when latents are cached
    latents: torch.Tensor | None  # [B, C, H/8, W/8] as the `encode` callable returned them
    captions: tuple[str, ...]
    is_reg: torch.Tensor  # [B] bool
    loss_weights: torch.Tensor  # [B] float32: 1.0, or prior_loss_weight for reg images
    paths: tuple[Path, ...]
    bucket: tuple[int, int]  # (width, height)
    # additions beyond the shared contract (SDXL size conditioning, kohya's convention)
    original_sizes_hw: tuple[tuple[int, int], ...] = ()
    crop_top_lefts: tuple[tuple[int, int], ...] = ()
    target_sizes_hw: tuple[tuple[int, int], ...] = ()
    flipped: tuple[bool, ...] = ()
    epoch: int = 0
    index: int = 0  # position of this batch in its epoch


class TrainingDataset:
    """Images, captions and buckets for one training run (one or more kohya datasets)."""

    def __init__(
        self,
        spec: DatasetSpec | Sequence[DatasetSpec],
        *,
        seed: int,
        tokenizer_max_length: int | None = None,
        verify_images: bool = True,
    ) -> None:
        self.specs: tuple[DatasetSpec, ...] = (
            (spec,) if isinstance(spec, DatasetSpec) else tuple(spec)
        )
        if not self.specs:
            raise ConfigError("no dataset given")
        self.seed = seed
        self.tokenizer_max_length = tokenizer_max_length
        report = ScanReport()
        self._parts = [scan_dataset(s, report, verify_images=verify_images) for s in self.specs]
        self.warnings: list[str] = report.warnings
        self.notes: list[str] = report.notes
        self._check_not_empty()
        self._latent_mode: str | None = None  # None | "memory" | "disk"
        self._resume: tuple[int, int] | None = None
        self._position: tuple[int, int] = (0, 0)
        self._epoch_cache: tuple[int, list[PlannedBatch]] | None = None
        self.plan: StepPlan = step_plan(self, max_train_epochs=1, max_train_steps=None)
        for message in self.notes:
            logger.info(message)
        for message in self.warnings:
            logger.warning(message)

    def _check_not_empty(self) -> None:
        if self.num_train_images == 0:
            folders = ", ".join(str(s.image_dir) for p in self.specs for s in p.subsets)
            raise ConfigError(
                f"no usable training images in {folders or 'the dataset'}",
                hint="; ".join(self.warnings[:3]) or "put images in the folders",
            )
        count = self.image_count
        if count < FEW_IMAGES:
            self.warnings.append(
                f"only {count} training images (under {FEW_IMAGES}); the LoRA may overfit or "
                "learn little; more varied images usually help"
            )

    # ---- the numbers kohya prints -------------------------------------------------------
    @property
    def image_count(self) -> int:
        """Distinct training images (no repeats, no reg)."""
        return sum(1 for part in self._parts for r in part.images if not r.is_reg)

    @property
    def num_train_images(self) -> int:
        return sum(part.num_train_images for part in self._parts)

    @property
    def num_reg_images(self) -> int:
        return sum(part.num_reg_images for part in self._parts)

    @property
    def num_buckets(self) -> int:
        return sum(len(part.buckets) for part in self._parts)

    @property
    def total_batches(self) -> int:
        return sum(part.num_batches for part in self._parts)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(part.spec.batch_size for part in self._parts)

    def __len__(self) -> int:
        return self.total_batches

    @property
    def buckets(self) -> list[tuple[Size, int]]:
        """(bucket, images with repeats and balanced reg) for every dataset, in order."""
        return [(b, len(m)) for part in self._parts for b, m in part.buckets.items()]

    @property
    def captions_are_static(self) -> bool:
        """True when every caption is the same at every step (text-encoder outputs cacheable)."""
        return all(_static_captions(s) for part in self._parts for s in part.subsets)

    @property
    def has_reg_images(self) -> bool:
        return any(r.is_reg for part in self._parts for r in part.images)

    # ---- metadata in kohya's shapes ------------------------------------------------------
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """`ss_tag_frequency`: {folder name: {tag: count}} over every subset, reg included."""
        return tag_frequency_of(self._parts)

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """`ss_dataset_dirs`: {folder name: {"n_repeats", "img_count"}}, train subsets only."""
        return dataset_dirs_of(self._parts, reg=False)

    def reg_dataset_dirs(self) -> dict[str, dict[str, int]]:
        """`ss_reg_dataset_dirs` (kohya writes it with --reg_data_dir)."""
        return dataset_dirs_of(self._parts, reg=True)

    def bucket_info(self) -> dict[str, Any]:
        """`ss_bucket_info` of the first dataset: buckets with counts and the mean AR error."""
        return bucket_info_of(self._parts[0])

    def datasets_metadata(self) -> list[dict[str, Any]]:
        """`ss_datasets` entries (kohya writes these when a dataset config is used)."""
        return datasets_metadata_of(self._parts)

    # ---- the order of an epoch -----------------------------------------------------------
    def planned_batches(self, epoch: int) -> list[PlannedBatch]:
        """All batches of `epoch` as (dataset, bucket, image indices), without loading pixels."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = random.Random(f"brushwork-data:{self.seed}:{epoch}")
        batches: list[PlannedBatch] = []
        for number, part in enumerate(self._parts):
            size = part.spec.batch_size
            for bucket, members in part.buckets.items():
                order = list(members)
                rng.shuffle(order)
                batches.extend(
                    (number, bucket, tuple(order[i : i + size])) for i in range(0, len(order), size)
                )
        rng.shuffle(batches)
        self._epoch_cache = (epoch, batches)
        return batches

    def epoch_batches(self, epoch: int) -> Iterator[Batch]:
        """The batches of `epoch` (0-based). After `load_state_dict`, the first call for the
        saved epoch starts at the saved batch. `state_dict()` taken after a batch has been
        used points at the next one."""
        planned = self.planned_batches(epoch)
        start = 0
        if self._resume is not None:
            resume_epoch, resume_index = self._resume
            self._resume = None
            if resume_epoch == epoch:
                start = min(resume_index, len(planned))
        for index in range(start, len(planned)):
            batch = self._make_batch(epoch, index, planned[index])
            self._position = (epoch, index + 1)
            if batch is not None:
                yield batch
        self._position = (epoch + 1, 0)

    def batch_at(self, epoch: int, index: int) -> Batch | None:
        """Batch `index` of `epoch`, rebuilt on its own (None if every image failed to load)."""
        return self._make_batch(epoch, index, self.planned_batches(epoch)[index])

    # ---- resume --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        epoch, index = self._position
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": epoch,
            "batch_index": index,
            "total_batches": self.total_batches,
            "fingerprint": self.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` left off: same seed, next `epoch_batches(epoch)` resumes."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"data order state has version {state.get('version')!r}; expected 1")
        if state.get("fingerprint") != self.fingerprint():
            message = (
                "the dataset changed since the training state was saved (images, repeats or "
                "buckets differ); the data order after resuming will not match the original run"
            )
            self.warnings.append(message)
            logger.warning(message)
        if int(state["seed"]) != self.seed:
            logger.info("data order: using the saved seed %s (not %s)", state["seed"], self.seed)
            self.seed = int(state["seed"])
            self._epoch_cache = None
        epoch, index = int(state["epoch"]), int(state["batch_index"])
        self._resume = (epoch, index)
        self._position = (epoch, index)

    def fingerprint(self) -> str:
        """A short hash of what decides the data order (paths, repeats, buckets, batch sizes)."""
        digest = hashlib.sha256()
        for part in self._parts:
            digest.update(f"bs={part.spec.batch_size};".encode())
            for record in part.images:
                digest.update(f"{record.path}|{record.repeats}|{record.bucket};".encode())
        return digest.hexdigest()[:16]

    # ---- latents -------------------------------------------------------------------------
    def cache_latents(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        *,
        to_disk: bool = False,
        batch_size: int = 1,
        encoder_name: str = "",
        downscale: int = 8,
    ) -> None:
        """Encode every used image once. `encode` takes images [B, 3, H, W] in [-1, 1] and
        returns latents [B, C, H/d, W/d] (d = `downscale`, the VAE's: 8 for SD); they are stored exactly as returned, so whether the
        VAE scaling factor is applied is the caller's choice (kohya caches unscaled latents and
        multiplies at each step). Flipping subsets also cache the flipped image's latents.

        `to_disk` writes `<image stem>.npz` beside each image (kohya's keys) and reads it back
        at each step instead of keeping latents in memory; a file made from the same image
        bytes, bucket and `encoder_name` (e.g. the VAE's hash) is reused without encoding.
        """
        if any(s.random_crop for part in self._parts for s in part.subsets):
            raise ConfigError(
                "latents cannot be cached with random_crop (each step crops differently)",
                hint="turn off random_crop or latent caching",
            )
        latent_cache.cache_parts(
            self._parts,
            encode,
            to_disk=to_disk,
            batch_size=batch_size,
            encoder=encoder_name,
            downscale=downscale,
        )
        self._latent_mode = "disk" if to_disk else "memory"

    @property
    def latents_cached(self) -> bool:
        return self._latent_mode is not None

    # ---- building one batch --------------------------------------------------------------
    def _make_batch(self, epoch: int, index: int, planned: PlannedBatch) -> Batch | None:
        number, bucket, members = planned
        part = self._parts[number]
        rng = random.Random(f"brushwork-batch:{self.seed}:{epoch}:{index}")
        samples = []
        for member in members:
            record = part.images[member]
            subset = part.subsets[record.subset]
            flip = subset.flip_aug and rng.random() < 0.5
            try:
                pixels = self._sample_tensor(record, subset, flip, rng)
            except ImageLoadError as exc:
                self._runtime_problem(str(exc))
                continue
            caption = process_caption(subset, record.caption, rng, epoch)
            samples.append((record, flip, pixels, caption))
        if not samples:
            return None
        return self._collate(part, bucket, samples, epoch, index)

    def _sample_tensor(
        self, record: ImageRecord, subset: SubsetSpec, flip: bool, rng: random.Random
    ) -> torch.Tensor:
        if self._latent_mode is not None:
            return latent_cache.sample_latents(record, flip)
        image = load_rgb(record.path)
        crop_rng = rng if subset.random_crop else None
        image = resize_and_crop(image, record.resized, record.bucket, crop_rng)
        return to_tensor(image, flip=flip)

    def _runtime_problem(self, message: str) -> None:
        text = f"skipped during training: {message}"
        if text not in self.warnings:
            self.warnings.append(text)
        logger.warning(text)

    def _collate(
        self,
        part: DatasetPart,
        bucket: Size,
        samples: list[tuple[ImageRecord, bool, torch.Tensor, str]],
        epoch: int,
        index: int,
    ) -> Batch:
        stacked = torch.stack([s[2] for s in samples])
        cached = self._latent_mode is not None
        weight = part.spec.prior_loss_weight
        originals, crops = [], []
        for record, flip, _, _ in samples:
            left, top, right, _ = crop_ltrb(bucket, record.size)
            originals.append((record.size[1], record.size[0]))
            crops.append((top, bucket[0] - right if flip else left))
        return Batch(
            images=None if cached else stacked,
            latents=stacked if cached else None,
            captions=tuple(s[3] for s in samples),
            is_reg=torch.tensor([s[0].is_reg for s in samples], dtype=torch.bool),
            loss_weights=torch.tensor(
                [weight if s[0].is_reg else 1.0 for s in samples], dtype=torch.float32
            ),
            paths=tuple(s[0].path for s in samples),
            bucket=bucket,
            original_sizes_hw=tuple(originals),
            crop_top_lefts=tuple(crops),
            target_sizes_hw=tuple((bucket[1], bucket[0]) for _ in samples),
            flipped=tuple(s[1] for s in samples),
            epoch=epoch,
            index=index,
        )


def _static_captions(subset: SubsetSpec) -> bool:
    return not (
        subset.shuffle_caption
        or subset.caption_dropout_rate > 0
        or subset.caption_tag_dropout_rate > 0
        or subset.caption_dropout_every_n_epochs > 0
        or subset.enable_wildcard
    )
