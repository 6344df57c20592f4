"""VAE choice (auto / a file / baked), swapping in place and back, and the fp32 decode fallback."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from brushwork.core.errors import ConfigError, IncompatibleModelError, NotAModelError
from brushwork.formats.checkpoint import write_checkpoint
from brushwork.formats.vae import write_vae
from brushwork.loading import decode_latents, load_model, resolve_vae_choice, swap_vae
from brushwork.testing.factory import (
    Components,
    build_components,
    components_checkpoint,
    write_vae_file,
)

from .conftest import FAMILIES

IMAGE = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def reconstruct(vae: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return vae(IMAGE).sample


@pytest.fixture(scope="module")
def other_vae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Components, Path]:
    components = build_components("sd1", seed=5)
    path = write_vae_file(components, tmp_path_factory.mktemp("vae") / "other.safetensors")
    return components, path


@pytest.fixture
def checkpoint_copy(tiny_files: dict[str, Path], tmp_path: Path) -> Path:
    """The tiny SD1 checkpoint in a folder of its own (so VAE files can be put beside it)."""
    return Path(shutil.copy(tiny_files["sd1"], tmp_path / "model.safetensors"))


def test_auto_takes_the_vae_beside_the_checkpoint(
    checkpoint_copy: Path, other_vae: tuple[Components, Path], tiny: dict[str, Components]
) -> None:
    assert load_model(checkpoint_copy, device="cpu", precision="fp32").vae_source == "baked"
    beside = Path(shutil.copy(other_vae[1], checkpoint_copy.parent / "model.vae.safetensors"))
    model = load_model(checkpoint_copy, device="cpu", precision="fp32")
    assert model.vae_source == str(beside.absolute())
    assert torch.equal(reconstruct(model.vae), reconstruct(other_vae[0].vae))
    baked = load_model(checkpoint_copy, device="cpu", precision="fp32", vae="none")
    assert baked.vae_source == "baked"
    assert torch.equal(reconstruct(baked.vae), reconstruct(tiny["sd1"].vae))


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("model.vae.pt", True),
        ("model-anime.vae.ckpt", True),
        ("model.vae.yaml", False),  # not a VAE file
        ("other.vae.safetensors", False),  # another checkpoint's
        ("model.safetensors.bak", False),
    ],
)
def test_which_files_count_as_beside(name: str, found: bool, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    (tmp_path / name).write_bytes(b"")
    want = (tmp_path / name).absolute() if found else None
    assert resolve_vae_choice(checkpoint, "auto") == want


def test_auto_also_looks_in_vae_folders(tmp_path: Path) -> None:
    checkpoint = tmp_path / "models" / "dream.safetensors"
    folder = tmp_path / "VAE"
    checkpoint.parent.mkdir()
    folder.mkdir()
    checkpoint.write_bytes(b"")
    (folder / "dream_v2.pt").write_bytes(b"")
    (folder / "unrelated.pt").write_bytes(b"")
    assert resolve_vae_choice(checkpoint, "auto") is None
    assert resolve_vae_choice(checkpoint, "auto", [folder]) == (folder / "dream_v2.pt").absolute()


@pytest.mark.parametrize("spec", [None, "none", "None", "baked"])
def test_none_means_baked(spec: str | None, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    (tmp_path / "model.vae.pt").write_bytes(b"")
    assert resolve_vae_choice(checkpoint, spec) is None


def test_a_missing_vae_file_is_named(tiny_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(NotAModelError, match="no such VAE file"):
        load_model(tiny_files["sd1"], device="cpu", vae=tmp_path / "gone.safetensors")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_named_vae_is_used_and_the_baked_one_restored_bit_for_bit(
    family: str,
    tiny: dict[str, Components],
    tiny_files: dict[str, Path],
    other_vae: tuple[Components, Path],
) -> None:
    model = load_model(tiny_files[family], device="cpu", precision="fp32", vae=other_vae[1])
    assert model.vae_source == str(other_vae[1].absolute())
    assert torch.equal(reconstruct(model.vae), reconstruct(other_vae[0].vae))
    scale = model.vae_scaling_factor
    swap_vae(model, "none")
    assert model.vae_source == "baked" and model.baked_vae is None
    assert torch.equal(reconstruct(model.vae), reconstruct(tiny[family].vae))
    assert model.vae_scaling_factor == scale  # the checkpoint's, whatever VAE is in use


def test_swapping_back_and_forth_keeps_every_weight(
    tiny: dict[str, Components], tiny_files: dict[str, Path], other_vae: tuple[Components, Path]
) -> None:
    model = load_model(tiny_files["sd1"], device="cpu", precision="bf16")
    baked = {k: v.clone() for k, v in model.vae.state_dict().items()}
    swap_vae(model, other_vae[1])
    assert model.baked_vae is not None
    for name, tensor in model.vae.state_dict().items():
        assert tensor.dtype == torch.bfloat16
        assert torch.equal(tensor, other_vae[0].vae.state_dict()[name].bfloat16()), name
    swap_vae(model, other_vae[1])  # no-op: already in use
    swap_vae(model, None)
    for name, tensor in model.vae.state_dict().items():
        assert torch.equal(tensor, baked[name]), name


def test_a_vae_of_another_shape_is_refused(tiny_files: dict[str, Path], tmp_path: Path) -> None:
    config = {
        "block_out_channels": [32, 32, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "layers_per_block": 1,
        "norm_num_groups": 32,
    }
    vae = AutoencoderKL.from_config(config)
    path = tmp_path / "big.safetensors"
    write_vae(path, vae.state_dict(), dict(vae.config))
    model = load_model(tiny_files["sd1"], device="cpu", precision="fp32")
    before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    with pytest.raises(
        IncompatibleModelError, match=r"does not fit the VAE of sd1\.safetensors"
    ) as caught:
        swap_vae(model, path)
    assert "big.safetensors" in str(caught.value)
    assert model.vae_source == "baked"
    for name, tensor in model.vae.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    with pytest.raises(IncompatibleModelError):
        load_model(tiny_files["sd1"], device="cpu", vae=path)


def test_no_baked_vae_to_return_to(
    tiny: dict[str, Components], other_vae: tuple[Components, Path], tmp_path: Path
) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    checkpoint.vae = {}
    path = tmp_path / "novae.safetensors"
    write_checkpoint(path, checkpoint, write_yaml=False)
    model = load_model(path, device="cpu", precision="fp32", vae=other_vae[1])
    assert torch.equal(reconstruct(model.vae), reconstruct(other_vae[0].vae))
    with pytest.raises(ConfigError, match="no VAE of its own"):
        swap_vae(model, "none")


def test_decode_scales_latents_by_the_checkpoints_factor(
    tiny: dict[str, Components], tiny_files: dict[str, Path]
) -> None:
    model = load_model(tiny_files["sdxl"], device="cpu", precision="fp32")
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = tiny["sdxl"].vae.decode(latents / 0.13025).sample
    assert torch.equal(decode_latents(model, latents), want)


def test_decode_retries_in_fp32_when_half_precision_overflows(
    tiny_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model = load_model(tiny_files["sd1"], device="cpu", precision="fp16")
    assert model.vae_dtype == torch.float16
    latents = torch.full((1, 4, 8, 8), 3.0e4)  # / 0.18215 is past fp16's 65504
    with caplog.at_level(logging.WARNING, logger="brushwork.loading.vae"):
        images = decode_latents(model, latents)
    assert "switching it to fp32" in caplog.text
    assert model.vae_dtype == torch.float32
    assert next(model.vae.parameters()).dtype == torch.float32
    assert images.dtype == torch.float32 and not torch.isnan(images).any()
    fresh = load_model(tiny_files["sd1"], device="cpu", precision="fp16")
    assert torch.isnan(decode_latents(fresh, latents, retry_fp32=False)).any()  # the overflow
    assert fresh.vae_dtype == torch.float16


def test_beside_means_beside_the_listed_path_not_a_symlink_target(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "models").mkdir()
    target = tmp_path / "store" / "blob.safetensors"
    target.write_bytes(b"")
    listed = tmp_path / "models" / "dream.safetensors"
    listed.symlink_to(target)
    (tmp_path / "models" / "dream.vae.pt").write_bytes(b"")
    assert resolve_vae_choice(listed, "auto") == tmp_path / "models" / "dream.vae.pt"
