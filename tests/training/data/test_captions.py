"""Caption files and kohya's caption pipeline (keep_tokens, shuffle, dropout, wildcards)."""

from __future__ import annotations

import random
from pathlib import Path

from brushwork.training.data import DatasetSpec, SubsetSpec, TrainingDataset, process_caption

from .conftest import WriteImages

TAGS = "sks, dog, red collar, grass, sunny, park, running"


def _dataset(folder: Path, **subset: object) -> TrainingDataset:
    spec = DatasetSpec(
        (SubsetSpec(folder, class_tokens="sks dog", **subset),), resolution=(128, 128)
    )  # type: ignore[arg-type]
    return TrainingDataset(spec, seed=1)


def _captions(dataset: TrainingDataset) -> dict[str, str]:
    return {
        p.name: c
        for b in dataset.epoch_batches(0)
        for p, c in zip(b.paths, b.captions, strict=True)
    }


def test_txt_captions_are_detected_and_said(tmp_path: Path, write_images: WriteImages) -> None:
    write_images(tmp_path / "5_sks", "square", 2, captions=["a photo of sks"])
    dataset = _dataset(tmp_path / "5_sks")
    assert set(_captions(dataset).values()) == {"a photo of sks"}
    assert any(".txt" in note and "detected" in note for note in dataset.notes)


def test_caption_files_win_over_txt_when_that_is_what_the_folder_has(
    tmp_path: Path, write_images: WriteImages
) -> None:
    write_images(tmp_path / "1_x", "square", 2, captions=["from caption"], caption_ext=".caption")
    dataset = _dataset(tmp_path / "1_x")
    assert set(_captions(dataset).values()) == {"from caption"}
    assert any(".caption" in note for note in dataset.notes)


def test_explicit_extension_with_other_files_present_warns(
    tmp_path: Path, write_images: WriteImages
) -> None:
    """kohya's #1 FAQ: .caption configured, taggers wrote .txt."""
    write_images(tmp_path / "1_x", "square", 2, captions=["tagged"])
    dataset = _dataset(tmp_path / "1_x", caption_extension=".caption")
    assert set(_captions(dataset).values()) == {"sks dog"}  # fell back to class tokens
    assert any("2 .txt caption files are not used" in w for w in dataset.warnings)


def test_missing_caption_uses_class_tokens_and_is_reported(
    tmp_path: Path, write_images: WriteImages
) -> None:
    write_images(tmp_path / "1_x", "square", 1, captions=["has one"])
    write_images(tmp_path / "1_x", "wide", 1)
    captions = _dataset(tmp_path / "1_x")
    assert _captions(captions) == {"square00.png": "has one", "wide00.png": "sks dog"}
    assert any(
        "1 images have no .txt caption" in w and "wide00.png" in w for w in captions.warnings
    )


def test_non_utf8_caption_is_named(tmp_path: Path, write_images: WriteImages) -> None:
    (path,) = write_images(tmp_path / "1_x", "square", 1)
    path.with_suffix(".txt").write_bytes(b"caf\xe9 au lait")
    dataset = _dataset(tmp_path / "1_x")
    assert any("square00.txt" in w and "not UTF-8" in w for w in dataset.warnings)


def _subset(**options: object) -> SubsetSpec:
    return SubsetSpec(Path(), **options)  # type: ignore[arg-type]


def test_keep_tokens_with_shuffle_keeps_the_first_tags() -> None:
    subset = _subset(shuffle_caption=True, keep_tokens=2)
    seen = set()
    for seed in range(20):
        caption = process_caption(subset, TAGS, random.Random(seed), epoch=0)
        tags = caption.split(", ")
        assert tags[:2] == ["sks", "dog"]
        assert sorted(tags) == sorted(TAGS.split(", "))
        seen.add(caption)
    assert len(seen) > 5  # the rest really is shuffled


def test_keep_tokens_separator_fixes_head_and_tail() -> None:
    subset = _subset(shuffle_caption=True, keep_tokens_separator="|||")
    caption = "sks, dog ||| a, b, c, d ||| masterpiece"
    for seed in range(10):
        tags = process_caption(subset, caption, random.Random(seed), 0).split(", ")
        assert tags[:2] == ["sks", "dog"] and tags[-1] == "masterpiece"
        assert sorted(tags[2:-1]) == ["a", "b", "c", "d"]


def test_caption_dropout_rate_one_gives_empty_caption() -> None:
    subset = _subset(caption_dropout_rate=1.0, caption_prefix="style")
    assert process_caption(subset, TAGS, random.Random(0), 0) == ""


def test_tag_dropout_drops_only_flexible_tags() -> None:
    subset = _subset(caption_tag_dropout_rate=1.0, keep_tokens=1)
    assert process_caption(subset, TAGS, random.Random(0), 0) == "sks"
    half = _subset(caption_tag_dropout_rate=0.5)
    lengths = {len(process_caption(half, TAGS, random.Random(s), 0).split(", ")) for s in range(30)}
    assert len(lengths) > 2


def test_dropout_every_n_epochs_counts_epochs_like_kohya() -> None:
    """kohya's epochs are 1-based: with n=2 the 2nd, 4th... epochs (index 1, 3) drop."""
    subset = _subset(caption_dropout_every_n_epochs=2)
    results = [process_caption(subset, "a, b", random.Random(0), epoch) for epoch in range(4)]
    assert results == ["a, b", "", "a, b", ""]


def test_prefix_suffix_and_first_line() -> None:
    subset = _subset(caption_prefix="pre", caption_suffix="post")
    assert process_caption(subset, "a, b\nsecond line", random.Random(0), 0) == "pre a, b"
    wild = _subset(enable_wildcard=True)
    choices = {process_caption(wild, "a {red|blue} {{x}}", random.Random(s), 0) for s in range(20)}
    assert choices == {"a red {x}", "a blue {x}"}


def test_secondary_separator_keeps_a_group_together_through_shuffle() -> None:
    subset = _subset(shuffle_caption=True, secondary_separator=";;;")
    results = {process_caption(subset, "a, b;;;c", random.Random(s), 0) for s in range(20)}
    assert results == {"a, b,c", "b,c, a"}
