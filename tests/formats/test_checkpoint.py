"""A1111/LDM single-file checkpoints: round trips, extras, dtypes, EMA, diffusers cross-check."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from brushwork.core.errors import (
    ConfigError,
    ModelFileError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.formats.architecture import read_ldm_yaml, standard_architecture, write_ldm_yaml
from brushwork.formats.checkpoint import (
    Checkpoint,
    checkpoint_from_ldm,
    checkpoint_to_ldm,
    needs_yaml_sidecar,
    read_checkpoint,
    write_checkpoint,
)
from brushwork.formats.detect import detect_file
from brushwork.formats.safeio import read_pickle, write_pickle, write_safetensors
from brushwork.testing.factory import (
    Components,
    build_components,
    build_meta_components,
    components_checkpoint,
    diffusers_config_folder,
    write_checkpoint_file,
)

FAMILIES = ["sd1", "sd2", "sdxl"]
UNET = "model.diffusion_model."


@pytest.fixture(scope="module")
def tiny() -> dict[str, Components]:
    return {family: build_components(family) for family in FAMILIES}


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


def assert_same_checkpoint(got: Checkpoint, want: Checkpoint) -> None:
    assert got.architecture == want.architecture
    assert_same_tensors(got.unet, want.unet)
    assert_same_tensors(got.vae, want.vae)
    assert sorted(got.text_encoders) == sorted(want.text_encoders)
    for name, state_dict in want.text_encoders.items():
        assert_same_tensors(got.text_encoders[name], state_dict)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_is_bit_exact(family: str, suffix: str, tiny, tmp_path: Path) -> None:
    original = components_checkpoint(tiny[family])
    path = tmp_path / f"model{suffix}"
    sidecar = write_checkpoint(path, original)
    assert sidecar == tmp_path / "model.yaml"  # tiny sizes are not a standard skeleton
    back = read_checkpoint(path)
    assert_same_checkpoint(back, original)
    assert back.format is (
        FileFormat.SAFETENSORS if suffix == ".safetensors" else FileFormat.PICKLE
    )
    assert back.extra == {}
    assert back.ema_unet is None


def test_ckpt_is_written_in_a_state_dict_wrapper(tiny, tmp_path: Path) -> None:
    path = write_checkpoint_file(tiny["sd1"], tmp_path / "model.ckpt")
    raw = read_pickle(path)
    assert set(raw) == {"state_dict"}
    assert f"{UNET}input_blocks.0.0.weight" in raw["state_dict"]


def real_file_extras() -> dict[str, torch.Tensor]:
    return {
        "alphas_cumprod": torch.linspace(0.99, 0.01, 1000, dtype=torch.float32),
        "betas": torch.linspace(0.00085, 0.012, 1000, dtype=torch.float32),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(123, dtype=torch.int32),
        "logvar": torch.zeros(1000),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
    }


def test_wrapped_pickle_with_extra_keys_reads_and_writes_back_unchanged(
    tiny, tmp_path: Path
) -> None:
    ldm = checkpoint_to_ldm(components_checkpoint(tiny["sd1"])) | real_file_extras()
    source = tmp_path / "real.ckpt"
    write_ldm_yaml(components_checkpoint(tiny["sd1"]).architecture, tmp_path / "real.yaml")
    write_pickle(source, {"state_dict": ldm, "global_step": 470000, "epoch": 6})
    back = read_checkpoint(source)
    assert_same_tensors(back.extra, real_file_extras())
    copy = tmp_path / "copy.safetensors"
    write_checkpoint(copy, back)
    assert_same_tensors(checkpoint_to_ldm(read_checkpoint(copy)), ldm)


def test_sd2_unused_last_openclip_layer_is_kept_verbatim(tiny) -> None:
    checkpoint = components_checkpoint(tiny["sd2"])
    ldm = checkpoint_to_ldm(checkpoint)
    prefix = "cond_stage_model.model."
    leftovers = {
        prefix + "text_projection": torch.randn(64, 64),
        prefix + "logit_scale": torch.tensor(4.6),
    }
    leftovers |= {
        k.replace("resblocks.1.", "resblocks.2."): v.clone()
        for k, v in ldm.items()
        if k.startswith(prefix + "transformer.resblocks.1.")
    }
    back = checkpoint_from_ldm(ldm | leftovers, checkpoint.architecture)
    assert_same_checkpoint(back, checkpoint)  # a 2-layer text encoder still
    assert_same_tensors(back.extra, leftovers)
    assert_same_tensors(checkpoint_to_ldm(back), ldm | leftovers)


def test_old_sd1_files_without_text_model_prefix_are_read(tiny, tmp_path: Path) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    modern = "cond_stage_model.transformer.text_model."
    ldm = {
        k.replace(modern, "cond_stage_model.transformer."): v
        for k, v in checkpoint_to_ldm(checkpoint).items()
    }
    path = tmp_path / "old.safetensors"
    write_safetensors(path, ldm)
    write_ldm_yaml(checkpoint.architecture, tmp_path / "old.yaml")
    assert_same_checkpoint(read_checkpoint(path), checkpoint)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_keep_their_dtype(dtype: torch.dtype, tmp_path: Path) -> None:
    components = build_components("sd2", dtype=dtype)
    original = components_checkpoint(components)
    path = tmp_path / "half.safetensors"
    write_checkpoint(path, original)
    back = read_checkpoint(path)
    assert_same_checkpoint(back, original)
    assert back.unet["conv_in.weight"].dtype == dtype


def test_write_dtype_casts_weights_but_not_buffers(tiny, tmp_path: Path) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    checkpoint.extra = {"alphas_cumprod": torch.linspace(0.99, 0.01, 1000)}
    path = tmp_path / "fp16.safetensors"
    write_checkpoint(path, checkpoint, dtype=torch.float16)
    back = read_checkpoint(path)
    assert {t.dtype for t in back.unet.values()} == {torch.float16}
    assert {t.dtype for t in back.text_encoders["text_encoder"].values()} == {torch.float16}
    assert back.extra["alphas_cumprod"].dtype == torch.float32
    assert torch.equal(
        back.vae["encoder.conv_in.weight"], checkpoint.vae["encoder.conv_in.weight"].half()
    )


def test_ema_weights_round_trip_and_can_be_chosen(tiny, tmp_path: Path) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    checkpoint.ema_unet = {k: v + 1 for k, v in checkpoint.unet.items()}
    checkpoint.extra = {"model_ema.decay": torch.tensor(0.9999)}
    path = tmp_path / "ema.safetensors"
    write_checkpoint(path, checkpoint)
    ldm_keys = set(checkpoint_to_ldm(checkpoint))
    assert "model_ema.diffusion_modelinput_blocks00weight" in ldm_keys  # LDM's flat EMA names
    back = read_checkpoint(path)
    assert back.ema_unet is not None
    assert_same_tensors(back.ema_unet, checkpoint.ema_unet)
    ema_only = read_checkpoint(path, use_ema=True)
    assert_same_tensors(ema_only.unet, checkpoint.ema_unet)
    assert ema_only.ema_unet is None
    assert set(ema_only.extra) == {"model_ema.decay"}


def test_use_ema_on_a_file_without_ema_says_so(tiny, tmp_path: Path) -> None:
    path = write_checkpoint_file(tiny["sd1"], tmp_path / "plain.safetensors")
    with pytest.raises(ModelFileError, match="EMA"):
        read_checkpoint(path, use_ema=True)


def test_metadata_round_trips_in_safetensors(tiny, tmp_path: Path) -> None:
    checkpoint = components_checkpoint(tiny["sd1"])
    checkpoint.metadata = {"modelspec.title": "tiny", "ss_note": '{"a": 1}'}
    path = tmp_path / "meta.safetensors"
    write_checkpoint(path, checkpoint)
    assert read_checkpoint(path).metadata == checkpoint.metadata


def test_yaml_sidecar_wins_over_shapes(tiny, tmp_path: Path) -> None:
    path = write_checkpoint_file(tiny["sd2"], tmp_path / "model.safetensors")
    assert read_checkpoint(path).architecture.prediction_type == "epsilon"
    arch = read_ldm_yaml(tmp_path / "model.yaml")
    write_ldm_yaml(replace(arch, prediction_type="v_prediction"), tmp_path / "model.yaml")
    assert read_checkpoint(path).architecture.prediction_type == "v_prediction"


def test_without_sidecar_shapes_still_give_the_same_weights(tiny, tmp_path: Path) -> None:
    original = components_checkpoint(tiny["sdxl"])
    path = tmp_path / "noyaml.safetensors"
    assert write_checkpoint(path, original, write_yaml=False) is None
    back = read_checkpoint(path)
    assert back.architecture.unet["sample_size"] != original.architecture.unet["sample_size"]
    assert_same_tensors(back.unet, original.unet)
    assert_same_tensors(
        back.text_encoders["text_encoder_2"], original.text_encoders["text_encoder_2"]
    )


def test_existing_file_is_not_replaced_unless_asked(tiny, tmp_path: Path) -> None:
    path = write_checkpoint_file(tiny["sd1"], tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match="already exists"):
        write_checkpoint(path, components_checkpoint(tiny["sd1"]))
    write_checkpoint(path, components_checkpoint(tiny["sd1"]), overwrite=True)


def test_unknown_suffix_is_refused(tiny, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        write_checkpoint(tmp_path / "model.zip", components_checkpoint(tiny["sd1"]))


@pytest.mark.parametrize(
    ("tensors", "kind"),
    [
        (
            {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)},
            "LoRA",
        ),
        ({"encoder.down.0.block.0.conv1.weight": torch.zeros(4, 4, 3, 3)}, "VAE"),
        ({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}, "embedding"),
        (
            {
                "conv_in.weight": torch.zeros(4),
                "down_blocks.0.resnets.0.conv1.weight": torch.zeros(4),
            },
            "diffusers",
        ),
        ({"foo": torch.zeros(1)}, "not a Stable Diffusion model"),
    ],
)
def test_wrong_kind_of_file_is_named(tensors, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "thing.safetensors"
    write_safetensors(path, tensors)
    with pytest.raises(WrongKindError, match=kind) as caught:
        read_checkpoint(path)
    assert "thing.safetensors" in str(caught.value)
    assert "not a checkpoint" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# full-size key layout (meta device: shapes only, no memory)


def test_sdxl_refiner_is_identified_but_refused_by_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "sd_xl_refiner_1.0.safetensors"
    refiner = {  # the keys that tell a refiner: a UNet, a VAE and only the OpenCLIP-bigG tower
        f"{UNET}input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
        "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 8, 3, 3),
        "conditioner.embedders.0.model.ln_final.weight": torch.zeros(1280),
    }
    write_safetensors(path, refiner)

    detection = detect_file(path)
    assert (detection.kind, detection.base) == (ModelKind.CHECKPOINT, BaseFamily.SDXL)
    assert any("SDXL refiner (not supported for generation)" in r for r in detection.reasons)
    with pytest.raises(UnsupportedModelError, match=r"SDXL refiner \(not supported") as caught:
        read_checkpoint(path)
    assert caught.value.path == path


@pytest.fixture(scope="module")
def full() -> dict[str, Checkpoint]:
    return {family: components_checkpoint(build_meta_components(family)) for family in FAMILIES}


def test_sd15_export_has_the_real_key_counts_and_shapes(full) -> None:
    ldm = checkpoint_to_ldm(full["sd1"])
    assert sum(k.startswith(UNET) for k in ldm) == 686
    assert sum(k.startswith("first_stage_model.") for k in ldm) == 248
    # 196 = CLIP-L without `position_ids` (transformers 5 does not keep it; A1111 does not need it)
    assert sum(k.startswith("cond_stage_model.transformer.text_model.") for k in ldm) == 196
    assert len(ldm) == 1130
    assert ldm[f"{UNET}output_blocks.2.1.conv.weight"].shape == (1280, 1280, 3, 3)
    assert ldm[f"{UNET}output_blocks.5.2.conv.weight"].shape == (1280, 1280, 3, 3)
    assert ldm[f"{UNET}input_blocks.1.1.proj_in.weight"].shape == (320, 320, 1, 1)
    assert ldm[f"{UNET}input_blocks.3.0.op.weight"].shape == (320, 320, 3, 3)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert ldm["first_stage_model.decoder.up.3.block.0.conv1.weight"].shape == (512, 512, 3, 3)


def test_sd2_and_sdxl_text_towers_use_openclip_keys(full) -> None:
    sd2 = checkpoint_to_ldm(full["sd2"])
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (
        3072,
        1024,
    )
    assert sum(k.startswith("cond_stage_model.model.") for k in sd2) == 23 * 12 + 4
    xl = checkpoint_to_ldm(full["sdxl"])
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (1280, 1280)
    assert xl["conditioner.embedders.1.model.positional_embedding"].shape == (77, 1280)
    assert xl[f"{UNET}label_emb.0.0.weight"].shape == (1280, 2816)
    assert sum(k.startswith(UNET) for k in xl) == 1680
    assert sum(k.startswith("conditioner.embedders.0.transformer.text_model.") for k in xl) == 196


@pytest.mark.parametrize("family", FAMILIES)
def test_ldm_to_diffusers_to_ldm_is_the_identity(family: str, full) -> None:
    ldm = checkpoint_to_ldm(full[family])
    back = checkpoint_from_ldm(ldm, full[family].architecture)
    assert back.extra == {}
    again = checkpoint_to_ldm(back)
    assert {k: tuple(v.shape) for k, v in again.items()} == {
        k: tuple(v.shape) for k, v in ldm.items()
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_own_converters_read_our_export(family: str, full) -> None:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    checkpoint = full[family]
    ldm = checkpoint_to_ldm(checkpoint)
    arch = checkpoint.architecture

    def shapes(state_dict):
        return {k: tuple(v.shape) for k, v in state_dict.items()}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert shapes(convert_ldm_unet_checkpoint(ldm, arch.unet)) == shapes(checkpoint.unet)
        assert shapes(convert_ldm_vae_checkpoint(ldm, arch.vae)) == shapes(checkpoint.vae)
    clip = {k: v for k, v in ldm.items() if ".transformer.text_model." in k}
    converted = {
        k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(clip).items()
    }
    if family != "sd2":
        assert shapes(converted) == shapes(checkpoint.text_encoders["text_encoder"])
    else:
        encoder = build_meta_components("sd2").text_encoders["text_encoder"]
        opened = convert_open_clip_checkpoint(encoder, ldm, prefix="cond_stage_model.model.")
        opened = {k.removeprefix("text_model."): v for k, v in opened.items()}
        assert shapes(opened) == shapes(checkpoint.text_encoders["text_encoder"])


# ---------------------------------------------------------------------------------------------
# cross-check: diffusers' own single-file loader reads what we write


def _realigned(module: torch.nn.Module) -> torch.nn.Module:
    """diffusers leaves loaded weights as unaligned views of the file buffer, which changes BLAS
    rounding (by ~1e-6) though the values are identical; fresh copies make outputs comparable."""
    with torch.no_grad():
        for param in module.parameters():
            param.data = param.data.clone()
    return module


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_from_single_file_gives_identical_modules(
    family: str, tiny, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    components = tiny[family]
    path = write_checkpoint_file(components, tmp_path / "tiny.safetensors")
    config = diffusers_config_folder(components, tmp_path / "config")
    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = pipeline_class.from_single_file(str(path), config=str(config), local_files_only=True)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    context = torch.randn(1, 77, components.unet.config.cross_attention_dim, generator=gen)
    extra = {}
    if family == "sdxl":
        extra = {
            "added_cond_kwargs": {
                "text_embeds": torch.randn(1, 128, generator=gen),
                "time_ids": torch.randn(1, 6, generator=gen),
            }
        }
    image = torch.randn(1, 3, 32, 32, generator=gen)
    ids = torch.randint(0, 49408, (1, 77), generator=gen)
    with torch.no_grad():
        unet = _realigned(pipe.unet)
        assert torch.equal(
            unet(latents, 10, context, **extra).sample,
            components.unet(latents, 10, context, **extra).sample,
        )
        vae = _realigned(pipe.vae)
        assert torch.equal(vae(image).sample, components.vae(image).sample)
        for name, encoder in components.text_encoders.items():
            loaded = _realigned(getattr(pipe, name))
            want = encoder(ids, output_hidden_states=True)
            got = loaded(ids, output_hidden_states=True)
            assert torch.equal(got.hidden_states[-2], want.hidden_states[-2]), name
            assert torch.equal(got[0], want[0]), name


def test_standard_architecture_written_needs_no_sidecar(full) -> None:
    for family in FAMILIES:
        assert not needs_yaml_sidecar(checkpoint_to_ldm(full[family]), full[family].architecture)
    sd2v = full["sd2"]
    v_arch = standard_architecture("sd2-v")
    assert needs_yaml_sidecar(checkpoint_to_ldm(sd2v), v_arch)
