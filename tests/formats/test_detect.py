"""Kind and base family from key names and shapes: a table of real key layouts, and the reasons.

Diffusers-layout key sets come from the real architectures built on the meta device (full size,
no memory); LDM/kohya/OpenCLIP names that no installed library produces are handcrafted with
the shapes real files have.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from transformers import CLIPTextConfig, CLIPTextModel

from brushwork.core.arch import skeleton_config
from brushwork.core.errors import ArchitectureError, NotAModelError
from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.formats import detect, safeio
from brushwork.formats.detect import Detection, detect_file, detect_state_dict
from brushwork.formats.lora import lora_from_state_dict

Shapes = dict[str, tuple[int, ...]]
SD1, SD2, SDXL = BaseFamily.SD1, BaseFamily.SD2, BaseFamily.SDXL
CKPT, VAE, LORA = ModelKind.CHECKPOINT, ModelKind.VAE, ModelKind.LORA
EMB, HN = ModelKind.EMBEDDING, ModelKind.HYPERNETWORK


# ---------------------------------------------------------------------------------------------
# real key sets (meta device: shapes without memory)


def _shapes(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> Shapes:
    return {prefix + key: tuple(value.shape) for key, value in state_dict.items()}


@cache
def _meta_unet(skeleton: str) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(skeleton_config(skeleton, "unet"))


@cache
def diffusers_unet(skeleton: str) -> Shapes:
    return _shapes(_meta_unet(skeleton).state_dict())


@cache
def diffusers_vae() -> Shapes:
    with torch.device("meta"):
        return _shapes(AutoencoderKL.from_config(skeleton_config("sd1", "vae")).state_dict())


@cache
def clip_l(prefix: str) -> Shapes:
    """The SD1.5 CLIP-L text encoder's keys as A1111 files carry them (with `text_model.`)."""
    config = skeleton_config("sd1", "text_encoder")
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**config))
    return _shapes(model.state_dict(), prefix + "text_model.")


@cache
def peft_unet_lora(skeleton: str) -> Shapes:
    """diffusers' own LoRA state dict (PEFT names, no prefix) for a full-size UNet."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(skeleton_config(skeleton, "unet"))
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_v"]))
    return _shapes(get_peft_model_state_dict(unet))


@cache
def kohya_unet_lora(skeleton: str) -> Shapes:
    """diffusers' PEFT -> kohya converter on that LoRA (`lora_unet_*`, lora_down/up, alpha)."""
    with torch.device("meta"):
        peft_dict = {"unet." + k: torch.empty(s) for k, s in peft_unet_lora(skeleton).items()}
    return _shapes(convert_state_dict_to_kohya(peft_dict))


# handcrafted LDM pieces, with SD1.5 / SD2.1 / SDXL shapes
LDM_VAE: Shapes = {
    "encoder.conv_in.weight": (128, 3, 3, 3),
    "encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3),
    "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "encoder.conv_out.weight": (8, 512, 3, 3),
    "decoder.conv_in.weight": (512, 4, 3, 3),
    "decoder.up.3.block.0.conv1.weight": (128, 256, 3, 3),
    "decoder.conv_out.weight": (3, 128, 3, 3),
    "quant_conv.weight": (8, 8, 1, 1),
    "post_quant_conv.weight": (4, 4, 1, 1),
}


def ldm_unet(context: int, in_channels: int = 4, width: int = 320) -> Shapes:
    return {
        "model.diffusion_model.input_blocks.0.0.weight": (width, in_channels, 3, 3),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (width, width, 1, 1),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (
            width,
            context,
        ),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight": (
            width,
            context,
        ),
        "model.diffusion_model.out.2.weight": (4, width, 3, 3),
    }


def prefixed(shapes: Shapes, prefix: str) -> Shapes:
    return {prefix + key: shape for key, shape in shapes.items()}


def openclip(prefix: str, width: int) -> Shapes:
    return {
        f"{prefix}token_embedding.weight": (49408, width),
        f"{prefix}positional_embedding": (77, width),
        f"{prefix}transformer.resblocks.0.attn.in_proj_weight": (3 * width, width),
        f"{prefix}transformer.resblocks.0.mlp.c_fc.weight": (4 * width, width),
        f"{prefix}ln_final.weight": (width,),
        f"{prefix}text_projection": (width, width),
    }


def sd1_checkpoint() -> Shapes:
    return (
        ldm_unet(768)
        | prefixed(LDM_VAE, "first_stage_model.")
        | clip_l("cond_stage_model.transformer.")
        | {"model_ema.decay": (), "alphas_cumprod": (1000,)}
    )


def sd2_checkpoint() -> Shapes:
    return (
        ldm_unet(1024)
        | prefixed(LDM_VAE, "first_stage_model.")
        | openclip("cond_stage_model.model.", 1024)
    )


def sdxl_checkpoint() -> Shapes:
    return (
        ldm_unet(2048)
        | {"model.diffusion_model.label_emb.0.0.weight": (1280, 2816)}
        | prefixed(LDM_VAE, "first_stage_model.")
        | clip_l("conditioner.embedders.0.transformer.")
        | openclip("conditioner.embedders.1.model.", 1280)
    )


def tiny_sd1_checkpoint() -> Shapes:
    """Test-size widths (64): the family still follows from the key names."""
    return (
        ldm_unet(64, width=32)
        | {"first_stage_model.decoder.conv_out.weight": (3, 32, 3, 3)}
        | {"cond_stage_model.transformer.text_model.final_layer_norm.weight": (64,)}
    )


def kohya_module(name: str, down: tuple[int, ...], up: tuple[int, ...]) -> Shapes:
    return {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": ()}


def kohya_te(prefix: str, width: int, layers: int = 2) -> Shapes:
    out: Shapes = {}
    for layer in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            name = f"{prefix}text_model_encoder_layers_{layer}_self_attn_{proj}"
            out |= kohya_module(name, (8, width), (width, 8))
    return out


def kohya_sdxl_lora() -> Shapes:
    """kohya SDXL names: LDM blocks for the UNet, lora_te1_/lora_te2_ for the two encoders."""
    attn2 = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2"
    return (
        kohya_module(f"{attn2}_to_k", (8, 2048), (640, 8))
        | kohya_module(f"{attn2}_to_q", (8, 640), (640, 8))
        | kohya_te("lora_te1_", 768)
        | kohya_te("lora_te2_", 1280)
    )


def hypernetwork(*widths: int) -> Shapes:
    out: Shapes = {}
    for width in widths:
        for pair in (0, 1):
            out |= {
                f"{width}.{pair}.linear.0.weight": (2 * width, width),
                f"{width}.{pair}.linear.0.bias": (2 * width,),
                f"{width}.{pair}.linear.2.weight": (width, 2 * width),
                f"{width}.{pair}.linear.2.bias": (width,),
            }
    return out


# ---------------------------------------------------------------------------------------------
# the table: (case, shapes, metadata, extra keys) -> (kind, base, layout, a reason fragment)

Case = tuple[Shapes, dict[str, str], tuple[str, ...], ModelKind, BaseFamily | None, str, str]


def _cases() -> dict[str, Case]:
    sdxl_meta = {"ss_base_model_version": "sdxl_base_v1-0", "ss_v2": "False"}
    loha = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_a": (320, 4),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_b": (4, 768),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w2_a": (320, 4),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w2_b": (4, 768),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": (),
    }
    lokr = {  # kron([4, 8], [80, 96]) patches a [320, 768] layer
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v.lokr_w1": (4, 8),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v.lokr_w2": (80, 96),
    }
    attn_proc = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"
    tiny_lora = kohya_module(
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", (4, 64), (32, 4)
    )
    return {
        # checkpoints: A1111's config detection
        "ckpt-sd1": (sd1_checkpoint(), {}, (), CKPT, SD1, "ldm", "SD1: CLIP-L"),
        "ckpt-sd2": (sd2_checkpoint(), {}, (), CKPT, SD2, "ldm", "OpenCLIP-H"),
        "ckpt-sdxl": (sdxl_checkpoint(), {}, (), CKPT, SDXL, "sgm", "OpenCLIP-bigG"),
        "ckpt-sdxl-refiner": (
            ldm_unet(1280, width=384)
            | prefixed(LDM_VAE, "first_stage_model.")
            | openclip("conditioner.embedders.0.model.", 1280),
            {},
            (),
            CKPT,
            SDXL,
            "sgm",
            "SDXL refiner",
        ),
        "ckpt-sd2-turbo-sgm": (
            ldm_unet(1024)
            | prefixed(LDM_VAE, "first_stage_model.")
            | openclip("conditioner.embedders.0.model.", 1024),
            {},
            (),
            CKPT,
            SD2,
            "sgm",
            "SD2 in SGM layout",
        ),
        "ckpt-sd1-inpainting": (
            sd1_checkpoint() | ldm_unet(768, in_channels=9),
            {},
            (),
            CKPT,
            SD1,
            "ldm",
            "inpainting UNet",
        ),
        "ckpt-tiny-sd1": (tiny_sd1_checkpoint(), {}, (), CKPT, SD1, "ldm", "SD1: CLIP-L"),
        "ckpt-no-text-encoder": (
            ldm_unet(768) | prefixed(LDM_VAE, "first_stage_model."),
            {},
            (),
            CKPT,
            SD1,
            "ldm",
            "UNet context width 768 => sd1",
        ),
        "ckpt-no-text-encoder-tiny": (
            ldm_unet(64) | prefixed(LDM_VAE, "first_stage_model."),
            {},
            (),
            CKPT,
            None,
            "ldm",
            "width 64 is no real family's",
        ),
        "ckpt-sd3": (
            {"model.diffusion_model.x_embedder.proj.weight": (1536, 16, 2, 2)}
            | prefixed(LDM_VAE, "first_stage_model."),
            {},
            (),
            CKPT,
            None,
            "ldm",
            "SD3",
        ),
        "ckpt-altdiffusion": (
            ldm_unet(768) | {"cond_stage_model.roberta.embeddings.word_embeddings.weight": (1, 2)},
            {},
            (),
            CKPT,
            None,
            "ldm",
            "AltDiffusion",
        ),
        # VAEs: never a family
        "vae-a1111": (LDM_VAE, {}, (), VAE, None, "ldm", "fits SD1 and SD2 alike"),
        "vae-a1111-with-loss-keys": (
            LDM_VAE | {"loss.logvar": (), "model_ema.decay": ()},
            {},
            (),
            VAE,
            None,
            "ldm",
            "encoder.*/decoder.*",
        ),
        "vae-diffusers": (diffusers_vae(), {}, (), VAE, None, "diffusers", "A1111 cannot load"),
        "vae-with-checkpoint-prefix": (
            prefixed(LDM_VAE, "first_stage_model."),
            {},
            (),
            VAE,
            None,
            "ldm-prefixed",
            "without the first_stage_model. prefix",
        ),
        # LoRA
        "lora-kohya-sd1": (
            kohya_unet_lora("sd1"),
            {},
            (),
            LORA,
            SD1,
            "kohya",
            "context) width 768",
        ),
        "lora-kohya-sd2": (kohya_unet_lora("sd2"), {}, (), LORA, SD2, "kohya", "width 1024"),
        "lora-kohya-sdxl": (kohya_sdxl_lora(), {}, (), LORA, SDXL, "kohya", "lora_te2_"),
        "lora-kohya-sdxl-metadata": (
            kohya_sdxl_lora(),
            sdxl_meta,
            (),
            LORA,
            SDXL,
            "kohya",
            "ss_base_model_version='sdxl_base_v1-0'",
        ),
        "lora-te-only-sd1": (kohya_te("lora_te_", 768), {}, (), LORA, SD1, "kohya", "768"),
        "lora-te-only-sd2": (kohya_te("lora_te_", 1024), {}, (), LORA, SD2, "kohya", "1024"),
        "lora-te1-only-unknown": (
            kohya_te("lora_te1_", 768),
            {},
            (),
            LORA,
            None,
            "kohya",
            "family unknown",
        ),
        "lora-tiny-by-metadata-sd2": (
            tiny_lora,
            {"ss_v2": "True", "ss_base_model_version": "sd_v2"},
            (),
            LORA,
            SD2,
            "kohya",
            "ss_v2='True'",
        ),
        "lora-tiny-unknown": (tiny_lora, {}, (), LORA, None, "kohya", "no real family's"),
        "lora-metadata-conflicts-with-width": (
            kohya_unet_lora("sd1"),
            sdxl_meta,
            (),
            LORA,
            None,
            "kohya",
            "evidence conflicts",
        ),
        "lora-diffusers-sd1": (
            prefixed(peft_unet_lora("sd1"), "unet."),
            {},
            (),
            LORA,
            SD1,
            "diffusers",
            "A1111 loads only kohya-named",
        ),
        "lora-diffusers-attn-processor": (
            {
                f"{attn_proc}.to_k_lora.down.weight": (4, 768),
                f"{attn_proc}.to_k_lora.up.weight": (320, 4),
            },
            {},
            (),
            LORA,
            SD1,
            "diffusers",
            "width 768",
        ),
        "lora-peft-sdxl": (
            prefixed(peft_unet_lora("sdxl"), "base_model.model."),
            {},
            (),
            LORA,
            SDXL,
            "peft",
            "width 2048",
        ),
        "lora-loha": (loha, {}, (), LORA, SD1, "kohya", "width 768"),
        "lora-lokr": (lokr, {}, (), LORA, SD1, "kohya", "width 768"),
        "lora-with-bundled-embedding": (
            kohya_unet_lora("sd1") | {"bundle_emb.mychar.string_to_param.*": (2, 768)},
            {},
            (),
            LORA,
            SD1,
            "kohya",
            "LoRA modules",
        ),
        # embeddings
        "emb-a1111-sd1": (
            {"string_to_param.*": (3, 768)},
            {},
            ("string_to_token", "name", "step"),
            EMB,
            SD1,
            "a1111",
            "3 vector(s)",
        ),
        "emb-a1111-sd2": ({"string_to_param.*": (1, 1024)}, {}, (), EMB, SD2, "a1111", "1024"),
        "emb-sdxl": (
            {"clip_l": (2, 768), "clip_g": (2, 1280)},
            {},
            (),
            EMB,
            SDXL,
            "sdxl",
            "clip_g",
        ),
        "emb-emb-params": ({"emb_params": (4, 768)}, {}, (), EMB, SD1, "emb_params", "4 vector"),
        "emb-diffusers-concept": ({"<cat-toy>": (768,)}, {}, (), EMB, SD1, "diffusers", "1 vector"),
        "emb-tiny": ({"string_to_param.*": (2, 64)}, {}, (), EMB, None, "a1111", "64 is no real"),
        "emb-clip-g-alone": ({"emb_params": (1, 1280)}, {}, (), EMB, None, "emb_params", "1280"),
        # hypernetworks
        "hn-sd1": (
            hypernetwork(768, 320, 640, 1280),
            {},
            ("layer_structure", "activation_func"),
            HN,
            SD1,
            "a1111",
            "context width 768",
        ),
        "hn-sd2": (hypernetwork(1024, 320), {}, (), HN, SD2, "a1111", "1024"),
        "hn-sdxl": (hypernetwork(2048, 640), {}, (), HN, SDXL, "a1111", "2048"),
        "hn-self-attention-only": (hypernetwork(320, 640), {}, (), HN, None, "a1111", "no context"),
        "hn-two-contexts": (hypernetwork(768, 1024), {}, (), HN, None, "a1111", "conflicts"),
        "hn-tiny": (hypernetwork(64), {}, (), HN, None, "a1111", "family unknown"),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_kind_family_and_layout(case: str) -> None:
    shapes, metadata, extra, kind, base, layout, reason = CASES[case]

    detection = detect_state_dict(shapes, metadata=metadata, extra_keys=extra)

    assert (detection.kind, detection.base, detection.layout) == (kind, base, layout)
    assert any(reason in line for line in detection.reasons), detection.reasons


# ---------------------------------------------------------------------------------------------
# "not a match, because ..."


@pytest.mark.parametrize(
    ("shapes", "reason"),
    [
        pytest.param(
            diffusers_unet("sd1"), "diffusers-layout UNet weights", id="diffusers-unet-only"
        ),
        pytest.param(ldm_unet(768), "only UNet weights", id="ldm-unet-only"),
        pytest.param(
            {"encoder.layers.0.weight": (64, 3, 3, 3), "decoder.layers.0.weight": (3, 64, 3, 3)},
            "not an AutoencoderKL",
            id="taesd-like-vae",
        ),
        pytest.param(
            {"string_to_param.a": (1, 768), "string_to_param.b": (1, 768)},
            "string_to_param holds 2 terms",
            id="two-term-embedding",
        ),
        pytest.param(
            kohya_unet_lora("sd1") | {"conv_in.weight": (320, 4, 3, 3)},
            "1 keys are not LoRA keys (e.g. conv_in.weight)",
            id="lora-with-stray-key",
        ),
        pytest.param(
            {"lora_unet_x.alpha": ()}, "no LoRA weights (only alphas", id="lora-alphas-only"
        ),
        pytest.param({"w": (2, 3, 4)}, "embedding vectors are 1-D or 2-D", id="3d-single-tensor"),
    ],
)
def test_unrecognised_state_dict_says_why_not(shapes: Shapes, reason: str) -> None:
    with pytest.raises(NotAModelError) as caught:
        detect_state_dict(shapes)
    assert reason in caught.value.reason
    for kind in ("a checkpoint", "a vae", "a lora", "an embedding", "a hypernetwork"):
        assert f"not {kind}:" in caught.value.reason


def test_empty_state_dict_is_not_a_model() -> None:
    with pytest.raises(NotAModelError, match="holds no tensors"):
        detect_state_dict({})


def test_two_matching_kinds_are_refused_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(detect.MATCHERS, ModelKind.VAE, detect.match_embedding)
    with pytest.raises(ArchitectureError, match=r"several model kinds \(vae, embedding\)"):
        detect_state_dict({"emb_params": (1, 768)})


# ---------------------------------------------------------------------------------------------
# files


def _sparse_safetensors(path: Path, shapes: Shapes) -> None:
    """A safetensors file (F16) whose tensor data is a hole: a header and nothing else written."""
    entries, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        entries[name] = {
            "dtype": "F16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header = json.dumps(entries).encode()
    with path.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
    os.truncate(path, 8 + len(header) + offset)


def test_safetensors_file_is_identified_from_its_header_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1-5-pruned.safetensors"
    _sparse_safetensors(path, sd1_checkpoint())
    assert path.stat().st_size > 200_000_000

    def no_tensor_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("detect_file read tensor data")

    monkeypatch.setattr(safeio, "st_load_bytes", no_tensor_reads)
    monkeypatch.setattr(Path, "read_bytes", no_tensor_reads)

    detection = detect_file(path)

    assert (detection.kind, detection.base, detection.format) == (CKPT, SD1, FileFormat.SAFETENSORS)


def test_kohya_lora_file(tmp_path: Path) -> None:
    path = tmp_path / "style.safetensors"
    tensors = {k: torch.zeros(s) for k, s in kohya_te("lora_te_", 768, layers=1).items()}
    safeio.write_safetensors(path, tensors, {"ss_base_model_version": "sd_v1"})

    detection = detect_file(path)

    assert detection == Detection(
        LORA, SD1, FileFormat.SAFETENSORS, detection.reasons, layout="kohya"
    )
    assert "metadata ss_base_model_version='sd_v1' => sd1" in detection.reasons


def test_a1111_embedding_pickle_with_parameter_dict(tmp_path: Path) -> None:
    path = tmp_path / "badhands.pt"
    vectors = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.zeros(2, 768))})
    safeio.write_pickle(path, {"string_to_param": vectors, "string_to_token": {"*": 265}})

    detection = detect_file(path)

    assert (detection.kind, detection.base, detection.format) == (EMB, SD1, FileFormat.PICKLE)


def test_hypernetwork_pickle(tmp_path: Path) -> None:
    path = tmp_path / "anime.pt"
    mlp = {"linear.0.weight": torch.zeros(2048, 1024), "linear.0.bias": torch.zeros(2048)}
    safeio.write_pickle(
        path,
        {
            1024: (mlp, mlp),
            320: (mlp, mlp),
            "layer_structure": [1, 2, 1],
            "activation_func": "relu",
        },
    )

    detection = detect_file(path)

    assert (detection.kind, detection.base) == (HN, SD2)
    assert "with layer_structure, activation_func" in detection.reasons


def test_checkpoint_pickle_is_unwrapped_from_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    tensors = {k: torch.zeros(s) for k, s in tiny_sd1_checkpoint().items()}
    safeio.write_pickle(path, {"state_dict": tensors, "global_step": 10})

    detection = detect_file(path)

    assert (detection.kind, detection.base, detection.format) == (CKPT, SD1, FileFormat.PICKLE)


def test_unreadable_file_raises_the_safe_reader_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    with pytest.raises(NotAModelError, match="Git-LFS pointer"):
        detect_file(path)


def test_pickle_of_a_bare_tensor_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "vectors.pt"
    safeio.write_pickle(path, torch.zeros(2, 768))
    with pytest.raises(NotAModelError, match="holds a Tensor, not a dictionary of tensors"):
        detect_file(path)


# ---------------------------------------------------------------------------------------------
# detection and the LoRA reader agree

_ATTN2_K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
_TE_Q = "encoder.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(
    ("down", "up", "base"),
    [
        (f"unet.{_ATTN2_K}.lora_A.default.weight", f"unet.{_ATTN2_K}.lora_B.default.weight", SD1),
        (f"unet.{_ATTN2_K}.lora_down.weight", f"unet.{_ATTN2_K}.lora_up.weight", SD1),
        (
            f"text_encoder.{_TE_Q}.lora_linear_layer.down.weight",
            f"text_encoder.{_TE_Q}.lora_linear_layer.up.weight",
            None,
        ),
        (
            f"lora_te_text_model_{_TE_Q.replace('.', '_')}.lora_down.weight",
            f"lora_te_text_model_{_TE_Q.replace('.', '_')}.lora_up.weight",
            SD1,
        ),
    ],
)
def test_every_spelling_the_reader_reads_is_a_lora_of_the_same_family(
    down: str, up: str, base: BaseFamily | None
) -> None:
    out_width = 320 if down.startswith("unet.") else 768
    tensors = {down: torch.zeros(4, 768), up: torch.zeros(out_width, 4)}

    detection = detect_state_dict({k: tuple(t.shape) for k, t in tensors.items()})
    network = lora_from_state_dict(tensors)

    assert (detection.kind, detection.base) == (LORA, base)
    assert len(network.modules) == 1
    assert network.family == base
