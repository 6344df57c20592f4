"""WD14 and DeepDanbooru ONNX taggers: the input contract, thresholds and caption options."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from brushwork.core.errors import ConfigError, ModelFileError
from brushwork.datasets.journal import undo_last
from brushwork.datasets.taggers import (
    ExistingCaptions,
    RatingPlacement,
    TaggingOptions,
    TagStatus,
    Underscores,
    load_tagger,
    tag_folder,
)
from brushwork.datasets.taggers.onnx import OnnxTagger

from .conftest import folder_digest, solid
from .tiny_taggers import WD14_TAGS, build_deepdanbooru, build_wd14, expected_scores

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(scope="module")
def wd14(tmp_path_factory: pytest.TempPathFactory) -> OnnxTagger:
    tagger = load_tagger(str(build_wd14(tmp_path_factory.mktemp("wd14") / "wd-tiny", side=24)))
    assert isinstance(tagger, OnnxTagger)
    return tagger


def _scores(tagger: OnnxTagger, image: Image.Image) -> dict[str, float]:
    names = [name for name, *_ in WD14_TAGS]
    return dict(zip(names, tagger.scores([image])[0].tolist(), strict=True))


def test_the_model_side_comes_from_the_onnx_input(wd14: OnnxTagger) -> None:
    assert wd14.side == 24
    assert wd14.name == "wd-tiny"


def test_wd14_input_is_bgr_0_to_255(wd14: OnnxTagger) -> None:
    # the model's channel 0 is blue: a blue picture lights `blue_eyes`, a red one `long_hair`
    assert _scores(wd14, solid((24, 24), BLUE)) == pytest.approx(expected_scores((1, 0, 0)))
    assert _scores(wd14, solid((50, 50), RED)) == pytest.approx(expected_scores((0, 0, 1)))


def test_wd14_pads_to_a_white_square(wd14: OnnxTagger) -> None:
    # 48x24 red -> 48x48 with white bands above and below: half the blue and green is white
    scores = _scores(wd14, solid((48, 24), RED))
    assert scores == pytest.approx(expected_scores((0.5, 0.5, 1.0)), abs=1e-3)


def test_transparency_is_white(wd14: OnnxTagger) -> None:
    clear = solid((24, 24), (255, 0, 0, 0), "RGBA")
    assert _scores(wd14, clear) == pytest.approx(expected_scores((1, 1, 1)))


def test_probabilities_are_used_as_is_and_logits_get_a_sigmoid(tmp_path: Path) -> None:
    probabilities = load_tagger(str(build_wd14(tmp_path / "p")))
    logits = load_tagger(str(build_wd14(tmp_path / "l", with_sigmoid=False)))
    picture = [solid((32, 32), (10, 200, 90))]
    assert isinstance(probabilities, OnnxTagger) and isinstance(logits, OnnxTagger)
    expected = list(expected_scores((90 / 255, 200 / 255, 10 / 255)).values())
    assert probabilities.scores(picture)[0].tolist() == pytest.approx(expected, abs=1e-5)
    assert logits.scores(picture)[0].tolist() == pytest.approx(expected, abs=1e-5)


def test_a_channels_first_export_is_fed_nchw(tmp_path: Path) -> None:
    tagger = load_tagger(str(build_wd14(tmp_path / "nchw", channels_first=True)))
    assert isinstance(tagger, OnnxTagger)
    assert _scores(tagger, solid((32, 32), BLUE)) == pytest.approx(expected_scores((1, 0, 0)))


def _dataset(folder: Path, pictures: dict[str, Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, picture in pictures.items():
        picture.save(folder / f"{name}.png")
    return folder


def _caption(folder: Path, name: str) -> str:
    return (folder / f"{name}.txt").read_text(encoding="utf-8")


def test_thresholds_pick_and_order_tags(wd14: OnnxTagger, tmp_path: Path) -> None:
    folder = _dataset(
        tmp_path / "d", {"red": solid((32, 32), RED), "green": solid((32, 32), GREEN)}
    )
    report = tag_folder(folder, wd14, TaggingOptions(threshold=0.35, character_threshold=0.85))
    assert report.written and report.count(TagStatus.WRITTEN) == 2
    # red: long_hair .88, 1girl .73, ^_^ .5, solo .378; no rating tags; kaomoji kept
    assert _caption(folder, "red") == "long hair, 1girl, ^_^, solo\n"
    # green: the character (sigmoid(3) = .953) comes first
    assert _caption(folder, "green") == "hatsune miku, 1girl, ^_^, solo\n"

    stricter = TaggingOptions(threshold=0.4, character_threshold=0.96)
    tag_folder(folder, wd14, stricter, existing=ExistingCaptions.OVERWRITE)
    assert _caption(folder, "red") == "long hair, 1girl, ^_^\n"
    assert _caption(folder, "green") == "1girl, ^_^\n"


def test_undesired_always_first_and_underscores(wd14: OnnxTagger, tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "d", {"red": solid((32, 32), RED)})
    options = TaggingOptions(
        undesired=("1girl, long hair",),  # matched with or without the underscore
        always_first=("solo", "not_predicted"),
        underscores=Underscores.KEEP,
        rating=RatingPlacement.LAST,
    )
    tag_folder(folder, wd14, options)
    assert _caption(folder, "red") == "solo, ^_^, general\n"
    options = TaggingOptions(rating=RatingPlacement.FIRST, undesired=("^_^",))
    tag_folder(folder, wd14, options, existing=ExistingCaptions.OVERWRITE)
    assert _caption(folder, "red") == "general, long hair, 1girl, solo\n"


def test_existing_captions_skip_overwrite_append(wd14: OnnxTagger, tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "d", {"red": solid((32, 32), RED)})
    (folder / "red.txt").write_text("sks, 1girl ,smile", encoding="utf-8")
    report = tag_folder(folder, wd14)
    assert report.images[0].status is TagStatus.SKIPPED and not report.written
    assert "--overwrite" in (report.images[0].message or "")
    assert _caption(folder, "red") == "sks, 1girl ,smile"

    tag_folder(folder, wd14, existing=ExistingCaptions.APPEND)
    assert _caption(folder, "red") == "sks, 1girl, smile, long hair, ^_^, solo"
    tag_folder(folder, wd14, existing=ExistingCaptions.OVERWRITE)
    assert _caption(folder, "red") == "long hair, 1girl, ^_^, solo\n"


def test_a_tagging_run_is_undone_byte_for_byte(wd14: OnnxTagger, tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "d", {"a": solid((32, 32), RED), "b": solid((32, 32), GREEN)})
    (folder / "a.txt").write_bytes(b"old ,  tags\r\n")
    before = folder_digest(folder)
    dry = tag_folder(folder, wd14, existing=ExistingCaptions.OVERWRITE, dry_run=True)
    assert dry.count(TagStatus.WRITTEN) == 2 and not dry.written
    assert folder_digest(folder) == before
    tag_folder(folder, wd14, existing=ExistingCaptions.OVERWRITE)
    assert (folder / "b.txt").is_file()
    undo_last(folder)
    after = {k: v for k, v in folder_digest(folder).items() if not k.startswith(".")}
    assert after == before  # a.txt restored, b.txt (created) deleted


def test_broken_images_are_reported_not_fatal(wd14: OnnxTagger, tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "d", {"red": solid((32, 32), RED)})
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    report = tag_folder(folder, wd14)
    status = {item.image.name: item.status for item in report.images}
    assert status == {"broken.png": TagStatus.FAILED, "red.png": TagStatus.WRITTEN}


def test_deepdanbooru_export(tmp_path: Path) -> None:
    tagger = load_tagger(str(build_deepdanbooru(tmp_path / "dd")))
    folder = _dataset(tmp_path / "d", {"red": solid((32, 32), RED), "wide": solid((64, 32), BLUE)})
    tag_folder(folder, tagger, TaggingOptions(threshold=0.45))
    # RGB 0..1 input: red lights `red_theme`; rating:* tags are not written
    assert _caption(folder, "red") == "red theme, 1girl, ^_^\n"
    # padded with black: the blue band covers half the square, blue_theme = sigmoid(0)
    assert set(_caption(folder, "wide").strip().split(", ")) == {"1girl", "blue theme", "^_^"}
    assert isinstance(tagger, OnnxTagger)
    assert tagger.scores([solid((64, 32), BLUE)])[0][3] == pytest.approx(0.5, abs=1e-3)


def test_tagger_by_name_from_a_library_root(tmp_path: Path) -> None:
    build_wd14(tmp_path / "root" / "models" / "taggers" / "wd-tiny")
    assert load_tagger("wd-tiny", [tmp_path / "root"]).name == "wd-tiny"
    with pytest.raises(ConfigError, match="available: shapes, wd-tiny"):
        load_tagger("wd-other", [tmp_path / "root"])


def test_missing_files_are_named(tmp_path: Path) -> None:
    folder = build_wd14(tmp_path / "t")
    (folder / "selected_tags.csv").unlink()
    with pytest.raises(ModelFileError, match=r"selected_tags\.csv"):
        load_tagger(str(folder))
    only_tags = tmp_path / "tags-only"
    only_tags.mkdir()
    (only_tags / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n")
    with pytest.raises(ModelFileError, match=r"no model\.onnx"):
        load_tagger(str(only_tags))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match=r"model\.onnx and selected_tags\.csv"):
        load_tagger(str(empty))


def test_a_tag_list_that_does_not_fit_the_model(tmp_path: Path) -> None:
    folder = build_wd14(tmp_path / "t")
    (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n")
    with pytest.raises(ModelFileError, match="8 scores but the tag list has 1"):
        load_tagger(str(folder))
