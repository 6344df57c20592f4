"""Architecture from shapes and from A1111 yaml sidecars, on tiny and full-size (meta) models."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from brushwork.core.errors import ArchitectureError, UnsupportedModelError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.architecture import (
    architecture_from_ldm_config,
    infer_architecture,
    ldm_config_document,
    read_ldm_yaml,
    standard_architecture,
    write_ldm_yaml,
)
from brushwork.formats.checkpoint import checkpoint_to_ldm, write_checkpoint
from brushwork.formats.safeio import read_header
from brushwork.testing.factory import (
    Components,
    build_components,
    build_meta_components,
    components_architecture,
    components_checkpoint,
)

FAMILIES = ["sd1", "sd2", "sdxl"]


@pytest.fixture(scope="module")
def tiny() -> dict[str, Components]:
    return {family: build_components(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def full_ldm_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """LDM-layout shapes of full-size SD1.5 / SD2 / SDXL, exported from meta-device modules."""
    out = {}
    for family in FAMILIES:
        ldm = checkpoint_to_ldm(components_checkpoint(build_meta_components(family)))
        out[family] = {k: tuple(v.shape) for k, v in ldm.items()}
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_shapes_pick_the_shipped_skeleton(family, full_ldm_shapes) -> None:
    arch = infer_architecture(full_ldm_shapes[family])
    assert arch.skeleton == family
    assert arch == standard_architecture(family)


def test_sd2_real_file_openclip_tower_of_24_layers_keeps_23(full_ldm_shapes) -> None:
    shapes = dict(full_ldm_shapes["sd2"])
    layer = "cond_stage_model.model.transformer.resblocks."
    shapes |= {
        k.replace(f"{layer}22.", f"{layer}23."): v for k, v in shapes.items() if f"{layer}22." in k
    }
    shapes["cond_stage_model.model.text_projection"] = (1024, 1024)
    arch = infer_architecture(shapes)
    assert arch.text_encoders["text_encoder"]["num_hidden_layers"] == 23
    assert arch.skeleton == "sd2"


def test_sd2_v_prediction_cannot_be_seen_in_shapes_but_can_be_given(full_ldm_shapes) -> None:
    assert infer_architecture(full_ldm_shapes["sd2"]).prediction_type == "epsilon"
    arch = infer_architecture(full_ldm_shapes["sd2"], prediction_type="v_prediction")
    assert arch.skeleton == "sd2-v"
    assert arch.unet["sample_size"] == 96


def test_sdxl_v_pred_marker_key_selects_v_prediction(full_ldm_shapes) -> None:
    arch = infer_architecture(full_ldm_shapes["sdxl"] | {"v_pred": ()})
    assert arch.prediction_type == "v_prediction"
    assert arch.skeleton is None  # no shipped SDXL v-prediction skeleton


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_shapes_follow_the_family_conventions(family: str, tiny, tmp_path: Path) -> None:
    components = tiny[family]
    expected = components_architecture(components)
    path = tmp_path / "tiny.safetensors"
    write_checkpoint(path, components_checkpoint(components), write_yaml=False)
    inferred = infer_architecture(read_header(path).tensors)  # header only: no tensor data read
    assert inferred.skeleton is None
    assert inferred.family is BaseFamily(family)
    # only what shapes cannot show and the family's convention does not fix is different
    assert {k for k, v in expected.unet.items() if inferred.unet[k] != v} == {"sample_size"}
    assert {k for k, v in expected.vae.items() if inferred.vae[k] != v} == {"sample_size"}
    assert inferred.text_encoders == expected.text_encoders


def test_plain_shape_tuples_are_enough(full_ldm_shapes) -> None:
    as_lists = {k: list(v) for k, v in full_ldm_shapes["sd1"].items()}
    assert infer_architecture(as_lists).skeleton == "sd1"


def test_unet_only_file_of_unknown_width_is_an_architecture_error() -> None:
    shapes = {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (64, 333)
    }
    with pytest.raises(ArchitectureError, match="cannot tell whether"):
        infer_architecture(shapes)


def test_sdxl_refiner_is_refused_clearly() -> None:
    shapes = {"conditioner.embedders.0.model.ln_final.weight": (1280,)}
    with pytest.raises(UnsupportedModelError, match="refiner"):
        infer_architecture(shapes)


def test_incomplete_unet_names_the_missing_weight(full_ldm_shapes) -> None:
    shapes = {k: v for k, v in full_ldm_shapes["sd1"].items() if not k.endswith("out.2.weight")}
    with pytest.raises(ArchitectureError, match=r"out\.2\.weight"):
        infer_architecture(shapes, family="sd1")


# ---------------------------------------------------------------------------------------------
# yaml sidecars


@pytest.mark.parametrize("skeleton", ["sd1", "sd2", "sd2-v", "sdxl"])
def test_standard_yaml_round_trip_needs_no_brushwork_overrides(
    skeleton: str, tmp_path: Path
) -> None:
    arch = standard_architecture(skeleton)
    doc = ldm_config_document(arch)
    assert set(doc["brushwork"]) == {"version", "family"}  # the LDM part says everything
    path = tmp_path / "model.yaml"
    write_ldm_yaml(arch, path)
    assert read_ldm_yaml(path) == arch


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_yaml_round_trip(family: str, tiny, tmp_path: Path) -> None:
    arch = components_architecture(tiny[family], prediction_type="v_prediction")
    path = tmp_path / "tiny.yaml"
    write_ldm_yaml(arch, path)
    assert read_ldm_yaml(path) == arch


@pytest.mark.parametrize("skeleton", ["sd1", "sd2-v", "sdxl"])
def test_our_ldm_yaml_matches_diffusers_reading_of_it(skeleton: str) -> None:
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    arch = standard_architecture(skeleton)
    doc = ldm_config_document(arch)
    size = 1024 if skeleton == "sdxl" else 768 if skeleton == "sd2-v" else 512
    with (
        warnings.catch_warnings()
    ):  # diffusers deprecates image_size=; without it, it looks up the hub
        warnings.simplefilter("ignore")
        unet = create_unet_diffusers_config_from_ldm(doc, {}, image_size=size)
        vae = create_vae_diffusers_config_from_ldm(doc, {}, image_size=size)
    for key, value in unet.items():
        assert arch.unet[key] == (list(value) if isinstance(value, tuple) else value), key
    for key, value in vae.items():
        assert arch.vae[key] == value, key


V2_INFERENCE_V_YAML = """\
model:
  base_learning_rate: 1.0e-4
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    image_size: 64
    channels: 4
    conditioning_key: crossattn
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        use_checkpoint: True
        image_size: 32 # unused
        in_channels: 4
        out_channels: 4
        model_channels: 320
        attention_resolutions: [ 4, 2, 1 ]
        num_res_blocks: 2
        channel_mult: [ 1, 2, 4, 4 ]
        num_head_channels: 64
        use_spatial_transformer: True
        use_linear_in_transformer: True
        transformer_depth: 1
        context_dim: 1024
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 128
          ch_mult: [1, 2, 4, 4]
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        freeze: True
        layer: "penultimate"
"""


def test_a1111_style_v_yaml_without_brushwork_section_is_sd2_v(tmp_path: Path) -> None:
    path = tmp_path / "v2-768-v.yaml"
    path.write_text(V2_INFERENCE_V_YAML, encoding="utf-8")
    arch = read_ldm_yaml(path)
    assert arch.prediction_type == "v_prediction"
    assert arch.skeleton == "sd2-v"


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ArchitectureError, match=r"broken\.yaml"):
        read_ldm_yaml(path)


def test_yaml_of_an_unknown_text_encoder_is_explained() -> None:
    doc = ldm_config_document(standard_architecture("sd1"))
    del doc["brushwork"]
    doc["model"]["params"]["cond_stage_config"]["target"] = (
        "ldm.modules.encoders.modules.BERTEmbedder"
    )
    with pytest.raises(ArchitectureError, match="BERTEmbedder"):
        architecture_from_ldm_config(doc)
