"""Preprocessing: sizes, crops, captions, flips, and every kind of bad or odd picture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.datasets.prepare import (
    CropMode,
    PrepareOptions,
    SkipReason,
    parse_size,
    prepare_dataset,
)
from brushwork.demo.shapes import ShapeSpec, render

from .conftest import folder_digest, solid


def _three_bands(size: tuple[int, int] = (300, 100)) -> Image.Image:
    """Red | green | blue vertical thirds."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    third = size[0] // 3
    pixels[:, :third] = (255, 0, 0)
    pixels[:, third : 2 * third] = (0, 255, 0)
    pixels[:, 2 * third :] = (0, 0, 255)
    return Image.fromarray(pixels)


def _mean(image: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    return tuple(np.asarray(image.crop(box), dtype=np.float64).mean(axis=(0, 1)).tolist())


def _prepare(src: Path, out: Path, **options: object):  # type: ignore[no-untyped-def]
    return prepare_dataset(src, out, PrepareOptions(**options))  # type: ignore[arg-type]


def test_sizes_snap_to_multiples_of_64() -> None:
    assert PrepareOptions(size=parse_size("500x700")).size == (512, 704)
    assert PrepareOptions(size=parse_size("20")).size == (64, 64)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("big")


def test_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _three_bands().save(src / "bands.png")
    report = _prepare(src, tmp_path / "out", size=(128, 128))
    out = Image.open(tmp_path / "out" / "bands.png")
    assert out.size == (128, 128) and out.mode == "RGB"
    assert report.kept[0].original_size == (300, 100)
    # covered to 384x128, the middle 128 columns are the green band
    red, green, blue = _mean(out, (0, 0, 128, 128))
    assert green > 250 and red < 5 and blue < 5


def test_no_crop_keeps_every_pixel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _three_bands().save(src / "bands.png")
    _prepare(src, tmp_path / "out", size=(128, 128), crop=CropMode.NONE)
    out = Image.open(tmp_path / "out" / "bands.png")
    assert out.size == (128, 128)
    assert _mean(out, (0, 0, 30, 128))[0] > 250  # red band at the left
    assert _mean(out, (98, 0, 128, 128))[2] > 250  # blue band at the right


def test_focal_crop_finds_the_detail(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    pixels = np.full((128, 384, 3), 255, dtype=np.uint8)
    rng = np.random.default_rng(0)
    pixels[32:96, 290:360] = rng.integers(0, 256, (64, 70, 3), dtype=np.uint8)  # detail, right
    Image.fromarray(pixels).save(src / "wide.png")
    _prepare(src, tmp_path / "center", size=(128, 128))
    _prepare(src, tmp_path / "focal", size=(128, 128), crop=CropMode.FOCAL)
    centre = np.asarray(Image.open(tmp_path / "center" / "wide.png"), dtype=np.float64)
    focal = np.asarray(Image.open(tmp_path / "focal" / "wide.png"), dtype=np.float64)
    assert centre.std() == 0.0  # the middle of the picture is plain white
    assert focal.std() > 40  # the focal crop holds the detailed patch
    patch_columns = np.flatnonzero(focal.std(axis=(0, 2)) > 0)
    assert patch_columns.min() > 0 and patch_columns.max() < 127  # the whole patch, inside


def test_buckets_keep_the_aspect_ratio(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "10_sks").mkdir(parents=True)
    solid((400, 200), (10, 20, 30)).save(src / "10_sks" / "wide.jpg")
    solid((150, 300), (90, 20, 30)).save(src / "tall.png")
    solid((256, 256), (10, 120, 30)).save(src / "square.png")
    report = _prepare(src, tmp_path / "out", size=(256, 256), buckets=True)
    sizes = {item.source.name: item.size for item in report.kept}
    # kohya's buckets for 256x256 (sides 128..512): 2:1 -> 320x192, 1:2 -> 192x320 (nearest ratio)
    assert sizes == {"wide.jpg": (320, 192), "tall.png": (192, 320), "square.png": (256, 256)}
    assert Image.open(tmp_path / "out" / "10_sks" / "wide.png").size == (320, 192)


def test_captions_flips_and_untouched_originals(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _three_bands((192, 64)).save(src / "a.png")
    (src / "a.txt").write_text("sks, bands", encoding="utf-8")
    (src / "a.caption").write_text("a picture of bands", encoding="utf-8")
    before = folder_digest(src)
    report = _prepare(src, tmp_path / "out", size=(192, 64), flip=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "a-flipped.caption",
        "a-flipped.png",
        "a-flipped.txt",
        "a.caption",
        "a.png",
        "a.txt",
    ]
    assert (out / "a-flipped.txt").read_text() == "sks, bands"
    plain = np.asarray(Image.open(out / "a.png"))
    assert np.array_equal(np.asarray(Image.open(out / "a-flipped.png")), plain[:, ::-1])
    assert report.to_json()["counts"] == {"kept": 1, "written": 2, "skipped": 0}
    assert folder_digest(src) == before
    with pytest.raises(ConfigError, match="never overwritten"):
        prepare_dataset(src, src, PrepareOptions())


def _jpeg(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save)
    return buffer.getvalue()


def test_bad_pictures_are_skipped_with_a_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    picture = render(ShapeSpec("circle", "red", "white"), 256)
    picture.save(src / "circle.png")
    picture.save(src / "copy.bmp")  # same pixels, other format
    picture.resize((200, 200)).save(src / "near.jpg", quality=85)  # resized, re-compressed
    render(ShapeSpec("circle", "blue", "white"), 256).save(src / "blue.png")  # not a duplicate
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (src / "truncated.jpg").write_bytes(_jpeg(_three_bands())[:600])
    solid((40, 40), (1, 2, 3)).save(src / "tiny.png")
    report = _prepare(src, tmp_path / "out", size=(128, 128), min_size=64)
    skipped = {item.source.name: item for item in report.skipped}
    assert {name: item.reason for name, item in skipped.items()} == {
        "broken.png": SkipReason.BROKEN,
        "copy.bmp": SkipReason.DUPLICATE,
        "near.jpg": SkipReason.NEAR_DUPLICATE,
        "tiny.png": SkipReason.TOO_SMALL,
        "truncated.jpg": SkipReason.BROKEN,
    }
    assert skipped["near.jpg"].duplicate_of == src / "circle.png"
    assert "below the minimum size 64" in skipped["tiny.png"].message
    assert "truncated" in skipped["truncated.jpg"].message
    assert sorted(item.source.name for item in report.kept) == ["blue.png", "circle.png"]


def test_of_duplicates_the_largest_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    picture = render(ShapeSpec("star", "green", "black"), 256)
    picture.resize((128, 128), Image.Resampling.LANCZOS).save(src / "a_small.png")
    picture.save(src / "b_large.png")
    report = _prepare(src, tmp_path / "out", size=(128, 128))
    assert [item.source.name for item in report.kept] == ["b_large.png"]
    assert report.skipped[0].duplicate_of == src / "b_large.png"
    no_dedupe = _prepare(src, tmp_path / "all", size=(128, 128), dedupe=False)
    assert len(no_dedupe.kept) == 2


def test_exif_cmyk_16_bit_and_transparency(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    stored = _three_bands((150, 75))  # stored on its side; EXIF 6 = rotate 90 clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    (src / "rotated.jpg").write_bytes(_jpeg(stored, exif=exif, quality=95))
    (src / "cmyk.jpg").write_bytes(_jpeg(solid((64, 64), (0, 255, 255, 0), "CMYK"), quality=95))
    grey16 = Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16))
    assert grey16.mode == "I;16"
    grey16.save(src / "grey16.png")
    rgba = solid((64, 64), (0, 0, 0, 0), "RGBA")
    rgba.paste((0, 0, 255, 255), (16, 16, 48, 48))
    rgba.save(src / "alpha.png")
    palette = rgba.convert("P")  # RGBA -> palette with a transparent entry
    palette.save(src / "palette.png")
    assert "transparency" in Image.open(src / "palette.png").info
    solid((64, 64), (0, 0), "LA").save(src / "grey_alpha.png")
    report = _prepare(src, tmp_path / "out", size=(64, 64), crop=CropMode.NONE, dedupe=False)
    kept = {item.source.name: item for item in report.kept}
    assert not report.skipped
    assert kept["rotated.jpg"].original_size == (75, 150)
    assert "EXIF orientation 6 applied" in kept["rotated.jpg"].notes
    rotated = Image.open(tmp_path / "out" / "rotated.png")
    top, bottom = _mean(rotated, (0, 0, 64, 16)), _mean(rotated, (0, 48, 64, 64))
    assert top[0] > 200 and bottom[2] > 200  # the left (red) band is now at the top
    assert _mean(Image.open(tmp_path / "out" / "cmyk.png"), (0, 0, 64, 64))[0] > 200
    assert "CMYK converted to RGB" in kept["cmyk.jpg"].notes
    grey = _mean(Image.open(tmp_path / "out" / "grey16.png"), (0, 0, 64, 64))
    assert grey == pytest.approx((128.0, 128.0, 128.0), abs=1.0)  # not clipped to white
    alpha = Image.open(tmp_path / "out" / "alpha.png")
    assert alpha.mode == "RGB"
    assert alpha.getpixel((2, 2)) == (255, 255, 255)  # transparent -> white
    assert alpha.getpixel((32, 32)) == (0, 0, 255)
    palette_out = Image.open(tmp_path / "out" / "palette.png")
    assert palette_out.getpixel((2, 2)) == (255, 255, 255)
    assert palette_out.getpixel((32, 32)) == (0, 0, 255)
    assert Image.open(tmp_path / "out" / "grey_alpha.png").getpixel((5, 5)) == (255, 255, 255)
    assert "transparency flattened on white" in kept["palette.png"].notes
