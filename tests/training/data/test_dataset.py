"""Batches: one bucket each, a deterministic order per (seed, epoch), exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.training.data import Batch, DatasetSpec, SubsetSpec, TrainingDataset

from .conftest import WriteImages


def _spec(tmp_path: Path, **subset_options: object) -> DatasetSpec:
    subsets = (
        SubsetSpec(tmp_path / "img" / "3_sks", num_repeats=3, class_tokens="sks", **subset_options),  # type: ignore[arg-type]
        SubsetSpec(tmp_path / "reg" / "1_dog", num_repeats=1, is_reg=True, class_tokens="dog"),
    )
    return DatasetSpec(
        subsets,
        resolution=(128, 128),
        batch_size=3,
        enable_bucket=True,
        min_bucket_reso=64,
        max_bucket_reso=256,
        prior_loss_weight=0.5,
    )


@pytest.fixture
def folders(tmp_path: Path, write_images: WriteImages) -> Path:
    tags = ["sks, dog, grass, ball, sunny", "sks, dog, sofa, indoor, sleeping"]
    for shape, count in (("square", 3), ("wide", 2), ("tall", 2), ("long", 1)):
        write_images(tmp_path / "img" / "3_sks", shape, count, captions=tags)
    write_images(tmp_path / "reg" / "1_dog", "square", 4, captions=["dog"])
    return tmp_path


def _summary(
    batches: list[Batch],
) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[bool, ...]]]:
    return [(tuple(p.name for p in b.paths), b.captions, b.flipped) for b in batches]


def test_batches_never_mix_buckets(folders: Path) -> None:
    dataset = TrainingDataset(_spec(folders), seed=3)
    batches = list(dataset.epoch_batches(0))
    assert len(batches) == dataset.total_batches
    assert {b.bucket for b in batches} == {(128, 128), (192, 64), (64, 192), (256, 64)}
    for batch in batches:
        assert batch.images is not None and batch.latents is None
        width, height = batch.bucket
        assert batch.images.shape[1:] == (3, height, width)
        assert float(batch.images.min()) >= -1.0 and float(batch.images.max()) <= 1.0
        assert len(batch.paths) <= 3
        assert batch.target_sizes_hw == ((height, width),) * len(batch.paths)
    samples = sum(len(b.paths) for b in batches)
    assert samples == dataset.num_train_images * 2  # reg balanced to the train count


def test_reg_samples_carry_flag_and_prior_loss_weight(folders: Path) -> None:
    dataset = TrainingDataset(_spec(folders), seed=3)
    for batch in dataset.epoch_batches(0):
        for path, is_reg, weight in zip(batch.paths, batch.is_reg, batch.loss_weights, strict=True):
            assert bool(is_reg) == ("reg" in path.parent.parent.name)
            assert float(weight) == (0.5 if is_reg else 1.0)


def test_same_seed_and_epoch_give_the_same_batches(folders: Path) -> None:
    options = {"shuffle_caption": True, "flip_aug": True, "caption_tag_dropout_rate": 0.3}
    first = list(TrainingDataset(_spec(folders, **options), seed=7).epoch_batches(2))
    again = list(TrainingDataset(_spec(folders, **options), seed=7).epoch_batches(2))
    assert _summary(first) == _summary(again)
    for a, b in zip(first, again, strict=True):
        assert a.images is not None and b.images is not None
        assert torch.equal(a.images, b.images)
    other_epoch = list(TrainingDataset(_spec(folders, **options), seed=7).epoch_batches(3))
    other_seed = list(TrainingDataset(_spec(folders, **options), seed=8).epoch_batches(2))
    assert _summary(other_epoch) != _summary(first)
    assert _summary(other_seed) != _summary(first)


def test_flip_mirrors_pixels(folders: Path) -> None:
    dataset = TrainingDataset(_spec(folders, flip_aug=True), seed=1)
    flipped = {}
    plain = {}
    for epoch in range(6):
        for batch in dataset.epoch_batches(epoch):
            assert batch.images is not None
            for image, path, flip in zip(batch.images, batch.paths, batch.flipped, strict=True):
                (flipped if flip else plain)[path] = image
    both = set(flipped) & set(plain)
    assert both, "with 50% flips over 6 epochs some image shows both ways"
    path = next(iter(both))
    assert torch.equal(flipped[path], torch.flip(plain[path], dims=[2]))


def test_state_dict_resumes_mid_epoch_at_the_same_batch(folders: Path) -> None:
    options = {"shuffle_caption": True, "flip_aug": True}
    uninterrupted = list(TrainingDataset(_spec(folders, **options), seed=5).epoch_batches(1))
    first_run = TrainingDataset(_spec(folders, **options), seed=5)
    iterator = first_run.epoch_batches(1)
    consumed = [next(iterator) for _ in range(4)]
    state = first_run.state_dict()
    assert (state["epoch"], state["batch_index"]) == (1, 4)
    resumed = TrainingDataset(_spec(folders, **options), seed=999)  # the saved seed wins
    resumed.load_state_dict(state)
    rest = list(resumed.epoch_batches(1))
    assert _summary(consumed + rest) == _summary(uninterrupted)
    assert rest[0].images is not None and uninterrupted[4].images is not None
    assert torch.equal(rest[0].images, uninterrupted[4].images)
    # the next epoch starts from the beginning again
    assert len(list(resumed.epoch_batches(2))) == resumed.total_batches


def test_changed_dataset_warns_on_resume(folders: Path, write_images: WriteImages) -> None:
    state = TrainingDataset(_spec(folders), seed=5).state_dict()
    write_images(folders / "img" / "3_sks", "square", 1, start=10)
    changed = TrainingDataset(_spec(folders), seed=5)
    changed.load_state_dict(state)
    assert any("dataset changed" in w for w in changed.warnings)


def test_metadata_in_kohya_shapes(folders: Path) -> None:
    dataset = TrainingDataset(_spec(folders), seed=0)
    assert dataset.dataset_dirs() == {"3_sks": {"n_repeats": 3, "img_count": 8}}
    assert dataset.reg_dataset_dirs() == {"1_dog": {"n_repeats": 1, "img_count": 4}}
    frequency = dataset.tag_frequency()
    # captions alternate per shape: the first tag set on 5 images, the second on 3
    assert frequency["3_sks"]["sks"] == 8
    assert (frequency["3_sks"]["grass"], frequency["3_sks"]["sofa"]) == (5, 3)
    assert frequency["1_dog"] == {"dog": 4}  # reg folders count too, like kohya
    info = dataset.bucket_info()
    counts = {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()}
    assert counts == dict(dataset.buckets)
    assert info["mean_img_ar_error"] >= 0
    (entry,) = dataset.datasets_metadata()
    assert entry["num_train_images"] == 24 and entry["num_reg_images"] == 4
    assert [s["image_dir"] for s in entry["subsets"]] == ["3_sks", "1_dog"]


def test_few_images_warn(tmp_path: Path, write_images: WriteImages) -> None:
    write_images(tmp_path / "img" / "3_sks", "square", 4)
    spec = DatasetSpec(
        (SubsetSpec(tmp_path / "img" / "3_sks", num_repeats=3),), resolution=(64, 64)
    )
    dataset = TrainingDataset(spec, seed=0)
    assert any("only 4 training images (under 15)" in w for w in dataset.warnings)
    write_images(tmp_path / "img" / "3_sks", "square", 11, start=4)
    assert not any("under 15" in w for w in TrainingDataset(spec, seed=0).warnings)


def test_captions_static_only_without_randomness(folders: Path) -> None:
    assert TrainingDataset(_spec(folders), seed=0).captions_are_static
    assert not TrainingDataset(_spec(folders, shuffle_caption=True), seed=0).captions_are_static


def test_image_deleted_during_training_is_skipped_with_a_warning(folders: Path) -> None:
    dataset = TrainingDataset(_spec(folders), seed=0)
    victim = folders / "img" / "3_sks" / "long00.png"
    victim.unlink()
    batches = list(dataset.epoch_batches(0))
    assert all(victim not in b.paths for b in batches)
    assert any("long00.png" in w for w in dataset.warnings)


def test_no_usable_images_is_an_error_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "3_sks"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"nope")
    spec = DatasetSpec((SubsetSpec(folder, num_repeats=3),), resolution=(64, 64))
    with pytest.raises(ConfigError, match=r"no usable training images in .*3_sks.*broken\.png"):
        TrainingDataset(spec, seed=0)
