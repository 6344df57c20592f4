"""The numbers printed before training match kohya's formulas (train_network.py).

Dataset used below, at resolution 128 with buckets 64..256:
- `3_sks dog`: 4 square + 2 wide images  -> 18 samples
- `5_cat`:     2 tall + 1 square images  -> 15 samples      => 33 train images x repeats
- reg `1_dog`: 3 square + 1 wide images  -> 4 reg images; kohya balances them to 33 samples:
  one round registers all four (4), then +1 repeat round-robin until 33:
  reg00 sq 9, reg01 sq 8, reg02 sq 8, reg03 wide 8.
Buckets: 128x128 = 12 + 5 + 9 + 8 + 8 = 42, 192x64 = 6 + 8 = 14, 64x192 = 10  (66 samples).
Batch size 4: ceil(42/4) + ceil(14/4) + ceil(10/4) = 11 + 4 + 3 = 18 batches per epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from brushwork.training.data import (
    DatasetSpec,
    TrainingDataset,
    dreambooth_subsets,
    format_step_plan,
    step_plan,
)

from .conftest import WriteImages


@pytest.fixture
def kohya_dataset(tmp_path: Path, write_images: WriteImages) -> TrainingDataset:
    write_images(tmp_path / "img" / "3_sks dog", "square", 4)
    write_images(tmp_path / "img" / "3_sks dog", "wide", 2)
    write_images(tmp_path / "img" / "5_cat", "tall", 2)
    write_images(tmp_path / "img" / "5_cat", "square", 1)
    write_images(tmp_path / "reg" / "1_dog", "square", 3, prefix="reg_a")
    write_images(tmp_path / "reg" / "1_dog", "wide", 1, prefix="reg_b")
    subsets = dreambooth_subsets(tmp_path / "img", tmp_path / "reg")
    spec = DatasetSpec(
        subsets,
        resolution=(128, 128),
        batch_size=4,
        enable_bucket=True,
        min_bucket_reso=64,
        max_bucket_reso=256,
    )
    return TrainingDataset(spec, seed=42)


def test_counts_buckets_and_batches_follow_kohya(kohya_dataset: TrainingDataset) -> None:
    assert kohya_dataset.num_train_images == 33
    assert kohya_dataset.num_reg_images == 4
    assert dict(kohya_dataset.buckets) == {(64, 192): 10, (128, 128): 42, (192, 64): 14}
    assert kohya_dataset.num_buckets == 3
    assert kohya_dataset.total_batches == 18
    assert len(kohya_dataset.planned_batches(0)) == 18


def test_epochs_with_accumulation_and_processes(kohya_dataset: TrainingDataset) -> None:
    plan = step_plan(
        kohya_dataset,
        max_train_epochs=10,
        max_train_steps=None,
        gradient_accumulation_steps=2,
        num_processes=2,
    )
    # kohya: max_train_steps = E * ceil(L / P / G) = 10 * ceil(18 / 2 / 2) = 50
    assert plan.total_steps == 10 * math.ceil(18 / 2 / 2) == 50
    # each process's loader: ceil(18 / 2) = 9 batches, ceil(9 / 2) = 5 updates per epoch
    assert plan.batches_per_epoch == 9
    assert plan.update_steps_per_epoch == 5
    assert plan.epochs == 10
    assert (plan.num_train_images, plan.num_reg_images, plan.num_buckets) == (33, 4, 3)
    assert (plan.batch_size, plan.gradient_accumulation_steps, plan.total_batches) == (4, 2, 18)


def test_max_train_steps_gives_the_epoch_count(kohya_dataset: TrainingDataset) -> None:
    plan = step_plan(
        kohya_dataset,
        max_train_epochs=None,
        max_train_steps=100,
        gradient_accumulation_steps=2,
        num_processes=2,
    )
    assert plan.total_steps == 100
    assert plan.epochs == math.ceil(100 / math.ceil(math.ceil(18 / 2) / 2)) == 20
    single = step_plan(kohya_dataset, max_train_epochs=None, max_train_steps=100)
    assert (single.batches_per_epoch, single.epochs) == (18, math.ceil(100 / 18))
    default = step_plan(kohya_dataset, max_train_epochs=None, max_train_steps=None)
    assert default.total_steps == 1600  # kohya's default max_train_steps


def test_epochs_win_over_steps_like_kohya(kohya_dataset: TrainingDataset) -> None:
    plan = step_plan(kohya_dataset, max_train_epochs=3, max_train_steps=999)
    assert (plan.total_steps, plan.epochs) == (3 * 18, 3)


def test_printed_lines_carry_the_kohya_numbers(kohya_dataset: TrainingDataset) -> None:
    plan = step_plan(kohya_dataset, max_train_epochs=10, max_train_steps=None)
    text = format_step_plan(plan)
    assert "num train images * repeats: 33" in text
    assert "num reg images: 4" in text
    assert "num buckets: 3" in text
    assert "num batches per epoch: 18" in text
    assert "num epochs: 10" in text
    assert "batch size per device: 4" in text
    assert "gradient accumulation steps = 1" in text
    assert "total optimization steps: 180" in text
    assert kohya_dataset.plan.batches_per_epoch == 18  # the dataset's own per-epoch plan


def test_reference_worked_example(tmp_path: Path, write_images: WriteImages) -> None:
    """training.md 2.5: 20 images in 10_sks dog, batch 2, 10 epochs -> 100 batches, 1000 steps;
    adding a reg folder adds 200 reg samples -> 200 batches, 2000 steps."""
    write_images(tmp_path / "img" / "10_sks dog", "square", 20)
    write_images(tmp_path / "reg" / "1_dog", "square", 50)
    alone = TrainingDataset(
        DatasetSpec(dreambooth_subsets(tmp_path / "img"), resolution=(64, 64), batch_size=2),
        seed=0,
    )
    plan = step_plan(alone, max_train_epochs=10, max_train_steps=None)
    assert (plan.num_train_images, plan.batches_per_epoch, plan.total_steps) == (200, 100, 1000)
    with_reg = TrainingDataset(
        DatasetSpec(
            dreambooth_subsets(tmp_path / "img", tmp_path / "reg"),
            resolution=(64, 64),
            batch_size=2,
        ),
        seed=0,
    )
    plan = step_plan(with_reg, max_train_epochs=10, max_train_steps=None)
    assert (plan.num_reg_images, plan.batches_per_epoch, plan.total_steps) == (50, 200, 2000)


def test_more_reg_than_train_uses_only_the_first_reg_images(
    tmp_path: Path, write_images: WriteImages
) -> None:
    """kohya stops registering reg images once their repeats reach the train count; the
    first round may overshoot (2 + 2 >= 3 gives 4 reg samples for 3 train samples)."""
    write_images(tmp_path / "img" / "3_a", "square", 1)
    write_images(tmp_path / "reg" / "2_b", "square", 5)
    spec = DatasetSpec(dreambooth_subsets(tmp_path / "img", tmp_path / "reg"), resolution=(64, 64))
    dataset = TrainingDataset(spec, seed=0)
    assert (dataset.num_train_images, dataset.num_reg_images) == (3, 10)
    assert dataset.total_batches == 3 + 4
    assert any("reg images are not used" in w for w in dataset.warnings)
    used_reg = {
        path.relative_to(tmp_path).as_posix()
        for batch in dataset.epoch_batches(0)
        for path, reg in zip(batch.paths, batch.is_reg.tolist(), strict=True)
        if reg
    }
    assert used_reg == {"reg/2_b/square00.png", "reg/2_b/square01.png"}
