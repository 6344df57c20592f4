"""load_model: tiny checkpoints of every family load bit for bit, in any dtype, strictly."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from brushwork.core.errors import ConfigError, ModelFileError, NotAModelError, WrongKindError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.architecture import standard_architecture
from brushwork.formats.checkpoint import write_checkpoint
from brushwork.formats.safeio import write_safetensors
from brushwork.loading import load_model
from brushwork.loading.loader import settle_sd2_prediction
from brushwork.samplers.sigmas import sd_alphas_cumprod
from brushwork.testing.factory import (
    Components,
    build_components,
    components_architecture,
    components_checkpoint,
    write_checkpoint_file,
)

from .conftest import FAMILIES, run_unet, token_ids, unet_inputs


def source_modules(components: Components) -> dict[str, torch.nn.Module]:
    return {"unet": components.unet, "vae": components.vae, **components.text_encoders}


def assert_same_weights(
    module: torch.nn.Module, source: torch.nn.Module, dtype: torch.dtype
) -> None:
    got, want = module.state_dict(), source.state_dict()
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == dtype, name
        assert torch.equal(got[name], tensor.to(dtype)), name


def assert_clean(module: torch.nn.Module) -> None:
    """Own, contiguous, 64-byte-aligned storage for every parameter (no views into a buffer)."""
    for name, param in module.named_parameters():
        assert param.is_contiguous(), name
        assert param.storage_offset() == 0, name
        assert param.data_ptr() % 64 == 0, name
        assert not param.requires_grad, name


def text_outputs(encoder: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = encoder(ids, output_hidden_states=True)
    return torch.cat([out.hidden_states[-2], out.last_hidden_state], dim=-1)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_component_matches_its_source_bit_for_bit(
    family: str, tiny: dict[str, Components], tiny_files: dict[str, Path]
) -> None:
    source = tiny[family]
    model = load_model(tiny_files[family], device="cpu", precision="fp32")
    assert model.family is BaseFamily(family)
    assert (model.dtype, model.vae_dtype, model.vae_source) == (torch.float32,) * 2 + ("baked",)
    inputs = unet_inputs(source)
    assert torch.equal(run_unet(model.unet, inputs), run_unet(source.unet, inputs))
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.vae(image).sample, source.vae(image).sample)
    for name, encoder in source.text_encoders.items():
        want = text_outputs(encoder, token_ids())
        assert torch.equal(text_outputs(model.text_encoders[name], token_ids()), want)
    sources = source_modules(source)
    assert sorted(model.modules()) == sorted(sources)
    for name, module in model.modules().items():
        assert_same_weights(module, sources[name], torch.float32)
        assert_clean(module)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_half_precision_loads_cast_each_weight_once(
    family: str, dtype: torch.dtype, tiny: dict[str, Components], tiny_files: dict[str, Path]
) -> None:
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    model = load_model(tiny_files[family], device="cpu", precision=name)
    sdxl_fp16 = family == "sdxl" and dtype == torch.float16
    assert model.dtype == dtype
    assert model.vae_dtype == (torch.float32 if sdxl_fp16 else dtype)
    sources = source_modules(tiny[family])
    for part, module in model.modules().items():
        assert_same_weights(module, sources[part], model.vae_dtype if part == "vae" else dtype)
        assert_clean(module)
    if dtype == torch.bfloat16:  # fp16 kernels are patchy on CPUs; bf16 runs everywhere
        inputs = unet_inputs(tiny[family])
        reference = build_components(family, dtype=dtype)  # same seed -> same weights
        assert torch.equal(
            run_unet(model.unet, inputs, dtype), run_unet(reference.unet, inputs, dtype)
        )


def test_an_fp16_file_loads_in_fp32_as_the_cast_of_its_weights(
    tiny: dict[str, Components], tmp_path: Path
) -> None:
    path = write_checkpoint_file(tiny["sd2"], tmp_path / "half.safetensors", dtype=torch.float16)
    model = load_model(path, device="cpu", precision="fp32")
    want = tiny["sd2"].unet.state_dict()
    for name, tensor in model.unet.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, want[name].half().float()), name


def test_a_ckpt_pickle_loads_like_the_safetensors(
    tiny: dict[str, Components], tmp_path: Path
) -> None:
    path = write_checkpoint_file(tiny["sd1"], tmp_path / "model.ckpt")
    model = load_model(path, device="cpu", precision="fp32")
    inputs = unet_inputs(tiny["sd1"])
    assert torch.equal(run_unet(model.unet, inputs), run_unet(tiny["sd1"].unet, inputs))
    assert_same_weights(model.vae, tiny["sd1"].vae, torch.float32)


def test_a_yaml_sidecar_makes_sd2_a_v_prediction_model(
    tiny: dict[str, Components], tmp_path: Path
) -> None:
    path = write_checkpoint_file(
        tiny["sd2"], tmp_path / "v768.safetensors", prediction_type="v_prediction"
    )
    assert path.with_suffix(".yaml").is_file()  # shapes cannot say v-prediction: the yaml does
    assert load_model(path, device="cpu", precision="fp32").prediction_type == "v_prediction"


def test_prediction_type_can_be_given(tiny_files: dict[str, Path]) -> None:
    plain = load_model(tiny_files["sd2"], device="cpu", precision="fp32")
    assert plain.prediction_type == "epsilon"
    forced = load_model(
        tiny_files["sd2"], device="cpu", precision="fp32", prediction_type="v_prediction"
    )
    assert forced.prediction_type == "v_prediction"
    with pytest.raises(ConfigError, match="'x0'"):
        load_model(tiny_files["sd2"], device="cpu", prediction_type="x0")


def test_the_model_carries_the_sd_noise_schedule(tiny_files: dict[str, Path]) -> None:
    model = load_model(tiny_files["sdxl"], device="cpu", precision="fp32")
    assert torch.equal(model.alphas_cumprod, sd_alphas_cumprod())
    sigmas = model.sigmas()
    assert sigmas.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert sigmas.sigma_max == pytest.approx(14.6146, abs=1e-4)
    assert model.vae_scaling_factor == pytest.approx(0.13025)


def test_source_facts_are_recorded(tiny_files: dict[str, Path]) -> None:
    path = tiny_files["sd1"]
    model = load_model(path, device="cpu", precision="fp32")
    assert model.source.path == path.absolute()
    assert model.source.size == path.stat().st_size
    assert model.source.mtime_ns == path.stat().st_mtime_ns
    assert model.source.is_current()


@pytest.mark.parametrize(("family", "pads"), [("sd1", [49407]), ("sd2", [0]), ("sdxl", [49407, 0])])
def test_tokenizers_pad_as_the_text_encoders_were_trained(
    family: str, pads: list[int], tiny_files: dict[str, Path]
) -> None:
    model = load_model(tiny_files[family], device="cpu", precision="fp32")
    assert list(model.tokenizers) == list(model.text_encoders)
    for tokenizer, pad in zip(model.tokenizers.values(), pads, strict=True):
        ids = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
        assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert ids[7:] == [pad] * 70


def test_use_ema_runs_the_ema_copy(tiny: dict[str, Components], tmp_path: Path) -> None:
    ema_source = build_components("sd1", seed=7)
    checkpoint = replace(components_checkpoint(tiny["sd1"]), ema_unet=ema_source.unet.state_dict())
    path = tmp_path / "ema.safetensors"
    write_checkpoint(path, checkpoint)
    inputs = unet_inputs(tiny["sd1"])
    trained = load_model(path, device="cpu", precision="fp32")
    ema = load_model(path, device="cpu", precision="fp32", use_ema=True)
    assert torch.equal(run_unet(trained.unet, inputs), run_unet(tiny["sd1"].unet, inputs))
    assert torch.equal(run_unet(ema.unet, inputs), run_unet(ema_source.unet, inputs))
    no_ema = tiny["sd1"]
    with pytest.raises(ModelFileError, match="EMA"):
        load_model(write_checkpoint_file(no_ema, tmp_path / "plain.safetensors"), use_ema=True)


def test_a_missing_weight_is_named(tiny: dict[str, Components], tmp_path: Path) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    del checkpoint.text_encoders["text_encoder"]["final_layer_norm.bias"]
    path = tmp_path / "broken.safetensors"
    write_checkpoint(path, checkpoint)
    with pytest.raises(ModelFileError, match=r"final_layer_norm\.bias") as caught:
        load_model(path, device="cpu")
    assert "broken.safetensors" in str(caught.value)


def test_a_checkpoint_without_a_vae_needs_one_chosen(
    tiny: dict[str, Components], tmp_path: Path
) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    checkpoint.vae = {}
    path = tmp_path / "novae.safetensors"
    write_checkpoint(path, checkpoint, write_yaml=False)
    with pytest.raises(ModelFileError, match="no VAE weights"):
        load_model(path, device="cpu")


def test_a_lora_is_not_a_checkpoint(tmp_path: Path) -> None:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    path = tmp_path / "style.safetensors"
    write_safetensors(
        path,
        {
            f"{name}.lora_down.weight": torch.zeros(4, 768),
            f"{name}.lora_up.weight": torch.zeros(320, 4),
            f"{name}.alpha": torch.tensor(4.0),
        },
    )
    with pytest.raises(WrongKindError, match="is a lora, not a checkpoint") as caught:
        load_model(path, device="cpu")
    assert caught.value.path == path.absolute()
    assert "<lora:" in str(caught.value)


def test_a_load_is_logged(tiny_files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="brushwork.loading.loader"):
        load_model(tiny_files["sd1"], device="cpu", precision="fp32")
    assert "sd1.safetensors (sd1, epsilon) on cpu in float32" in caplog.text


def test_unused_entries_are_warned_about_unless_known_harmless(
    tiny: dict[str, Components], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    checkpoint.extra = {
        "alphas_cumprod": torch.rand(1000),
        "model_ema.decay": torch.tensor(0.9999),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
        "control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
    }
    path = tmp_path / "extras.safetensors"
    write_checkpoint(path, checkpoint)
    with caplog.at_level(logging.WARNING, logger="brushwork.loading.reading"):
        model = load_model(path, device="cpu", precision="fp32")
    assert "1 entries are not used" in caplog.text
    assert "control_model.input_hint_block.0.weight" in caplog.text
    assert_same_weights(model.unet, tiny["sd1"].unet, torch.float32)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotAModelError, match="no such file") as caught:
        load_model(tmp_path / "gone.safetensors", device="cpu")
    assert caught.value.path == (tmp_path / "gone.safetensors").absolute()


def constant_output_unet(family: str, value: float) -> Components:
    """Tiny components whose UNet outputs `value` everywhere (conv_out zeroed, bias = value)."""
    components = build_components(family)
    with torch.no_grad():
        components.unet.conv_out.weight.zero_()
        components.unet.conv_out.bias.fill_(value)
    return components


def write_without_yaml(components: Components, path: Path) -> Path:
    """A tiny file without its sidecar (the sidecar would only restore sample sizes)."""
    write_checkpoint(path, components_checkpoint(components), write_yaml=False)
    return path


def test_an_sd2_file_that_does_not_say_is_probed_as_a1111_does(tmp_path: Path) -> None:
    v_like = write_without_yaml(constant_output_unet("sd2", -1.5), tmp_path / "v.safetensors")
    eps_like = write_without_yaml(constant_output_unet("sd2", 0.5), tmp_path / "e.safetensors")
    # probe: mean(out - 0.5) is -2.0 (v-prediction) and 0.0 (epsilon)
    assert load_model(v_like, device="cpu", precision="fp32").prediction_type == "v_prediction"
    assert load_model(eps_like, device="cpu", precision="fp32").prediction_type == "epsilon"
    said = load_model(v_like, device="cpu", precision="fp32", prediction_type="epsilon")
    assert said.prediction_type == "epsilon"  # the caller's word is not second-guessed


def test_only_sd2_is_probed(tmp_path: Path) -> None:
    path = write_without_yaml(constant_output_unet("sd1", -1.5), tmp_path / "v.safetensors")
    assert load_model(path, device="cpu", precision="fp32").prediction_type == "epsilon"


def test_a_sidecar_is_not_second_guessed(tmp_path: Path) -> None:
    components = constant_output_unet("sd2", -1.5)
    path = tmp_path / "eps.safetensors"
    write_checkpoint(path, components_checkpoint(components), write_yaml=True)
    assert load_model(path, device="cpu", precision="fp32").prediction_type == "epsilon"


def test_a_standard_sd2_probed_as_v_becomes_the_768_v_architecture() -> None:
    components = constant_output_unet("sd2", -1.5)
    standard = replace(components_architecture(components), skeleton="sd2")
    settled = settle_sd2_prediction(standard, components.unet, Path("x.safetensors"))
    assert settled == standard_architecture("sd2-v")
