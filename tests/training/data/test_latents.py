"""Latent caching: each image encoded once; `.npz` beside the image reused and invalidated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.training.data import DatasetSpec, SubsetSpec, TrainingDataset

from .conftest import FakeEncoder, WriteImages, write_image


def _spec(folder: Path, **options: object) -> DatasetSpec:
    subset = SubsetSpec(folder, num_repeats=2, class_tokens="sks", **options)  # type: ignore[arg-type]
    return DatasetSpec(
        (subset,),
        resolution=(128, 128),
        batch_size=2,
        enable_bucket=True,
        min_bucket_reso=64,
        max_bucket_reso=256,
    )


@pytest.fixture
def folder(tmp_path: Path, write_images: WriteImages) -> Path:
    write_images(tmp_path / "2_sks", "square", 3)
    write_images(tmp_path / "2_sks", "wide", 2)
    return tmp_path / "2_sks"


def test_memory_cache_encodes_each_image_once(folder: Path, encoder: FakeEncoder) -> None:
    dataset = TrainingDataset(_spec(folder), seed=0)
    reference = {
        p: img
        for b in dataset.epoch_batches(0)
        if b.images is not None
        for p, img in zip(b.paths, b.images, strict=True)
    }
    dataset.cache_latents(encoder, batch_size=2)
    assert encoder.images_seen == 5  # 5 images, repeats do not re-encode
    for batch in dataset.epoch_batches(0):
        assert batch.images is None and batch.latents is not None
        width, height = batch.bucket
        assert batch.latents.shape[1:] == (4, height // 8, width // 8)
        for path, latent in zip(batch.paths, batch.latents, strict=True):
            assert torch.allclose(latent, FakeEncoder()(reference[path][None])[0])
    assert encoder.images_seen == 5


def test_flip_aug_caches_flipped_latents(folder: Path, encoder: FakeEncoder) -> None:
    dataset = TrainingDataset(_spec(folder, flip_aug=True), seed=0)
    dataset.cache_latents(encoder)
    assert encoder.images_seen == 10  # plain and flipped
    seen_flipped = False
    for epoch in range(3):
        for batch in dataset.epoch_batches(epoch):
            assert batch.latents is not None
            seen_flipped |= any(batch.flipped)
    assert seen_flipped


def test_disk_cache_is_reused_by_a_new_dataset(folder: Path, encoder: FakeEncoder) -> None:
    TrainingDataset(_spec(folder), seed=0).cache_latents(
        encoder, to_disk=True, encoder_name="vae-a"
    )
    npz_files = sorted(folder.glob("*.npz"))
    assert [p.stem for p in npz_files] == ["square00", "square01", "square02", "wide00", "wide01"]
    with np.load(npz_files[-1]) as data:  # kohya's keys and shapes
        assert data["latents"].shape == (4, 8, 24)
        assert list(data["original_size"]) == [300, 100]
        assert len(data["crop_ltrb"]) == 4
    second = FakeEncoder()
    again = TrainingDataset(_spec(folder), seed=0)
    again.cache_latents(second, to_disk=True, encoder_name="vae-a")
    assert second.images_seen == 0
    assert all(b.latents is not None for b in again.epoch_batches(0))
    other_vae = FakeEncoder()
    TrainingDataset(_spec(folder), seed=0).cache_latents(
        other_vae, to_disk=True, encoder_name="vae-b"
    )
    assert other_vae.images_seen == 5  # another encoder name: recomputed


def test_disk_cache_invalidated_when_the_image_changes(folder: Path, encoder: FakeEncoder) -> None:
    TrainingDataset(_spec(folder), seed=0).cache_latents(encoder, to_disk=True)
    write_image(folder / "square01.png", (128, 128), colour=99)  # same size, new pixels
    write_image(folder / "wide00.png", (100, 300), colour=1)  # now tall: another bucket
    second = FakeEncoder()
    TrainingDataset(_spec(folder), seed=0).cache_latents(second, to_disk=True)
    assert second.images_seen == 2
    with np.load(folder / "wide00.npz") as data:
        assert data["latents"].shape == (4, 24, 8)


def test_random_crop_cannot_be_cached(folder: Path, encoder: FakeEncoder) -> None:
    with pytest.raises(ConfigError, match="random_crop"):
        TrainingDataset(_spec(folder, random_crop=True), seed=0).cache_latents(encoder)


def test_nan_latents_name_the_image(folder: Path) -> None:
    def broken(images: torch.Tensor) -> torch.Tensor:
        return torch.full(
            (images.shape[0], 4, images.shape[2] // 8, images.shape[3] // 8), float("nan")
        )

    with pytest.raises(BrushworkError, match=r"square00\.png.*float32"):
        TrainingDataset(_spec(folder), seed=0).cache_latents(broken)
