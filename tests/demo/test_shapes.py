"""The shapes-world generator: seeded specs, deterministic pictures, captions that say what is drawn."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.demo.shapes import (
    ALL_SHAPES,
    BASE_SHAPES,
    COLORS,
    FILLS,
    HELD_OUT_SHAPES,
    SIZES,
    ShapeSpec,
    caption,
    parse_names,
    render,
    sample_specs,
    shape_mask,
)


def _share_of(image: Image.Image, rgb: tuple[int, int, int], tolerance: int = 12) -> float:
    data = image.tobytes()
    pixels = [data[i : i + 3] for i in range(0, len(data), 3)]
    close = [p for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True))]
    return len(close) / len(pixels)


def test_same_spec_draws_the_same_bytes_and_same_seed_the_same_specs() -> None:
    first = sample_specs(random.Random(5), ALL_SHAPES, 20, sizes=SIZES, fills=FILLS)
    again = sample_specs(random.Random(5), ALL_SHAPES, 20, sizes=SIZES, fills=FILLS)
    other = sample_specs(random.Random(6), ALL_SHAPES, 20, sizes=SIZES, fills=FILLS)
    assert first == again
    assert first != other
    assert [render(s).tobytes() for s in first] == [render(s).tobytes() for s in again]


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_every_shape_renders_in_its_colour_on_its_background(shape: str) -> None:
    image = render(ShapeSpec(shape, "red", "white"), 64)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert 0.08 < _share_of(image, COLORS["red"]) < 0.6
    assert _share_of(image, COLORS["white"]) > 0.35


def test_shapes_are_told_apart_by_their_silhouettes() -> None:
    masks = {s: shape_mask(ShapeSpec(s, "red", "white"), 64).tobytes() for s in ALL_SHAPES}
    for a in ALL_SHAPES:
        for b in ALL_SHAPES:
            if a < b:
                inside_a = {i for i, v in enumerate(masks[a]) if v > 127}
                inside_b = {i for i, v in enumerate(masks[b]) if v > 127}
                overlap = len(inside_a & inside_b) / len(inside_a | inside_b)
                assert overlap < 0.85, (a, b, overlap)


def test_jittered_shapes_stay_inside_the_picture() -> None:
    specs = sample_specs(random.Random(0), ALL_SHAPES, 140, sizes=SIZES)
    for spec in specs:
        mask = shape_mask(spec, 64)
        edge = [mask.getpixel((i, j)) for i in range(64) for j in (0, 63)]
        edge += [mask.getpixel((j, i)) for i in range(64) for j in (0, 63)]
        assert max(edge) == 0, spec


def test_striped_fill_shows_the_background_inside_the_shape() -> None:
    solid = render(ShapeSpec("square", "blue", "yellow", extent=0.4))
    striped = render(ShapeSpec("square", "blue", "yellow", fill="striped", extent=0.4))
    assert _share_of(striped, COLORS["blue"]) < 0.7 * _share_of(solid, COLORS["blue"])
    assert _share_of(striped, COLORS["yellow"]) > _share_of(solid, COLORS["yellow"])


def test_captions_say_what_is_drawn() -> None:
    assert caption(ShapeSpec("circle", "red", "white")) == "a red circle on a white background"
    assert caption(ShapeSpec("star", "orange", "black")) == "an orange star on a black background"
    small = ShapeSpec("heart", "green", "orange", size="small", fill="striped", extent=0.2)
    assert caption(small) == "a small green striped heart on an orange background"
    assert (
        caption(ShapeSpec("heart", "red", "white"), noun="sks") == "a red sks on a white background"
    )


def test_sampled_specs_take_turns_and_respect_the_colour_choices() -> None:
    specs = sample_specs(
        random.Random(1), BASE_SHAPES, 40, colors=("red", "blue"), backgrounds=("white", "red")
    )
    assert [s.shape for s in specs[:4]] == list(BASE_SHAPES)
    assert {s.color for s in specs} == {"red", "blue"}
    assert all(s.background != s.color and s.background in {"white", "red"} for s in specs)


def test_held_out_shapes_are_not_base_shapes() -> None:
    assert not set(HELD_OUT_SHAPES) & set(BASE_SHAPES)
    assert {"heart", "cross", "crescent"} <= set(HELD_OUT_SHAPES)


def test_a_shape_on_its_own_colour_or_an_unknown_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot be seen"):
        ShapeSpec("circle", "red", "red")
    with pytest.raises(ConfigError, match=r"unknown shape 'hexagon'.*circle"):
        ShapeSpec("hexagon", "red", "white")
    with pytest.raises(ConfigError, match="no background colour left"):
        sample_specs(random.Random(0), BASE_SHAPES, 3, colors=("red",), backgrounds=("red",))


def test_name_lists_parse_and_check_each_name() -> None:
    assert parse_names("Circle, star", ALL_SHAPES, "shape") == ("circle", "star")
    assert parse_names("all", ALL_SHAPES, "shape") == ALL_SHAPES
    with pytest.raises(ConfigError, match="unknown shape 'blob'"):
        parse_names("circle,blob", ALL_SHAPES, "shape")
