"""kohya `--dataset_config` TOML: [general] -> [[datasets]] -> [[datasets.subsets]]."""

from __future__ import annotations

from pathlib import Path

import pytest

from brushwork.core.errors import ConfigError
from brushwork.training.data import (
    TrainingDataset,
    load_dataset_config,
    load_dataset_toml,
    step_plan,
)

from .conftest import WriteImages


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dataset.toml"
    path.write_text(text)
    return path


def test_general_options_are_inherited_and_overridden(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        f"""
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
flip_aug = true

[[datasets]]
resolution = [640, 512]
batch_size = 4
enable_bucket = true
keep_tokens = 2

  [[datasets.subsets]]
  image_dir = '{tmp_path / "a"}'
  num_repeats = 10
  class_tokens = "sks dog"

  [[datasets.subsets]]
  image_dir = '{tmp_path / "reg"}'
  is_reg = true
  keep_tokens = 0
  flip_aug = false
""",
    )
    spec = load_dataset_toml(config)
    assert (spec.resolution, spec.batch_size, spec.enable_bucket) == ((640, 512), 4, True)
    assert (spec.min_bucket_reso, spec.max_bucket_reso, spec.bucket_reso_steps) == (256, 1024, 64)
    first, reg = spec.subsets
    assert first.image_dir == tmp_path / "a" and first.num_repeats == 10
    assert first.class_tokens == "sks dog" and not first.is_reg
    assert first.shuffle_caption and first.caption_extension == ".txt"
    assert first.keep_tokens == 2  # the dataset's value beats [general]
    assert first.flip_aug
    assert reg.is_reg and reg.num_repeats == 1 and reg.keep_tokens == 0 and not reg.flip_aug


def test_misspelt_option_gets_a_suggestion(tmp_path: Path) -> None:
    config = _write(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nnum_repeat=3\n")
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.subsets\[0\]\.num_repeat.*num_repeats"):
        load_dataset_toml(config)


def test_wrong_types_and_missing_image_dir_are_placed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.batch_size is 'four'"):
        load_dataset_toml(_write(tmp_path, "[[datasets]]\nbatch_size='four'\n"))
    with pytest.raises(ConfigError, match=r"general\.flip_aug is 1; expected bool"):
        load_dataset_toml(_write(tmp_path, "[general]\nflip_aug=1\n[[datasets]]\n"))
    with pytest.raises(ConfigError, match="needs image_dir"):
        load_dataset_toml(_write(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nnum_repeats=2\n"))
    with pytest.raises(ConfigError, match="not valid"):
        load_dataset_toml(_write(tmp_path, "[[datasets]\n"))


def test_kohya_options_we_ignore_are_listed_and_finetune_is_refused(tmp_path: Path) -> None:
    text = "[general]\ncolor_aug=true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\n"
    config = load_dataset_config(_write(tmp_path, text))
    assert any("general.color_aug" in entry for entry in config.ignored)
    text = "[[datasets]]\n[[datasets.subsets]]\nimage_dir='x'\nmetadata_file='m.json'\n"
    with pytest.raises(ConfigError, match="metadata_file"):
        load_dataset_config(_write(tmp_path, text))


def test_several_datasets_train_together(tmp_path: Path, write_images: WriteImages) -> None:
    write_images(tmp_path / "a", "square", 3)
    write_images(tmp_path / "b", "square", 2)
    text = f"""
[general]
class_tokens = "sks"
[[datasets]]
resolution = 64
batch_size = 2
  [[datasets.subsets]]
  image_dir = '{tmp_path / "a"}'
  num_repeats = 3
[[datasets]]
resolution = 128
batch_size = 1
  [[datasets.subsets]]
  image_dir = '{tmp_path / "b"}'
"""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="load_dataset_config"):
        load_dataset_toml(path)
    config = load_dataset_config(path)
    dataset = TrainingDataset(config.datasets, seed=0)
    # ceil(9 / 2) + ceil(2 / 1) batches; kohya sums the datasets of a group
    assert dataset.total_batches == 5 + 2
    plan = step_plan(dataset, max_train_epochs=2, max_train_steps=None)
    assert (plan.total_steps, plan.batch_sizes) == (14, (2, 1))
    sizes = {b.bucket: b.images.shape[0] for b in dataset.epoch_batches(0) if b.images is not None}
    assert set(sizes) == {(64, 64), (128, 128)} and sizes[(128, 128)] == 1


def test_relative_image_dir_falls_back_to_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    spec = load_dataset_toml(
        _write(tmp_path, "[[datasets]]\n[[datasets.subsets]]\nimage_dir='imgs'\n")
    )
    assert spec.subsets[0].image_dir == tmp_path / "imgs"
