"""Preview prompts in kohya's syntax; unknown flags reported, not silently dropped."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.prompt import read_image_infotext
from brushwork.training.samples import (
    PreviewRequest,
    parse_prompt_text,
    preserved_rng,
    read_prompt_file,
    run_previews,
)


def test_kohya_flags_set_every_field() -> None:
    text = (
        "# comment\n\n"
        "masterpiece, 1girl --n low quality, bad hands --w 577 --h 832 --d 2 --l 5.5 --s 40 --ss euler_a\n"
        "a dog\n"
    )
    prompts = parse_prompt_text(text, sampler="k_dpm_2")
    assert prompts.warnings == ()
    first, second = prompts.requests
    assert first == PreviewRequest(
        "masterpiece, 1girl", "low quality, bad hands", 576, 832, 2, 40, 5.5, "Euler a"
    )
    assert second == PreviewRequest("a dog", sampler_name="DPM2")  # kohya's defaults


def test_unknown_or_bad_flags_are_warned_with_their_line() -> None:
    prompts = parse_prompt_text("a cat --7 --s many --g 3 --foo bar\n", source="p.txt")
    assert prompts.requests == (PreviewRequest("a cat"),)
    assert prompts.warnings == (
        "p.txt line 1: option --7 is not known; ignored",
        "p.txt line 1: --s 'many' is not a valid value; ignored",
        "p.txt line 1: option --g is for other model types; ignored",
        "p.txt line 1: option --foo is not known; ignored",
    )


def test_steps_are_clamped_and_files_read(tmp_path: Path) -> None:
    assert parse_prompt_text("x --s 5000").requests[0].steps == 1000
    json_file = tmp_path / "p.json"
    json_file.write_text('[{"prompt": "a", "width": 256, "sample_steps": 4, "scale": 3, "odd": 1}]')
    prompts = read_prompt_file(json_file)
    assert prompts.requests == (PreviewRequest("a", width=256, steps=4, cfg_scale=3.0),)
    assert prompts.warnings == ("p.json item 0: 'odd' is not known; ignored",)
    empty = tmp_path / "e.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no prompt"):
        read_prompt_file(empty)


def test_sampling_leaves_every_rng_where_it_was() -> None:
    torch.manual_seed(1)
    random.seed(1)
    with preserved_rng():
        torch.rand(10)
        random.random()
    after = (torch.rand(1), random.random())
    torch.manual_seed(1)
    random.seed(1)
    assert after == (torch.rand(1), random.random())


def test_previews_are_saved_with_infotext_and_failures_only_warned(tmp_path: Path) -> None:
    def preview(request: PreviewRequest) -> list[Image.Image]:
        if request.prompt == "broken":
            raise RuntimeError("out of memory")
        return [Image.new("RGB", (8, 8))]

    requests = [PreviewRequest("broken"), PreviewRequest("a cat", "ugly", seed=3)]
    paths = run_previews(preview, requests, tmp_path, "my lora", "000010", {"Training step": 10})
    assert len(paths) == 1 and paths[0].name.startswith("my_lora_000010_01_")
    assert paths[0].name.endswith("_3.png")
    info = read_image_infotext(paths[0].read_bytes())
    assert info is not None
    assert info.startswith(
        "a cat\nNegative prompt: ugly\nSteps: 30, Sampler: DDIM, CFG scale: 7.5, Seed: 3"
    )
    assert "Training step: 10" in info
