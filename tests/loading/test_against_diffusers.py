"""The same file through diffusers' own single-file loader gives the same modules and outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from brushwork.formats.architecture import plain_config
from brushwork.loading import load_model
from brushwork.testing.factory import Components, diffusers_config_folder

from .conftest import FAMILIES, run_unet, unet_inputs


def own_storage(module: torch.nn.Module) -> torch.nn.Module:
    """diffusers keeps views into the file it read; give every parameter its own copy."""
    with torch.no_grad():
        for param in module.parameters():
            param.data = param.data.clone()
    return module


@pytest.fixture(scope="module")
def config_folders(
    tiny: dict[str, Components], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diffusers-configs")
    return {family: diffusers_config_folder(c, root / family) for family, c in tiny.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_unet_output_equals_diffusers_from_single_file(
    family: str,
    tiny: dict[str, Components],
    tiny_files: dict[str, Path],
    config_folders: dict[str, Path],
) -> None:
    theirs = UNet2DConditionModel.from_single_file(
        str(tiny_files[family]), config=str(config_folders[family]), subfolder="unet"
    ).eval()
    ours = load_model(tiny_files[family], device="cpu", precision="fp32").unet
    assert plain_config(ours.config) == plain_config(theirs.config)
    inputs = unet_inputs(tiny[family])
    want = run_unet(ours, inputs)
    # as loaded, diffusers' weights are views at arbitrary offsets of the file buffer: the
    # maths may differ in the last bit, never more
    assert torch.allclose(run_unet(theirs, inputs), want, rtol=0, atol=1e-6)
    assert torch.equal(run_unet(own_storage(theirs), inputs), want)


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_equals_diffusers_from_single_file(
    family: str, tiny_files: dict[str, Path], config_folders: dict[str, Path]
) -> None:
    theirs = AutoencoderKL.from_single_file(
        str(tiny_files[family]), config=str(config_folders[family]), subfolder="vae"
    ).eval()
    ours = load_model(tiny_files[family], device="cpu", precision="fp32").vae
    assert ours.config.scaling_factor == theirs.config.scaling_factor
    mine = ours.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(mine[name], tensor), name
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(ours(image).sample, own_storage(theirs)(image).sample)
