"""Baking LoRAs into a checkpoint: the baked model draws what the model + LoRA drew."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from brushwork.core.errors import IncompatibleModelError
from brushwork.formats.lora import LoraModule, LoraNetwork, write_lora
from brushwork.formats.safeio import read_header
from brushwork.loading import LoadedModel, load_model
from brushwork.modeltools.bake import BakeRequest, bake_loras
from brushwork.patching import apply_loras, load_lora_application
from brushwork.testing.factory import Components

from .conftest import model_input, random_lora

VAE = "first_stage_model."


def _outputs(model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's and the text encoder's answers to fixed inputs."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    context = torch.randn(1, 77, 64, generator=generator)
    tokens = torch.randint(0, 49407, (1, 77), generator=generator)
    with torch.no_grad():
        unet = model.unet(latents, 500, context).sample
        text = model.text_encoders["text_encoder"](tokens)[0]
    return unet, text


def _weights(model: LoadedModel) -> dict[str, torch.Tensor]:
    modules = {"unet": model.unet, **model.text_encoders}
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }


def test_a_baked_lora_gives_the_outputs_of_the_lora_applied_at_generation(
    tmp_path: Path, sd1_files: list[Path], sd1_components: Components
) -> None:
    style = tmp_path / "style.safetensors"
    write_lora(style, random_lora(sd1_components, convs=True), family="sd1")
    detail = tmp_path / "detail.safetensors"
    write_lora(detail, random_lora(sd1_components, rank=2, seed=5), family="sd1")
    out = tmp_path / "baked.safetensors"
    loras = ((model_input(style), 0.7), (model_input(detail), -0.4))
    result = bake_loras(BakeRequest(model_input(sd1_files[0]), loras, out))
    assert result.applied["style"]["unet"] > 0 and result.applied["style"]["text_encoder"] > 0
    assert result.unmatched == ()
    model = load_model(sd1_files[0], device="cpu", precision="fp32")
    applications = [
        load_lora_application(style, te_multiplier=0.7),
        load_lora_application(detail, te_multiplier=-0.4),
    ]
    with apply_loras(unet=model.unet, text_encoders=model.text_encoders, applications=applications):
        expected_weights = _weights(model)
        expected = _outputs(model)
    baked = load_model(out, device="cpu", precision="fp32")
    got = _outputs(baked)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=0, atol=1e-5)
    baked_weights = _weights(baked)
    assert all(torch.equal(baked_weights[k], v) for k, v in expected_weights.items())
    vae_in, vae_out = load_file(sd1_files[0]), load_file(out)
    assert all(torch.equal(vae_out[k], v) for k, v in vae_in.items() if k.startswith(VAE))


def _dotted_lora(
    components: Components, prefix: str, down_part: str, up_part: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A diffusers- or PEFT-named LoRA on the UNet's attention projections, and its ΔW."""
    generator = torch.Generator().manual_seed(3)
    tensors, deltas = {}, {}
    for name, layer in components.unet.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(("to_q", "to_k")):
            down = torch.randn(2, layer.in_features, generator=generator) * 0.1
            up = torch.randn(layer.out_features, 2, generator=generator) * 0.1
            tensors[f"{prefix}{name}.{down_part}"] = down
            tensors[f"{prefix}{name}.{up_part}"] = up
            deltas[f"model.diffusion_model.{name}"] = up @ down
    return tensors, deltas


@pytest.mark.parametrize(
    ("dialect", "prefix"), [("diffusers", "unet."), ("peft", "base_model.model.")]
)
def test_diffusers_and_peft_names_bake_the_same_delta(
    tmp_path: Path,
    sd1_files: list[Path],
    sd1_components: Components,
    dialect: str,
    prefix: str,
) -> None:
    tensors, deltas = _dotted_lora(sd1_components, prefix, "lora_A.weight", "lora_B.weight")
    lora = tmp_path / f"{dialect}.safetensors"
    save_file(tensors, lora)
    out = tmp_path / "baked.safetensors"
    result = bake_loras(BakeRequest(model_input(sd1_files[0]), ((model_input(lora), 0.5),), out))
    assert result.applied[dialect]["unet"] == len(deltas)
    base = load_model(sd1_files[0], device="cpu", precision="fp32")
    baked = load_model(out, device="cpu", precision="fp32")
    base_sd, baked_sd = base.unet.state_dict(), baked.unet.state_dict()
    changed = [k for k in base_sd if not torch.equal(base_sd[k], baked_sd[k])]
    assert len(changed) == len(deltas)
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    delta = deltas["model.diffusion_model." + q.removesuffix(".weight")]
    torch.testing.assert_close(baked_sd[q], base_sd[q] + 0.5 * delta, rtol=0, atol=1e-6)


def test_the_bake_records_its_recipe_and_can_cast(
    tmp_path: Path, sd1_files: list[Path], sd1_components: Components
) -> None:
    style = tmp_path / "style.safetensors"
    write_lora(style, random_lora(sd1_components), family="sd1")
    out = tmp_path / "baked.safetensors"
    bake_loras(
        BakeRequest(model_input(sd1_files[0]), ((model_input(style), 0.8),), out, precision="fp16")
    )
    header = read_header(out)
    assert {info.dtype for info in header.tensors.values()} == {"F16"}
    recipe = json.loads(header.metadata["sd_merge_recipe"])
    assert recipe["loras"][0]["name"] == "style.safetensors" and recipe["loras"][0]["weight"] == 0.8
    assert recipe["primary_model_hash"] in json.loads(header.metadata["sd_merge_models"])
    sidecar = json.loads((tmp_path / "baked.json").read_text())
    assert sidecar["description"] == "a with LoRA style:0.8 baked in"


def test_a_lora_of_another_family_is_refused_and_nothing_is_written(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    # cross-attention reading SDXL's 2048-wide context, on a layer the tiny SD1 UNet has
    target = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    module = LoraModule.lora(target, torch.ones(2, 2048), torch.ones(32, 2))
    xl = tmp_path / "xl.safetensors"
    write_lora(xl, LoraNetwork({target: module}), family="sd1")
    out = tmp_path / "baked.safetensors"
    with pytest.raises(IncompatibleModelError, match=r"2048 \(SDXL\)"):
        bake_loras(BakeRequest(model_input(sd1_files[0]), ((model_input(xl), 1.0),), out))
    assert not out.exists()


def test_a_baked_lora_draws_the_same_image_as_the_lora_at_generation(
    tmp_path: Path, sd1_files: list[Path], sd1_components: Components
) -> None:
    generation = pytest.importorskip("brushwork.generation")
    from brushwork.core.settings import Settings
    from brushwork.generation.imaging import image_to_tensor
    from brushwork.library.catalog import Library

    root = tmp_path / "library"
    (root / "Lora").mkdir(parents=True)
    write_lora(root / "Lora" / "style.safetensors", random_lora(sd1_components), family="sd1")
    out = tmp_path / "baked.safetensors"
    style = model_input(root / "Lora" / "style.safetensors")
    bake_loras(BakeRequest(model_input(sd1_files[0]), ((style, 0.6),), out))
    request = {"width": 32, "height": 32, "steps": 2, "sampler_name": "Euler", "seed": 4}
    with Library.open(Settings(data_dir=tmp_path / "data"), [root]) as library:
        model = load_model(sd1_files[0], device="cpu", precision="fp32")
        with_lora = generation.Generator(model, library=library).generate(
            generation.GenerationRequest(prompt="a red cube <lora:style:0.6>", **request)
        )
    baked = generation.Generator(load_model(out, device="cpu", precision="fp32")).generate(
        generation.GenerationRequest(prompt="a red cube", **request)
    )
    plain = generation.Generator(model).generate(
        generation.GenerationRequest(prompt="a red cube", **request)
    )
    drawn, baked_image = (image_to_tensor(r.images[0]) for r in (with_lora, baked))
    assert torch.equal(drawn, baked_image)
    assert not torch.equal(drawn, image_to_tensor(plain.images[0]))
