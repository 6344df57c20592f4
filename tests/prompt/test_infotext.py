"""parse_infotext / format_infotext: A1111's infotext layout, read and written.

Expected values follow A1111 v1.10's ``parse_generation_parameters`` (default settings, no
styles) and ``create_infotext``; the last example is its own docstring example.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from brushwork.prompt import format_infotext, parse_infotext
from brushwork.prompt.infotext import _V1_6_0, _V1_7_0_225, _V1_8_0, _version_key

A1111_DEFAULTS = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Refiner switch by sampling steps": False,
}

REFERENCE_EXAMPLE = (
    "masterpiece, a castle\n"
    "on a hill\n"
    "Negative prompt: blurry,\n"
    "lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Clip skip: 2, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "EasyNegative: c74b4e810b03", '
    "Version: v1.10.1"
)


def test_reference_layout() -> None:
    fields = parse_infotext(REFERENCE_EXAMPLE)
    assert fields == {
        "Steps": "20",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "7",
        "Seed": "1234567890",
        "Size-1": "512",
        "Size-2": "768",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "VAE hash": "735e4c3a44",
        "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
        "Clip skip": "2",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "TI hashes": "EasyNegative: c74b4e810b03",
        "Version": "v1.10.1",
        "Prompt": "masterpiece, a castle\non a hill",
        "Negative prompt": "blurry,\nlowres",
        **{k: v for k, v in A1111_DEFAULTS.items() if k not in ("Clip skip", "Schedule type")},
    }
    assert list(fields)[:3] == ["Steps", "Sampler", "Schedule type"]


def test_a1111_docstring_example() -> None:
    text = (
        "girl with an artist's beret, determined, blue eyes, ((fashion photography))\n"
        "Negative prompt: ugly, fat, (((deformed))), [blurry], bad anatomy\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, "
        "Model hash: 45dee52b"
    )
    fields = parse_infotext(text)
    assert fields["Prompt"] == (
        "girl with an artist's beret, determined, blue eyes, ((fashion photography))"
    )
    assert fields["Negative prompt"] == "ugly, fat, (((deformed))), [blurry], bad anatomy"
    assert (fields["Sampler"], fields["Size-1"], fields["Model hash"]) == (
        "Euler a",
        "512",
        "45dee52b",
    )
    assert fields["Emphasis"] == "Original"  # weights in the prompt and no Emphasis field


def test_defaults_fill_only_missing_keys() -> None:
    fields = parse_infotext("a\nSteps: 1, Seed: 2, RNG: NV, Clip skip: 3")
    assert fields == {
        "Steps": "1",
        "Seed": "2",
        "RNG": "NV",
        "Clip skip": "3",
        "Prompt": "a",
        "Negative prompt": "",
        **{k: v for k, v in A1111_DEFAULTS.items() if k not in ("RNG", "Clip skip")},
    }


def test_last_line_needs_three_pairs_to_be_parameters() -> None:
    fields = parse_infotext("a cat\nSteps: 20, Seed: 1")
    assert fields["Prompt"] == "a cat\nSteps: 20, Seed: 1"
    assert "Steps" not in fields


def test_empty_and_whitespace_text() -> None:
    for text in ("", "   \n  ", "\n\n"):
        fields = parse_infotext(text)
        assert (fields["Prompt"], fields["Negative prompt"]) == ("", "")
        assert fields["Clip skip"] == "1"


def test_lines_are_stripped_and_negative_prompt_spans_lines() -> None:
    text = "  a  \r\n b \nNegative prompt:   c \n  d\nSteps: 1, Sampler: Euler, Seed: 3"
    fields = parse_infotext(text)
    assert (fields["Prompt"], fields["Negative prompt"]) == ("a\nb", "c\nd")


VALUES = [
    ('Lora hashes: "a: 1, b: 2"', "Lora hashes", "a: 1, b: 2"),
    ('Hires prompt: "line1\\nline2, (x:1.2)"', "Hires prompt", "line1\nline2, (x:1.2)"),
    ('Model: "caf\\u00e9"', "Model", "café"),
    ('Note: ""', "Note", ""),
    ('Note: "unclosed', "Note", '"unclosed'),
    ("Steps : 20", "Steps ", "20"),
    ("Denoising strength: 0.7", "Denoising strength", "0.7"),
]


@pytest.mark.parametrize(("pair", "key", "value"), VALUES)
def test_values(pair: str, key: str, value: str) -> None:
    fields = parse_infotext(f"p\nA1: 1, {pair}, B2: 2")
    assert fields[key] == value


def test_empty_value_is_dropped_like_a1111() -> None:
    fields = parse_infotext("p\nSteps: 20, Seed: , Sampler: Euler, CFG scale: 7")
    assert "Seed" not in fields
    assert fields["Sampler"] == "Euler"


def test_sizes_split_into_two_keys() -> None:
    fields = parse_infotext("p\nSize: 640x480, Seed resize from: 512x384, Hires resize: 1280x960")
    assert (fields["Size-1"], fields["Size-2"]) == ("640", "480")
    assert (fields["Seed resize from-1"], fields["Seed resize from-2"]) == ("512", "384")
    assert (fields["Hires resize-1"], fields["Hires resize-2"]) == ("1280", "960")
    assert "Size" not in fields


SAMPLERS = [
    ("DPM++ 2M Karras", None, "DPM++ 2M", "Karras"),
    ("DPM++ SDE karras", None, "DPM++ SDE", "Karras"),
    ("Euler SGMUniform", None, "Euler", "SGM Uniform"),
    ("DPM++ 2M SDE Exponential", "Automatic", "DPM++ 2M SDE", "Exponential"),
    ("Euler a", None, "Euler a", "Automatic"),
    ("DPM++ 2M", "Karras", "DPM++ 2M", "Karras"),
    ("DDIM", None, "DDIM", "Automatic"),
]


@pytest.mark.parametrize(("sampler", "schedule", "expected_sampler", "expected_schedule"), SAMPLERS)
def test_legacy_sampler_names_are_split(
    sampler: str, schedule: str | None, expected_sampler: str, expected_schedule: str
) -> None:
    extra = f", Schedule type: {schedule}" if schedule else ""
    fields = parse_infotext(f"p\nSteps: 20, Sampler: {sampler}{extra}, Seed: 1")
    assert (fields["Sampler"], fields["Schedule type"]) == (expected_sampler, expected_schedule)


def test_legacy_hires_sampler_is_split() -> None:
    fields = parse_infotext("p\nSteps: 20, Seed: 1, Hires sampler: DPM++ 2M Karras")
    assert (fields["Hires sampler"], fields["Hires schedule type"]) == ("DPM++ 2M", "Karras")


def test_old_hires_fix_first_pass_size() -> None:
    auto = parse_infotext("p\nSteps: 20, Size: 1024x768, First pass size: 0x0")
    assert (auto["Size-1"], auto["Size-2"]) == (640, 448)  # ceil(sqrt(512*512/WH) * W / 64) * 64
    assert (auto["Hires resize-1"], auto["Hires resize-2"]) == (1024, 768)
    given_size = parse_infotext("p\nSteps: 20, Size: 1024x1024, First pass size: 256x320")
    assert (given_size["Size-1"], given_size["Size-2"]) == (256, 320)
    broken = parse_infotext("p\nSteps: 20, Size: 0x0, First pass size: 0x0")  # A1111 fails
    assert (broken["Size-1"], broken["Hires resize-1"]) == ("0", 0)


def test_hypernet_field_becomes_a_prompt_tag() -> None:
    fields = parse_infotext("a cat\nSteps: 20, Hypernet: anime, Hypernet strength: 0.5")
    assert fields["Prompt"] == "a cat<hypernet:anime:0.5>"
    assert parse_infotext("a\nSteps: 20, Hypernet: x, Seed: 1")["Prompt"] == "a<hypernet:x:1.0>"


def test_emphasis_marker() -> None:
    assert "Emphasis" not in parse_infotext("plain\nSteps: 1, Seed: 2, Sampler: Euler")
    assert "Emphasis" not in parse_infotext("a BREAK b\nSteps: 1, Seed: 2, Sampler: Euler")
    assert (
        parse_infotext("x\nNegative prompt: [y]\nSteps: 1, Seed: 2, Sampler: Euler")["Emphasis"]
        == "Original"
    )
    assert parse_infotext("(x)\nSteps: 1, Seed: 2, Emphasis: No norm")["Emphasis"] == "No norm"


def test_fp8_weight_adds_cache_flag() -> None:
    fields = parse_infotext("p\nSteps: 1, Seed: 2, FP8 weight: Enable for SDXL")
    assert fields["Cache FP16 weight for LoRA"] is False
    assert "Cache FP16 weight for LoRA" not in parse_infotext("p\nSteps: 1, Seed: 2, CFG scale: 7")


BACK_COMPAT = [
    ("v1.5.1", "[a:b:3]", "Euler", {"Old prompt editing timelines", "Downcast alphas_cumprod"}),
    ("v1.5.1", "a", "DDIM", {"Pad conds v0", "Downcast alphas_cumprod"}),
    (
        "v1.6.0-RC-28-gabcdef",
        "[x]",
        "Euler",
        {"Old prompt editing timelines", "Downcast alphas_cumprod"},
    ),
    ("v1.7.0-224-gabcdef", "[x]", "Euler", {"Downcast alphas_cumprod"}),
    ("v1.7.0-225-gabcdef", "[x]", "Euler", set()),
    ("v1.10.1", "[x]", "DDIM", set()),
    ("f2.0.1v1.10.1-previous-669-gdfdcbab6", "[x]", "DDIM", set()),  # not a version: no flags
]


@pytest.mark.parametrize(("version", "prompt", "sampler", "flags"), BACK_COMPAT)
def test_version_back_compatibility(
    version: str, prompt: str, sampler: str, flags: set[str]
) -> None:
    fields = parse_infotext(f"{prompt}\nSteps: 20, Sampler: {sampler}, Version: {version}")
    found = {
        k
        for k in ("Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod")
        if fields.get(k) is True
    }
    assert found == flags


def test_refiner_before_1_8_switches_by_sampling_steps() -> None:
    old = parse_infotext("p\nSteps: 20, Refiner: sdxl_refiner, Version: v1.7.0")
    assert old["Refiner switch by sampling steps"] is True
    new = parse_infotext("p\nSteps: 20, Refiner: sdxl_refiner, Version: v1.8.0")
    assert new["Refiner switch by sampling steps"] is False


def test_version_keys_of_the_compared_versions() -> None:
    assert _version_key("1.6.0") == _V1_6_0
    assert _version_key("v1.7.0-225") == _V1_7_0_225
    assert _version_key("1.8.0") == _V1_8_0
    ordered = ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1", "2!0.1"]
    keys = [_version_key(v) for v in ordered]
    assert keys == sorted(keys)  # type: ignore[type-var]


def test_long_parameter_line_is_linear() -> None:
    line = "a" * 300_000 + ", " + "b " * 100_000
    fields = parse_infotext(f"p\n{line}")
    assert fields["Prompt"] == f"p\n{line}".strip()


# --- format_infotext -------------------------------------------------------------------------


def test_format_layout() -> None:
    text = format_infotext(
        "a castle",
        "blurry",
        {
            "Steps": 20,
            "Sampler": "DPM++ 2M",
            "CFG scale": 7.0,
            "Size": "512x768",
            "Face restoration": None,
            "Lora hashes": "add_detail: 7c6bad76eb54",
            "Tiling": "Tiling",
            "Hires prompt": "a\nb",
        },
    )
    assert text == (
        "a castle\nNegative prompt: blurry\n"
        'Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.0, Size: 512x768, Lora hashes: "add_detail: '
        '7c6bad76eb54", Tiling, Hires prompt: "a\\nb"'
    )


def test_format_omits_empty_negative_prompt() -> None:
    assert format_infotext("p", "", {"Steps": 1}) == "p\nSteps: 1"
    assert format_infotext("", "n", {}) == "Negative prompt: n"


def test_format_quotes_values_a1111_could_not_read_back_raw() -> None:
    text = format_infotext("p", "", {"A1": "", "B2": '"x"', "C3": " padded ", "D4": "é"})
    assert text == 'p\nA1: "", B2: "\\"x\\"", C3: " padded ", D4: é'
    fields = parse_infotext(text)
    assert (fields["A1"], fields["B2"], fields["C3"], fields["D4"]) == ("", '"x"', " padded ", "é")


@pytest.mark.parametrize("key", ["", "A", "Bad:key", " lead", "comma,key", "-dash"])
def test_format_rejects_keys_that_cannot_be_read_back(key: str) -> None:
    with pytest.raises(ValueError, match="cannot be read back"):
        format_infotext("p", "", {key: 1, "Steps": 2})


SPECIAL_KEYS = {"Prompt", "Negative prompt", "Hypernet", "Sampler", "Hires sampler"}
KEYS = st.from_regex(r"[A-Za-z][A-Za-z0-9 _/-]{1,12}", fullmatch=True).filter(
    lambda key: key not in SPECIAL_KEYS and not key.startswith("First pass size")
)
VALUES_ST = st.text(max_size=30).filter(lambda v: "\r" not in v)
LINES = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=30).map(
    str.strip
)


@settings(max_examples=200, deadline=None)
@given(
    prompt_lines=st.lists(LINES, min_size=1, max_size=3),
    negative_lines=st.lists(LINES, max_size=3),
    params=st.dictionaries(KEYS, VALUES_ST, min_size=3, max_size=8),
)
def test_format_then_parse_round_trips(
    prompt_lines: list[str], negative_lines: list[str], params: dict[str, str]
) -> None:
    prompt, negative = "\n".join(prompt_lines), "\n".join(negative_lines)
    assume(prompt == prompt.strip() and negative == negative.strip() and negative)
    assume(not any(line.startswith("Negative prompt:") for line in prompt_lines))
    assume(all(key != value for key, value in params.items()))
    assume(not any(re.match(r"^\d+x\d+$", value) for value in params.values()))  # Key-1, Key-2
    fields = parse_infotext(format_infotext(prompt, negative, params))
    assert (fields["Prompt"], fields["Negative prompt"]) == (prompt, negative)
    assert {key: fields[key] for key in params} == params


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from('abc:, "\\\nNegative prompt:Size512x()'), max_size=80)
    | st.text()
)
def test_any_text_parses_without_raising(text: str) -> None:
    fields = parse_infotext(text)
    assert isinstance(fields["Prompt"], str)
    assert isinstance(fields["Negative prompt"], str)
