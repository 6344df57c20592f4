"""X/Y/Z plot axes: types by name, values parsed as A1111's script parses them."""

from __future__ import annotations

import random

import pytest

from brushwork.core.errors import ConfigError
from brushwork.generation.xyz_axes import find_axis_type, format_label, parse_axis, parse_values


def _values(type_name: str, text: str) -> list[object]:
    axis_type = find_axis_type(type_name)
    assert axis_type is not None
    return list(parse_values(axis_type, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10,20, 30", [10, 20, 30]),
        ("1-5", [1, 2, 3, 4, 5]),
        ("1-10 (+3)", [1, 4, 7, 10]),
        ("1-10 (+2)", [1, 3, 5, 7, 9]),
        ("10-5 (-3)", [10, 7]),
        ("1-10 [5]", [1, 3, 5, 7, 10]),  # A1111: int() of linspace
        ("1-3, 8, 10-30 (+10)", [1, 2, 3, 8, 10, 20, 30]),
        ("5-1", [5, 4, 3, 2, 1]),
        ("4-4 [1]", [4]),
    ],
)
def test_whole_number_values_and_ranges(text: str, expected: list[int]) -> None:
    assert _values("steps", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7, 7.5", [7.0, 7.5]),
        ("1-3 (+0.5)", [1.0, 1.5, 2.0, 2.5, 3.0]),
        ("0-1 [5]", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        ("0-1 (+0.1)", [round(i / 10, 8) for i in range(11)]),
    ],
)
def test_decimal_values_and_ranges(text: str, expected: list[float]) -> None:
    values = _values("cfg", text)
    assert values == expected
    assert all(isinstance(value, float) for value in values)


def test_csv_quoting_keeps_commas_inside_a_value() -> None:
    assert _values("prompt-sr", 'red, "blue, shiny", green') == ["red", "blue, shiny", "green"]
    assert _values("prompt-sr", "red,") == ["red", ""]  # an empty replacement deletes the text
    assert _values("sampler", "Euler, DDIM,") == ["Euler", "DDIM"]


@pytest.mark.parametrize(
    ("type_name", "text", "message"),
    [
        ("steps", "10, 7.5", "Steps axis: '7.5' is not a whole number or a range"),
        ("steps", "ten", "'ten' is not a whole number"),
        ("cfg", "7, high", "CFG Scale axis: 'high' is not a number"),
        ("steps", "1-10 (+0)", "never reaches the end"),
        ("steps", "1-10 (-2)", "never reaches the end"),
        ("steps", "1-10 [0]", "gives no values"),
        ("steps", " , ", "no values"),
        ("steps", "1-999999", "too many"),
        ("cfg", "inf", "not a finite number"),
    ],
)
def test_bad_values_are_named(type_name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _values(type_name, text)


def test_axis_types_by_key_a1111_label_or_alias() -> None:
    assert find_axis_type("CFG Scale") == find_axis_type("cfg")
    assert find_axis_type("Prompt S/R") == find_axis_type("prompt-sr")
    assert find_axis_type("Checkpoint name") == find_axis_type("checkpoint")
    assert find_axis_type("Var. seed") == find_axis_type("var-seed")
    assert find_axis_type("clip_skip") == find_axis_type("clip-skip")
    assert find_axis_type("Nothing") is None


def test_an_unknown_axis_type_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown axis type 'cfgg'; valid types: seed, ") as info:
        find_axis_type("cfgg")
    for key in ("steps", "cfg", "prompt-sr", "checkpoint", "vae", "lora", "lora-strength"):
        assert key in info.value.message


def test_random_seeds_are_drawn_once_per_value() -> None:
    axis = parse_axis("seed", "-1, 5, -1", seed_rng=random.Random(3))
    assert axis is not None
    first, fixed, last = axis.values
    assert fixed == 5
    assert isinstance(first, int) and first >= 0 and first != last
    assert axis.fixed_values == f"{first}, 5, {last}"


def test_labels_are_a1111s() -> None:
    axis = parse_axis("cfg", "7, 7.5")
    assert axis is not None and axis.labels == ("CFG Scale: 7.0", "CFG Scale: 7.5")
    steps = parse_axis("steps", "1-2")
    assert steps is not None and steps.labels == ("Steps: 1", "Steps: 2")
    replace = parse_axis("Prompt S/R", "red, blue")
    assert replace is not None and replace.labels == ("red", "blue")
    checkpoint = find_axis_type("checkpoint")
    assert checkpoint is not None
    assert format_label(checkpoint, "sub/model.safetensors") == "model.safetensors"
    lora = find_axis_type("lora")
    assert lora is not None
    assert format_label(lora, "/runs/out/style-000002.safetensors") == "LoRA: style-000002"
    assert format_label(lora, "style:0.5") == "LoRA: style:0.5"
