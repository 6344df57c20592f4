"""The shipped skeletons and tokenizer: the real architectures, offline."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from brushwork.core.arch import (
    FAMILIES,
    SKELETON_NAMES,
    skeleton_config,
    skeleton_dir,
    tokenizer_dir,
)
from brushwork.core.errors import BrushworkError
from brushwork.core.kinds import BaseFamily
from brushwork.testing.factory import tokenizer


def _millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


# Published parameter counts of the real models (UNet, VAE, first text encoder), in millions.
KNOWN_SIZES = {
    "sd1": (859.52, 83.65, 123.06),
    "sd2": (865.91, 83.65, 340.39),
    "sd2-v": (865.91, 83.65, 340.39),
    "sdxl": (2567.46, 83.65, 123.06),
}


@pytest.mark.parametrize("name", SKELETON_NAMES)
def test_skeleton_builds_the_published_architecture(name: str) -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(skeleton_config(name, "unet"))
        vae = AutoencoderKL.from_config(skeleton_config(name, "vae"))
        text = CLIPTextModel(CLIPTextConfig(**skeleton_config(name, "text_encoder")))
    assert (_millions(unet), _millions(vae), _millions(text)) == KNOWN_SIZES[name]


def test_sdxl_second_text_encoder_is_openclip_bigg() -> None:
    with torch.device("meta"):
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**skeleton_config("sdxl", "text_encoder_2"))
        )
    assert _millions(te2) == 694.66


def test_v_prediction_skeleton_differs_only_in_prediction_and_size() -> None:
    assert skeleton_config("sd2-v", "scheduler")["prediction_type"] == "v_prediction"
    assert skeleton_config("sd2", "scheduler")["prediction_type"] == "epsilon"
    assert skeleton_config("sd2-v", "unet")["sample_size"] == 96


def test_skeleton_folders_carry_no_weights() -> None:
    for name in SKELETON_NAMES:
        files = [p for p in skeleton_dir(name).rglob("*") if p.is_file()]
        assert files and all(p.suffix == ".json" for p in files)


def test_unknown_skeleton_names_the_known_ones() -> None:
    with pytest.raises(BrushworkError, match="known skeletons: sd1, sd2, sd2-v, sdxl"):
        skeleton_dir("sd3")


def test_family_facts_match_the_skeletons() -> None:
    for facts in FAMILIES.values():
        unet = skeleton_config(facts.skeleton, "unet")
        assert unet["cross_attention_dim"] == facts.context_dim
    assert FAMILIES[BaseFamily.SDXL].text_encoders == ("text_encoder", "text_encoder_2")


def test_tokenizer_files_are_the_clip_bpe() -> None:
    vocab = json.loads((tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = (tokenizer_dir() / "merges.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("A Photo  OF a CAT", [49406, 320, 1125, 539, 320, 2368, 49407]),
        ("", [49406, 49407]),
    ],
)
def test_tokenizer_gives_clip_ids(text: str, ids: list[int]) -> None:
    assert tokenizer()(text).input_ids == ids


def test_tokenizer_pads_and_truncates_to_77() -> None:
    tok = tokenizer()
    assert tok.model_max_length == 77
    long = tok(" ".join(["cat"] * 200), padding="max_length", truncation=True).input_ids
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407
    short = tok("cat", padding="max_length").input_ids
    assert len(short) == 77 and short[-1] == 49407  # SD pads with the end token
