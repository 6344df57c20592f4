"""Saved images: A1111's folders, numbering, the `parameters` chunk, grids."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from PIL import Image

from brushwork.generation import (
    image_grid,
    images_folder,
    next_sequence_number,
    png_bytes,
    save_grid,
    save_image,
)
from brushwork.prompt import read_image_infotext

INFOTEXT = "a cat\nSteps: 3, Sampler: Euler, Seed: 5, Version: brushwork 0.1.0"


def _image(color: str = "red") -> Image.Image:
    return Image.new("RGB", (8, 8), color)


def test_folders_follow_a1111s_layout(tmp_path: Path) -> None:
    day = dt.date(2024, 3, 9)
    assert images_folder(tmp_path, "txt2img", day=day) == tmp_path / "txt2img-images/2024-03-09"
    assert images_folder(tmp_path, "img2img", grid=True, day=day) == (
        tmp_path / "img2img-grids/2024-03-09"
    )


def test_images_are_numbered_after_the_highest_existing_number(tmp_path: Path) -> None:
    first = save_image(_image(), tmp_path, seed=5, infotext=INFOTEXT)
    second = save_image(_image(), tmp_path, seed=6, infotext=INFOTEXT)
    assert (first.name, second.name) == ("00000-5.png", "00001-6.png")
    (tmp_path / "00041-7.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    first.unlink()
    assert save_image(_image(), tmp_path, seed=8, infotext=None).name == "00042-8.png"
    assert next_sequence_number(tmp_path / "missing") == 0


def test_grids_have_their_own_numbers(tmp_path: Path) -> None:
    save_image(_image(), tmp_path, seed=9, infotext=None)
    grid = image_grid([_image("red"), _image("blue"), _image("green")])
    assert grid.size == (16, 16)  # round(sqrt(3)) = 2 rows, 2 columns
    assert grid.getpixel((12, 4)) == (0, 0, 255)
    assert grid.getpixel((12, 12)) == (0, 0, 0)  # the empty cell
    assert save_grid(grid, tmp_path, infotext=INFOTEXT).name == "grid-0000.png"
    assert save_grid(grid, tmp_path, infotext=INFOTEXT).name == "grid-0001.png"


def test_the_infotext_is_in_the_parameters_chunk(tmp_path: Path) -> None:
    path = save_image(_image(), tmp_path, seed=5, infotext=INFOTEXT)
    with Image.open(path) as saved:
        assert saved.info["parameters"] == INFOTEXT
    assert read_image_infotext(path.read_bytes()) == INFOTEXT
    unicode_text = "ein Kätzchen 猫\nSteps: 3, Sampler: Euler, Seed: 5"
    assert read_image_infotext(png_bytes(_image(), unicode_text)) == unicode_text


def test_the_same_image_and_text_give_the_same_bytes() -> None:
    assert png_bytes(_image(), INFOTEXT) == png_bytes(_image(), INFOTEXT)
