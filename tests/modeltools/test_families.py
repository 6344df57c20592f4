"""SD2 (OpenCLIP text encoder) and SDXL (LDM LoRA names, two text encoders): a known
fine-tune extracted as a LoRA and baked back into its base gives the fine-tune again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brushwork.loading import load_model
from brushwork.modeltools.bake import BakeRequest, bake_loras
from brushwork.modeltools.extract import ExtractRequest, extract_lora
from brushwork.modeltools.lowrank import RankChoice
from brushwork.modeltools.targets import text_encoder_targets, unet_targets
from brushwork.testing.factory import (
    Components,
    build_components,
    components_architecture,
    write_checkpoint_file,
)

from .conftest import model_input


def _tuned_components(family: str) -> Components:
    components = build_components(family, seed=1)
    architecture = components_architecture(components)
    roots = {"unet": components.unet, **components.text_encoders}
    targets = unet_targets(architecture, with_convs=False)
    for encoder_targets in text_encoder_targets(architecture).values():
        targets += encoder_targets
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for target in targets:
            weight = roots[target.component].get_submodule(target.path).weight
            low = torch.randn(weight.shape[0], 2, generator=generator)
            high = torch.randn(2, weight[0].numel(), generator=generator)
            weight.add_((low @ high).reshape(weight.shape) * 0.02)
    return components


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_extract_then_bake_gives_the_fine_tune_back(tmp_path: Path, family: str) -> None:
    base = write_checkpoint_file(build_components(family, seed=1), tmp_path / "base.safetensors")
    tuned = write_checkpoint_file(_tuned_components(family), tmp_path / "tuned.safetensors")
    lora = tmp_path / "extracted.safetensors"
    result = extract_lora(
        ExtractRequest(model_input(tuned), model_input(base), lora, RankChoice(2), precision="fp32")
    )
    encoders = {"sd2": {"text_encoder"}, "sdxl": {"text_encoder", "text_encoder_2"}}[family]
    assert set(result.modules) == {"unet"} | encoders and result.skipped_text_encoders == {}
    baked = tmp_path / "baked.safetensors"
    bake = bake_loras(BakeRequest(model_input(base), ((model_input(lora), 1.0),), baked))
    assert bake.unmatched == ()
    want = load_model(tuned, device="cpu", precision="fp32")
    got = load_model(baked, device="cpu", precision="fp32")
    for name, module in {"unet": want.unet, **want.text_encoders}.items():
        other = got.unet if name == "unet" else got.text_encoders[name]
        theirs = other.state_dict()
        for key, value in module.state_dict().items():
            torch.testing.assert_close(theirs[key], value, rtol=0, atol=1e-5, msg=f"{name}.{key}")
