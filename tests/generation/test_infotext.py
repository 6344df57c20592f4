"""Infotext written for an image reads back (A1111's parser) into the same request."""

from __future__ import annotations

from brushwork.generation import GenerationRequest, LoraChoice, ModelFacts, make_infotext
from brushwork.generation.infotext import sampler_settings
from brushwork.prompt import parse_infotext

FACTS = ModelFacts(
    model_name="tiny",
    model_hash="0123456789",
    vae_name="better.vae.safetensors",
    vae_hash="abcdef0123",
    lora_hashes=(("style", "aaaabbbbcccc"),),
    ti_hashes=(("shiny", "ddddeeeeffff"),),
)


def _infotext(request: GenerationRequest, seed: int = 11, subseed: int = 12) -> str:
    settings = sampler_settings(request, request.sampler_name)
    return make_infotext(request, FACTS, seed=seed, subseed=subseed, settings=settings)


def test_fields_come_in_a1111s_order() -> None:
    request = GenerationRequest(
        prompt="a cat <lora:style:0.5>",
        negative_prompt="blurry",
        sampler_name="DPM++ 2M",
        cfg_scale=6.5,
        clip_skip=2,
        enable_hr=True,
        hr_second_pass_steps=4,
        denoising_strength=0.6,
    )
    text = _infotext(request)
    prompt, negative, parameters = text.split("\n")
    assert (prompt, negative) == ("a cat <lora:style:0.5>", "Negative prompt: blurry")
    keys = [item.split(":")[0] for item in parameters.split(", ")]
    assert keys == [
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash",
        "Model", "VAE hash", "VAE", "Denoising strength", "Clip skip", "RNG",
        "Hires upscale", "Hires steps", "Hires upscaler", "Lora hashes", "TI hashes", "Version",
    ]  # fmt: skip
    assert "Schedule type: Karras" in parameters  # DPM++ 2M's automatic schedule
    assert 'Lora hashes: "style: aaaabbbbcccc"' in parameters
    assert parameters.endswith("Version: brushwork 0.1.0")


def test_parse_of_format_round_trips() -> None:
    request = GenerationRequest(
        prompt="a (cat:1.2), [dog|fox]",
        negative_prompt="ugly, text",
        width=640,
        height=448,
        steps=12,
        sampler_name="Euler a",
        eta=0.5,
        subseed_strength=0.25,
        seed_resize_from_w=512,
        seed_resize_from_h=384,
        rng="nv",
        eta_noise_seed_delta=31337,
        loras=(LoraChoice("style", 0.5),),
    )
    fields = parse_infotext(_infotext(request, seed=7, subseed=8))
    assert fields["Prompt"] == request.prompt
    assert fields["Negative prompt"] == request.negative_prompt
    assert (fields["Size-1"], fields["Size-2"]) == ("640", "448")
    assert (fields["Seed"], fields["Variation seed"], fields["Variation seed strength"]) == (
        "7",
        "8",
        "0.25",
    )
    assert (fields["Seed resize from-1"], fields["Seed resize from-2"]) == ("512", "384")
    assert (fields["Eta"], fields["ENSD"], fields["RNG"]) == ("0.5", "31337", "NV")
    assert fields["Model hash"] == "0123456789"
    assert fields["TI hashes"] == "shiny: ddddeeeeffff"
    assert "Clip skip" not in _infotext(request)  # written only above 1, as A1111


def test_request_from_infotext_gives_back_the_request() -> None:
    from brushwork.generation import request_from_infotext

    request = GenerationRequest(
        prompt="a cat\nsecond line",
        negative_prompt="blurry",
        width=320,
        height=256,
        steps=9,
        sampler_name="DPM++ SDE",
        scheduler="Exponential",
        cfg_scale=4.5,
        clip_skip=2,
        subseed_strength=0.3,
        enable_hr=True,
        hr_resize_x=640,
        hr_upscaler="Lanczos",
        denoising_strength=0.55,
        loras=(LoraChoice("style", 0.5, 0.25),),
    )
    back, recorded = request_from_infotext(_infotext(request, seed=21, subseed=22))
    assert (back.seed, back.subseed) == (21, 22)
    for name in (
        "prompt", "negative_prompt", "width", "height", "steps", "sampler_name", "scheduler",
        "cfg_scale", "clip_skip", "subseed_strength", "enable_hr", "hr_resize_x",
        "hr_upscaler", "denoising_strength", "loras", "rng",
    ):  # fmt: skip
        assert getattr(back, name) == getattr(request, name), name
    assert recorded.model_hash == "0123456789"
    assert recorded.lora_hashes == {"style": "aaaabbbbcccc"}


def test_overrides_win_over_the_infotext() -> None:
    from brushwork.generation import request_from_infotext

    text = _infotext(GenerationRequest(prompt="a cat", steps=9))
    back, _ = request_from_infotext(text, steps=3, seed=99)
    assert (back.steps, back.seed, back.prompt) == (3, 99, "a cat")


def test_a1111s_gpu_noise_is_read_as_the_nv_source() -> None:
    from brushwork.generation import request_from_infotext

    a1111 = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"
    request, recorded = request_from_infotext(a1111)
    assert request.rng == "nv"  # A1111's default RNG is the GPU's: NVIDIA's Philox noise
    assert (request.steps, request.sampler_name, request.seed) == (20, "Euler a", 1)
    assert recorded.model_hash is None
