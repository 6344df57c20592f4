"""Odd and broken images: skipped with the file named, or converted carefully."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from brushwork.training.data import DatasetSpec, SubsetSpec, TrainingDataset
from brushwork.training.data.images import load_rgb, probe_image

from .conftest import WriteImages


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims a size, with no pixel data (how bombs announce themselves)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def _dataset(folder: Path) -> TrainingDataset:
    spec = DatasetSpec((SubsetSpec(folder, class_tokens="x"),), resolution=(64, 64))
    return TrainingDataset(spec, seed=0)


def test_bad_files_are_skipped_and_named(tmp_path: Path, write_images: WriteImages) -> None:
    folder = tmp_path / "1_x"
    (good,) = write_images(folder, "square", 1)
    truncated = folder / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (folder / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    (folder / "empty.webp").write_bytes(b"")
    _png_header_only(folder / "bomb.png", 30000, 30000)  # over Pillow's own hard limit
    _png_header_only(folder / "huge.png", 8000, 6000)  # 48 MP: over our 40 MP budget
    dataset = _dataset(folder)
    assert [p.name for b in dataset.epoch_batches(0) for p in b.paths] == ["square00.png"]
    text = "\n".join(dataset.warnings)
    for name in ("truncated.png", "garbage.jpg", "empty.webp", "bomb.png", "huge.png"):
        assert name in text
    assert "decompression bomb" in text
    assert "48 MP" in text and "40 MP limit" in text


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (80, 80), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    assert probe_image(path, max_pixels=10**7, max_side=10**4).note is not None
    red = np.asarray(load_rgb(path))[40, 40]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    values = np.full((32, 32), 128 * 257, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    pixel = np.asarray(load_rgb(path))[5, 5]
    assert list(pixel) == [128, 128, 128]  # Pillow's plain convert("RGB") gives 255
    dark = tmp_path / "dark.png"
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint16)).save(dark)  # 200/65535: near black
    assert list(np.asarray(load_rgb(dark))[0, 0]) == [1, 1, 1]


def test_palette_png_with_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.paste(0, (0, 0, 8, 16))  # left half uses index 0, declared transparent
    image.save(path, transparency=0)
    rgb = np.asarray(load_rgb(path))
    assert list(rgb[4, 2]) == [255, 255, 255]
    assert list(rgb[4, 12]) == [255, 0, 0]


def test_exif_orientation_is_applied_before_bucketing(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: stored 100x300, shown 300x100
    Image.new("RGB", (100, 300), (10, 200, 10)).save(path, exif=exif)
    assert probe_image(path, max_pixels=10**7, max_side=10**4).size == (300, 100)
    assert load_rgb(path).size == (300, 100)


def test_converted_images_train(tmp_path: Path) -> None:
    folder = tmp_path / "1_x"
    folder.mkdir()
    Image.new("CMYK", (64, 64)).save(folder / "a.jpg")
    Image.fromarray(np.full((64, 64), 1000, dtype=np.uint16)).save(folder / "b.png")
    Image.new("LA", (64, 64), (10, 128)).save(folder / "c.png")
    dataset = _dataset(folder)
    assert sum(len(b.paths) for b in dataset.epoch_batches(0)) == 3
    notes = {
        Path(n.split(": ")[0]).name: n.split(": ")[1] for n in dataset.notes if ".txt" not in n
    }
    assert notes == {
        "a.jpg": "CMYK image converted to RGB",
        "b.png": "I;16 (high bit depth) image scaled to 8-bit RGB",
        "c.png": "transparency flattened on white",
    }
