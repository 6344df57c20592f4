"""Standalone VAE files: A1111 layout both ways, diffusers layout read, diffusers cross-check."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from brushwork.core.errors import WrongKindError
from brushwork.core.kinds import FileFormat
from brushwork.formats.checkpoint import checkpoint_to_ldm
from brushwork.formats.safeio import read_model_file, write_pickle, write_safetensors
from brushwork.formats.vae import read_vae, vae_to_ldm_state_dict, write_vae
from brushwork.testing.factory import (
    Components,
    build_components,
    build_meta_components,
    components_checkpoint,
    diffusers_config_folder,
    write_checkpoint_file,
    write_vae_file,
)


@pytest.fixture(scope="module")
def tiny() -> Components:
    return build_components("sd1")


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a1111_layout_round_trip_is_bit_exact(suffix: str, tiny, tmp_path: Path) -> None:
    path = tmp_path / f"tiny.vae{suffix}"
    sidecar = write_vae(path, tiny.vae.state_dict(), tiny.vae.config)
    assert sidecar == tmp_path / "tiny.vae.yaml"  # tiny sizes: the config travels beside the file
    written = read_model_file(path).tensors
    assert "encoder.mid.attn_1.q.weight" in written  # A1111 layout, no prefix
    assert written["encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as LDM has it
    vae = read_vae(path)
    assert_same_tensors(vae.state_dict, tiny.vae.state_dict())
    assert {k: vae.config[k] for k in tiny.vae.config if not k.startswith("_")} == {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in tiny.vae.config.items()
        if not k.startswith("_")
    }
    assert vae.layout == "ldm"
    assert vae.format is (FileFormat.SAFETENSORS if suffix == ".safetensors" else FileFormat.PICKLE)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_kept_and_can_be_chosen(dtype: torch.dtype, tiny, tmp_path: Path) -> None:
    half = {k: v.to(dtype) for k, v in tiny.vae.state_dict().items()}
    write_vae(tmp_path / "kept.safetensors", half, tiny.vae.config)
    assert_same_tensors(read_vae(tmp_path / "kept.safetensors").state_dict, half)
    write_vae(tmp_path / "cast.safetensors", tiny.vae.state_dict(), tiny.vae.config, dtype=dtype)
    assert_same_tensors(read_vae(tmp_path / "cast.safetensors").state_dict, half)


def test_training_leftovers_and_wrapper_are_dropped_as_a1111_does(tiny, tmp_path: Path) -> None:
    ldm = vae_to_ldm_state_dict(tiny.vae.state_dict(), tiny.vae.config)
    leftovers = {
        "loss.logvar": torch.zeros(()),
        "loss.discriminator.main.0.weight": torch.zeros(8, 3, 4, 4),
        "model_ema.decay": torch.tensor(0.999),
        "model_ema.num_updates": torch.tensor(5),
    }
    path = tmp_path / "trained.ckpt"
    write_pickle(path, {"state_dict": ldm | leftovers, "global_step": 10})
    assert_same_tensors(read_vae(path).state_dict, tiny.vae.state_dict())


def test_prefixed_first_stage_model_keys_are_accepted(tiny, tmp_path: Path) -> None:
    ldm = vae_to_ldm_state_dict(tiny.vae.state_dict(), tiny.vae.config)
    path = tmp_path / "prefixed.safetensors"
    write_safetensors(path, {f"first_stage_model.{k}": v for k, v in ldm.items()})
    assert_same_tensors(read_vae(path).state_dict, tiny.vae.state_dict())


def test_diffusers_layout_file_is_read(tiny, tmp_path: Path) -> None:
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    write_safetensors(path, tiny.vae.state_dict())
    vae = read_vae(path)
    assert vae.layout == "diffusers"
    assert_same_tensors(vae.state_dict, tiny.vae.state_dict())


def test_old_diffusers_attention_names_are_read(tiny, tmp_path: Path) -> None:
    old_names = {
        "to_q.": "query.",
        "to_k.": "key.",
        "to_v.": "value.",
        "to_out.0.": "proj_attn.",
        "group_norm.": "group_norm.",
    }
    renamed = {}
    for key, tensor in tiny.vae.state_dict().items():
        for new, old in old_names.items():
            if ".attentions.0." + new in key:
                key = key.replace(new, old)
        renamed[key] = tensor
    assert "encoder.mid_block.attentions.0.query.weight" in renamed
    path = tmp_path / "old.safetensors"
    write_safetensors(path, renamed)
    assert_same_tensors(read_vae(path).state_dict, tiny.vae.state_dict())


def test_sdxl_scaling_factor_survives_in_the_sidecar(tiny, tmp_path: Path) -> None:
    config = dict(tiny.vae.config) | {"scaling_factor": 0.13025}
    write_vae(tmp_path / "xl.safetensors", tiny.vae.state_dict(), config)
    assert read_vae(tmp_path / "xl.safetensors").config["scaling_factor"] == 0.13025


def test_family_sets_the_scaling_factor_without_a_sidecar(tiny, tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    assert write_vae(path, tiny.vae.state_dict(), tiny.vae.config, write_yaml=False) is None
    assert read_vae(path).config["scaling_factor"] == 0.18215
    assert read_vae(path, family="sdxl").config["scaling_factor"] == 0.13025
    assert read_vae(path).config["block_out_channels"] == [32, 64]


def test_full_size_vae_keys_match_a_checkpoints_first_stage_model() -> None:
    meta = build_meta_components("sd1")
    ldm = vae_to_ldm_state_dict(meta.vae.state_dict(), dict(meta.vae.config))
    assert len(ldm) == 248
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    in_checkpoint = checkpoint_to_ldm(components_checkpoint(meta))
    assert {f"first_stage_model.{k}" for k in ldm} == {
        k for k in in_checkpoint if k.startswith("first_stage_model.")
    }


def test_a_whole_checkpoint_is_not_a_vae(tiny, tmp_path: Path) -> None:
    path = write_checkpoint_file(tiny, tmp_path / "model.safetensors")
    with pytest.raises(WrongKindError, match="whole checkpoint"):
        read_vae(path)


def test_a_lora_is_not_a_vae(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    write_safetensors(
        path, {"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}
    )
    with pytest.raises(WrongKindError, match=r"lora\.safetensors.*not a VAE"):
        read_vae(path)


def test_vae_we_write_loads_identically_in_diffusers(tiny, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    path = write_vae_file(tiny, tmp_path / "tiny.vae.safetensors")
    config = diffusers_config_folder(tiny, tmp_path / "config")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = AutoencoderKL.from_single_file(
            str(path), config=str(config), subfolder="vae", local_files_only=True
        )
    with torch.no_grad():
        for param in loaded.parameters():  # diffusers leaves unaligned views of the file buffer
            param.data = param.data.clone()
        image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        assert torch.equal(loaded(image).sample, tiny.vae(image).sample)
