"""kohya folder conventions: `<repeats>_<name>` sub-folders for train and reg images."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from brushwork.core.errors import ConfigError
from brushwork.training.data import (
    DatasetSpec,
    SubsetSpec,
    dreambooth_subsets,
    parse_folder_name,
    skipped_folders,
)

from .conftest import WriteImages


def test_folder_name_gives_repeats_and_class_tokens() -> None:
    assert parse_folder_name("10_sks dog") == (10, "sks dog")
    assert parse_folder_name("40_black mamba") == (40, "black mamba")
    assert parse_folder_name("3_a_b") == (3, "a_b")  # kohya keeps later underscores
    assert parse_folder_name("dog") is None
    assert parse_folder_name("x_dog") is None


def test_dreambooth_subsets_reads_train_and_reg_parents(
    tmp_path: Path, write_images: WriteImages, caplog: pytest.LogCaptureFixture
) -> None:
    write_images(tmp_path / "img" / "10_sks dog", "square", 1)
    write_images(tmp_path / "img" / "3_cat", "square", 1)
    write_images(tmp_path / "img" / "notes", "square", 1)
    write_images(tmp_path / "reg" / "1_dog", "square", 1)
    with caplog.at_level(logging.WARNING):
        subsets = dreambooth_subsets(tmp_path / "img", tmp_path / "reg", flip_aug=True)
    by_name = {s.image_dir.name: s for s in subsets}
    assert set(by_name) == {"10_sks dog", "3_cat", "1_dog"}
    assert by_name["10_sks dog"].num_repeats == 10
    assert by_name["10_sks dog"].class_tokens == "sks dog"
    assert not by_name["10_sks dog"].is_reg
    assert by_name["1_dog"].is_reg and by_name["1_dog"].class_tokens == "dog"
    assert all(s.flip_aug for s in subsets)  # options apply to every subset
    assert "notes" in caplog.text  # the skipped folder is named
    assert skipped_folders(tmp_path / "img") == [tmp_path / "img" / "notes"]


def test_dreambooth_subsets_without_repeat_folders_explains(
    tmp_path: Path, write_images: WriteImages
) -> None:
    write_images(tmp_path / "img", "square", 2)  # images directly in the parent: a common slip
    with pytest.raises(ConfigError, match="10_sks dog"):
        dreambooth_subsets(tmp_path / "img")


def test_spec_validation_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="caption_dropout_rate"):
        SubsetSpec(tmp_path, caption_dropout_rate=1.5)
    with pytest.raises(ConfigError, match="max_bucket_reso"):
        DatasetSpec((SubsetSpec(tmp_path),), resolution=(2048, 2048), enable_bucket=True)
    assert SubsetSpec(tmp_path, caption_extension="txt").caption_extension == ".txt"
    assert DatasetSpec((), resolution="512,768").resolution == (512, 768)  # type: ignore[arg-type]
