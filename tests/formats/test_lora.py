"""LoRA files: every key family to one representation, kohya files with the true alpha, and
diffusers' own loader as the cross-check of names and scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from brushwork.core import hashing
from brushwork.core.errors import (
    IncompatibleModelError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.core.kinds import BaseFamily
from brushwork.formats import safeio
from brushwork.formats.lora import (
    LoraModule,
    LoraNetwork,
    lora_from_peft,
    lora_from_state_dict,
    lora_to_kohya,
    read_lora,
    write_lora,
)
from brushwork.testing.factory import Components, build_components, tokenizer

RANK, ALPHA = 4, 2.0  # scale 0.5: a file that loses alpha cannot pass


@pytest.fixture(scope="module")
def sd1() -> Components:
    return build_components("sd1")


@pytest.fixture(scope="module")
def sdxl() -> Components:
    return build_components("sdxl")


def _layers(model: torch.nn.Module, *needles: str) -> list[str]:
    """Paths of every Linear/Conv2d whose path contains one of `needles`."""
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d) and any(n in name for n in needles)
    ]


def _lora(
    model: torch.nn.Module,
    component: str,
    paths: list[str],
    *,
    seed: int = 0,
    rank: int = RANK,
    alpha: float = ALPHA,
) -> dict[str, LoraModule]:
    """Random LoRA modules shaped for `model`'s layers (LoCon for k x k convs)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for path in paths:
        w = model.get_submodule(path).weight
        down = torch.randn(rank, *w.shape[1:], generator=gen) * 0.1
        up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=gen)
        out[f"{component}.{path}"] = LoraModule.lora(f"{component}.{path}", down, up * 0.1, alpha)
    return out


_SD1_RESNET_PATHS = (  # a LoCon 3x3 conv, a 1x1 shortcut and a time-embedding Linear
    "down_blocks.0.resnets.0.conv1",
    "up_blocks.1.resnets.0.conv_shortcut",
    "down_blocks.0.resnets.0.time_emb_proj",
)


def _sd1_network(c: Components) -> LoraNetwork:
    unet = _lora(c.unet, "unet", _layers(c.unet, ".attentions.", *_SD1_RESNET_PATHS))
    te = _lora(
        c.text_encoders["text_encoder"],
        "text_encoder",
        _layers(c.text_encoders["text_encoder"], "layers."),
        seed=1,
    )
    return LoraNetwork(unet | te)


def _sdxl_network(c: Components) -> LoraNetwork:
    modules = _lora(c.unet, "unet", _layers(c.unet, "attentions", "resnets", "samplers"))
    for i, (name, encoder) in enumerate(c.text_encoders.items()):
        modules |= _lora(encoder, name, _layers(encoder, "layers."), seed=i + 1)
    return LoraNetwork(modules)


def _assert_same_modules(got: LoraNetwork, want: LoraNetwork) -> None:
    assert set(got.modules) == set(want.modules)
    for target, module in want.modules.items():
        other = got.modules[target]
        assert (other.kind, other.scale) == (module.kind, module.scale), target
        assert set(other.parts) == set(module.parts), target
        for part, tensor in module.parts.items():
            assert torch.equal(other.parts[part], tensor), (target, part)


# ---------------------------------------------------------------------------------------------
# kohya round trips


def test_sd1_kohya_round_trip_keeps_tensors_alpha_and_targets(
    sd1: Components, tmp_path: Path
) -> None:
    network = _sd1_network(sd1)
    path = tmp_path / "style.safetensors"
    write_lora(path, network, family="sd1")
    raw = safeio.read_safetensors(path)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert raw.tensors[f"{q}.alpha"].shape == () and raw.tensors[f"{q}.alpha"].item() == ALPHA
    assert f"{q}.lora_down.weight" in raw.tensors
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight" in raw.tensors
    assert raw.tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"].shape[-1] == 3
    back = read_lora(path)
    assert (back.family, back.source_format, back.unmatched) == (BaseFamily.SD1, "kohya", [])
    _assert_same_modules(back, network)
    assert all(m.alpha == ALPHA for m in back.modules.values())


def test_sdxl_kohya_uses_ldm_names_and_both_text_encoders(sdxl: Components, tmp_path: Path) -> None:
    network = _sdxl_network(sdxl)
    path = tmp_path / "xl.safetensors"
    unet_config = sdxl.configs["unet"]
    write_lora(path, network, family="sdxl", unet_config=unet_config)
    keys = set(safeio.read_safetensors(path).tensors)
    # tiny SDXL: 1 layer per block; down block 1 (attention) starts at input block 3
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k.alpha" in keys
    assert "lora_unet_input_blocks_2_0_op.lora_down.weight" in keys
    assert "lora_unet_output_blocks_1_2_conv.lora_up.weight" in keys
    assert "lora_unet_middle_block_2_emb_layers_1.alpha" in keys
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert "lora_te2_text_model_encoder_layers_1_mlp_fc1.alpha" in keys
    assert not any("down_blocks" in k for k in keys)
    back = read_lora(path, unet_config=unet_config)
    assert (back.family, back.source_format, back.unmatched) == (BaseFamily.SDXL, "kohya-ldm", [])
    _assert_same_modules(back, network)
    assert "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj" in back.modules


@pytest.mark.parametrize(
    ("version", "kohya_name", "target"),
    [
        (
            "sd_v1",
            "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        ("sd_v1", "input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"),
        ("sd_v1", "input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"),
        ("sd_v1", "middle_block_1_proj_in", "mid_block.attentions.0.proj_in"),
        ("sd_v1", "middle_block_2_emb_layers_1", "mid_block.resnets.1.time_emb_proj"),
        ("sd_v1", "output_blocks_2_1_conv", "up_blocks.0.upsamplers.0.conv"),
        ("sd_v1", "output_blocks_5_2_conv", "up_blocks.1.upsamplers.0.conv"),
        ("sd_v1", "output_blocks_11_1_proj_out", "up_blocks.3.attentions.2.proj_out"),
        ("sd_v1", "output_blocks_6_0_skip_connection", "up_blocks.2.resnets.0.conv_shortcut"),
        (
            "sdxl_base_v1-0",
            "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        (
            "sdxl_base_v1-0",
            "input_blocks_7_1_transformer_blocks_9_ff_net_0_proj",
            "down_blocks.2.attentions.0.transformer_blocks.9.ff.net.0.proj",
        ),
        ("sdxl_base_v1-0", "output_blocks_0_1_proj_in", "up_blocks.0.attentions.0.proj_in"),
        ("sdxl_base_v1-0", "output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"),
        ("sdxl_base_v1-0", "output_blocks_8_0_out_layers_3", "up_blocks.2.resnets.2.conv2"),
        ("sdxl_base_v1-0", "label_emb_0_0", "add_embedding.linear_1"),
        ("sdxl_base_v1-0", "time_embed_2", "time_embedding.linear_2"),
        ("sdxl_base_v1-0", "input_blocks_0_0", "conv_in"),
        ("sdxl_base_v1-0", "out_2", "conv_out"),
    ],
)
def test_ldm_block_names_map_to_diffusers_paths_of_the_real_layouts(
    version: str, kohya_name: str, target: str
) -> None:
    tensors = {
        f"lora_unet_{kohya_name}.lora_down.weight": torch.ones(1, 3),
        f"lora_unet_{kohya_name}.lora_up.weight": torch.ones(3, 1),
    }
    network = lora_from_state_dict(tensors, {"ss_base_model_version": version})
    assert list(network.modules) == [f"unet.{target}"]
    assert network.source_format == "kohya-ldm"


# ---------------------------------------------------------------------------------------------
# one LoRA, every key family

_TINY_SD1_LDM = {  # tiny SD1 (1 layer per block), derived by hand from the LDM numbering
    "down_blocks.0.attentions.0.": "input_blocks_1_1_",
    "down_blocks.0.resnets.0.": "input_blocks_1_0_",
    "down_blocks.0.downsamplers.0.conv": "input_blocks_2_0_op",
    "mid_block.attentions.0.": "middle_block_1_",
    "up_blocks.0.upsamplers.0.conv": "output_blocks_1_1_conv",
    "up_blocks.1.attentions.1.": "output_blocks_3_1_",
}
_FAMILY_PATHS = [
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.0.downsamplers.0.conv",
    "down_blocks.0.resnets.0.conv1",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.0.upsamplers.0.conv",
    "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2",
]
_TE_PATHS = ["encoder.layers.0.self_attn.out_proj", "encoder.layers.1.mlp.fc1"]


def _ldm_name(path: str) -> str:
    for prefix, ldm in _TINY_SD1_LDM.items():
        if path.startswith(prefix):
            return ldm + path[len(prefix) :].replace(".", "_").replace("conv1", "in_layers_2")
    raise AssertionError(path)


def _pair(down_key: str, up_key: str, module: LoraModule) -> dict[str, torch.Tensor]:
    return {down_key: module.parts["down"], up_key: module.parts["up"]}


def _dialects(network: LoraNetwork) -> dict[str, dict[str, torch.Tensor]]:
    """The same modules spelled as kohya-LDM, diffusers (two spellings) and PEFT keys."""
    out: dict[str, dict[str, torch.Tensor]] = {"ldm": {}, "diffusers": {}, "peft_unet": {}}
    out["peft_te"] = {}
    for target, m in network.modules.items():
        component, _, path = target.partition(".")
        if component == "unet":
            name = f"lora_unet_{_ldm_name(path)}"
            out["diffusers"] |= _pair(f"{target}.lora_A.weight", f"{target}.lora_B.weight", m)
            peft = f"base_model.model.{path}"
            out["peft_unet"] |= _pair(f"{peft}.lora_A.weight", f"{peft}.lora_B.weight", m)
        else:
            name = "lora_te_text_model_" + path.replace(".", "_")
            old = f"text_encoder.text_model.{path}.lora"  # transformers 4 names, older diffusers
            out["diffusers"] |= _pair(f"{old}.down.weight", f"{old}.up.weight", m)
            out["peft_te"] |= _pair(
                f"{path}.lora_A.default.weight", f"{path}.lora_B.default.weight", m
            )
        out["ldm"] |= _pair(f"{name}.lora_down.weight", f"{name}.lora_up.weight", m)
        out["ldm"][f"{name}.alpha"] = torch.tensor(m.alpha)
    return out


def test_every_key_family_reads_to_identical_modules(sd1: Components) -> None:
    te = sd1.text_encoders["text_encoder"]
    want = LoraNetwork(
        _lora(sd1.unet, "unet", _FAMILY_PATHS) | _lora(te, "text_encoder", _TE_PATHS)
    )
    kohya, _ = lora_to_kohya(want, family="sd1")
    spelled = _dialects(want)
    peft_config = {
        f"{c}.{k}": v
        for c in ("unet", "text_encoder")
        for k, v in [("r", RANK), ("lora_alpha", ALPHA)]
    }

    _assert_same_modules(lora_from_state_dict(kohya), want)
    from_ldm = lora_from_state_dict(spelled["ldm"], unet_config=sd1.configs["unet"])
    assert from_ldm.source_format == "kohya-ldm"
    _assert_same_modules(from_ldm, want)
    from_diffusers = lora_from_state_dict(
        spelled["diffusers"], {"lora_adapter_metadata": json.dumps(peft_config)}
    )
    assert from_diffusers.source_format == "diffusers"
    _assert_same_modules(from_diffusers, want)
    unet_part = lora_from_peft(spelled["peft_unet"], component="unet", alpha=ALPHA)
    te_part = lora_from_peft(spelled["peft_te"], component="text_encoder", alpha=ALPHA)
    _assert_same_modules(LoraNetwork(unet_part.modules | te_part.modules), want)
    bare = lora_from_state_dict(
        {k.removeprefix("base_model.model."): v for k, v in spelled["peft_unet"].items()}
    )
    assert bare.source_format == "peft"
    assert set(bare.modules) == {t for t in want.modules if t.startswith("unet.")}


def test_diffusers_kohya_converter_output_with_lora_te1_reads_as_sd1_text_encoder(
    sd1: Components,
) -> None:
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    te = sd1.text_encoders["text_encoder"]
    want = LoraNetwork(_lora(te, "text_encoder", _TE_PATHS, alpha=float(RANK)))
    peft_keys = {}
    for target, m in want.modules.items():
        path = target.replace("text_encoder.", "text_encoder.text_model.", 1)
        peft_keys |= {
            f"{path}.lora_A.weight": m.parts["down"],
            f"{path}.lora_B.weight": m.parts["up"],
        }
    converted = convert_state_dict_to_kohya(peft_keys)
    assert any(k.startswith("lora_te1_") for k in converted)
    _assert_same_modules(lora_from_state_dict(converted), want)


# ---------------------------------------------------------------------------------------------
# cross-check: diffusers loads what we write, with the same ΔW


def _snapshot(models: dict[str, torch.nn.Module]) -> dict[tuple[str, str], torch.Tensor]:
    return {(c, k): v.clone() for c, m in models.items() for k, v in m.state_dict().items()}


def _assert_fused_exactly(
    models: dict[str, torch.nn.Module],
    before: dict[tuple[str, str], torch.Tensor],
    network: LoraNetwork,
) -> None:
    after = _snapshot(models)
    assert set(after) == set(before)
    touched = 0
    for (component, key), w0 in before.items():
        target = f"{component}.{key.rpartition('.')[0]}"
        if key.endswith(".weight") and target in network.modules:
            expected = network.modules[target].delta_weight(w0.shape)
            torch.testing.assert_close(after[(component, key)] - w0, expected, atol=1e-6, rtol=0)
            assert expected.abs().max() > 1e-3
            touched += 1
        else:
            assert torch.equal(after[(component, key)], w0), key
    assert touched == len(network.modules)


def test_diffusers_sd1_pipeline_loads_our_kohya_file_with_the_true_scale(tmp_path: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    c = build_components("sd1", seed=3)
    network = _sd1_network(c)
    path = tmp_path / "sd1.safetensors"
    write_lora(path, network, family="sd1")
    te = c.text_encoders["text_encoder"]
    models: dict[str, torch.nn.Module] = {"unet": c.unet, "text_encoder": te}
    before = _snapshot(models)
    pipe = StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=te,
        tokenizer=tokenizer(),
        unet=c.unet,
        scheduler=EulerDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    _assert_fused_exactly(models, before, network)


def test_diffusers_sdxl_pipeline_loads_our_ldm_named_file(tmp_path: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    c = build_components("sdxl", seed=4)
    network = _sdxl_network(c)
    path = tmp_path / "xl.safetensors"
    write_lora(path, network, family="sdxl", unet_config=c.configs["unet"])
    models: dict[str, torch.nn.Module] = {"unet": c.unet, **c.text_encoders}
    before = _snapshot(models)
    pipe = StableDiffusionXLPipeline(
        vae=c.vae,
        text_encoder=c.text_encoders["text_encoder"],
        text_encoder_2=c.text_encoders["text_encoder_2"],
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(),
        unet=c.unet,
        scheduler=EulerDiscreteScheduler(),
    )
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    _assert_fused_exactly(models, before, network)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_peft_adapter_converts_with_the_adapters_own_delta(use_rslora: bool) -> None:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = build_components("sd1", seed=5).unet
    config = LoraConfig(
        r=RANK,
        lora_alpha=8,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        use_rslora=use_rslora,
    )
    unet.add_adapter(config)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(generator=torch.Generator().manual_seed(len(name)))
    network = lora_from_peft(
        get_peft_model_state_dict(unet), component="unet", alpha=8, use_rslora=use_rslora
    )
    assert len(network.modules) == 32 and network.source_format == "peft"
    for target, module in network.modules.items():
        layer = unet.get_submodule(module.module_path)
        torch.testing.assert_close(
            module.delta_weight(), layer.get_delta_weight("default"), atol=1e-6, rtol=1e-5
        )
        assert target.startswith("unet.")


# ---------------------------------------------------------------------------------------------
# alpha, unknown keys, metadata, hashes


def _kohya_pair(name: str, out: int = 6, inp: int = 5, rank: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {
        f"{name}.lora_down.weight": torch.randn(rank, inp, generator=gen),
        f"{name}.lora_up.weight": torch.randn(out, rank, generator=gen),
    }


def test_missing_alpha_means_alpha_equals_rank_and_is_written_out() -> None:
    tensors = _kohya_pair("lora_te_text_model_encoder_layers_0_self_attn_q_proj", rank=3)
    module = lora_from_state_dict(tensors).modules["text_encoder.encoder.layers.0.self_attn.q_proj"]
    assert (module.alpha, module.rank, module.scale) == (None, 3, 1.0)
    down, up = tensors.values()
    torch.testing.assert_close(module.delta_weight(), up @ down)
    written, meta = lora_to_kohya(LoraNetwork({module.target: module}), family="sd1")
    assert written["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"].item() == 3.0
    assert meta["ss_network_alpha"] == "3.0" and meta["ss_network_dim"] == "3"


def test_unknown_keys_are_listed_in_unmatched_not_dropped() -> None:
    tensors = _kohya_pair("lora_unet_mid_block_attentions_0_proj_in")
    strangers = {
        "lora_unet_no_such_block_0_proj_in.lora_down.weight": torch.ones(1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight": torch.ones(1, 1),  # no up
        "bundle_emb.mystyle.string_to_param.*": torch.ones(1, 4),
    }
    network = lora_from_state_dict(tensors | strangers)
    assert list(network.modules) == ["unet.mid_block.attentions.0.proj_in"]
    assert network.unmatched == sorted(strangers)


def test_kohya_metadata_and_hashes_match_the_file(sd1: Components, tmp_path: Path) -> None:
    network = _sd1_network(sd1)
    conv = network.modules["unet.down_blocks.0.resnets.0.conv1"]
    network.modules[conv.target] = LoraModule.lora(
        conv.target, conv.parts["down"][:2], conv.parts["up"][:, :2], 1.0
    )
    path = tmp_path / "mystyle.safetensors"
    write_lora(
        path,
        network,
        family="sd1",
        metadata={"ss_training_comment": "hi", "modelspec.title": "My style"},
    )
    meta = safeio.read_header(path).metadata
    assert meta["sshs_model_hash"] == hashing.addnet_hash_file(path)
    assert len(meta["sshs_legacy_hash"]) == 8
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2.0")
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}
    assert (meta["ss_base_model_version"], meta["ss_v2"]) == ("sd_v1", "False")
    assert meta["ss_output_name"] == "mystyle" and meta["modelspec.title"] == "My style"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers"
    assert (
        meta["modelspec.resolution"] == "512x512" and meta["modelspec.prediction_type"] == "epsilon"
    )
    assert meta["ss_training_comment"] == "hi" and "modelspec.date" in meta


@pytest.mark.parametrize(
    ("family", "v_pred", "facts"),
    [
        (
            "sd2",
            False,
            ("sd_v2", "True", "stable-diffusion-v2-512/lora", "diffusers", "512x512", "epsilon"),
        ),
        (
            "sd2",
            True,
            ("sd_v2_v", "True", "stable-diffusion-v2-768-v/lora", "diffusers", "768x768", "v"),
        ),
        (
            "sdxl",
            False,
            (
                "sdxl_base_v1-0",
                "False",
                "stable-diffusion-xl-v1-base/lora",
                "https://github.com/Stability-AI/generative-models",
                "1024x1024",
                "epsilon",
            ),
        ),
    ],
)
def test_metadata_names_the_family_as_kohya_and_a1111_read_it(
    sd1: Components, family: str, v_pred: bool, facts: tuple[str, ...]
) -> None:
    network = LoraNetwork(_lora(sd1.text_encoders["text_encoder"], "text_encoder", _TE_PATHS))
    tensors, meta = lora_to_kohya(network, family=family, v_prediction=v_pred, output_name="x")
    keys = ("ss_base_model_version", "ss_v2", "modelspec.architecture", "modelspec.implementation")
    keys += ("modelspec.resolution", "modelspec.prediction_type")
    assert tuple(meta[k] for k in keys) == facts
    assert lora_from_state_dict(tensors, meta).family == BaseFamily(
        family
    )  # tiny: metadata decides


def test_dtype_applies_to_every_tensor_and_pt_files_read_back(
    sd1: Components, tmp_path: Path
) -> None:
    network = _sd1_network(sd1)
    tensors, _ = lora_to_kohya(network, family="sd1", dtype=torch.float16)
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    path = tmp_path / "old.pt"
    write_lora(path, network, family="sd1")
    assert read_lora(path).modules.keys() == network.modules.keys()


@pytest.mark.parametrize(("width", "family"), [(768, "sd1"), (1024, "sd2"), (2048, "sdxl")])
def test_family_comes_from_the_cross_attention_width(width: int, family: str) -> None:
    name = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    assert lora_from_state_dict(_kohya_pair(name, inp=width)).family == BaseFamily(family)


def test_writing_for_another_family_is_refused(sd1: Components) -> None:
    network = _sd1_network(sd1)
    network.family = BaseFamily.SD1
    with pytest.raises(IncompatibleModelError, match="sd1"):
        lora_to_kohya(network, family="sdxl")
    te2 = LoraNetwork(_lora(sd1.text_encoders["text_encoder"], "text_encoder_2", _TE_PATHS))
    with pytest.raises(IncompatibleModelError, match="text_encoder_2"):
        lora_to_kohya(te2, family="sd1")


# ---------------------------------------------------------------------------------------------
# other kinds of files


@pytest.mark.parametrize(
    ("tensors", "looks"),
    [
        ({"model.diffusion_model.input_blocks.0.0.weight": torch.ones(2, 2)}, "checkpoint"),
        ({"emb_params": torch.ones(2, 768)}, "embedding"),
        (
            {
                "conv_in.weight": torch.ones(2, 2),
                "down_blocks.0.resnets.0.conv1.weight": torch.ones(2, 2),
            },
            "UNet",
        ),
    ],
)
def test_other_model_kinds_raise_wrong_kind(
    tensors: dict[str, torch.Tensor], looks: str, tmp_path: Path
) -> None:
    path = tmp_path / "thing.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(WrongKindError, match=looks) as info:
        read_lora(path)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("obj", "looks"),
    [
        ({"string_to_param": {"*": torch.ones(2, 768)}, "name": "emb"}, "embedding"),
        (
            {768: [{"linear.0.weight": torch.ones(2, 2)}], "layer_structure": [1, 2, 1]},
            "hypernetwork",
        ),
    ],
)
def test_a1111_pickles_of_other_kinds_raise_wrong_kind(
    obj: Any, looks: str, tmp_path: Path
) -> None:
    path = tmp_path / "other.pt"
    safeio.write_pickle(path, obj)
    with pytest.raises(WrongKindError, match=looks):
        read_lora(path)


# ---------------------------------------------------------------------------------------------
# LyCORIS module types


def test_loha_delta_is_the_hadamard_product_and_round_trips() -> None:
    gen = torch.Generator().manual_seed(8)
    w = {
        n: torch.randn(*s, generator=gen)
        for n, s in [("w1_a", (6, 2)), ("w1_b", (2, 5)), ("w2_a", (6, 2)), ("w2_b", (2, 5))]
    }
    name = "lora_unet_mid_block_attentions_0_proj_out"
    tensors = {f"{name}.hada_{k}": v for k, v in w.items()} | {f"{name}.alpha": torch.tensor(1.0)}
    network = lora_from_state_dict(tensors)
    module = network.modules["unet.mid_block.attentions.0.proj_out"]
    assert (module.kind, module.rank, module.scale) == ("loha", 2, 0.5)
    expected = 0.5 * (w["w1_a"] @ w["w1_b"]) * (w["w2_a"] @ w["w2_b"])
    torch.testing.assert_close(module.delta_weight(), expected)
    written, meta = lora_to_kohya(network, family="sd1")
    assert set(written) == set(tensors) and meta["ss_network_module"] == "lycoris.kohya"
    _assert_same_modules(lora_from_state_dict(written), network)


def test_lokr_delta_is_the_kronecker_product_for_linear_and_conv() -> None:
    gen = torch.Generator().manual_seed(9)
    w1, w2_a, w2_b = (
        torch.randn(2, 3, generator=gen),
        torch.randn(4, 2, generator=gen),
        torch.randn(2, 5, generator=gen),
    )
    name = "lora_unet_mid_block_attentions_0_proj_out"
    tensors = {
        f"{name}.lokr_w1": w1,
        f"{name}.lokr_w2_a": w2_a,
        f"{name}.lokr_w2_b": w2_b,
        f"{name}.alpha": torch.tensor(1.0),
    }
    module = lora_from_state_dict(tensors).modules["unet.mid_block.attentions.0.proj_out"]
    assert (module.kind, module.rank, module.scale) == ("lokr", 2, 0.5)
    torch.testing.assert_close(module.delta_weight((8, 15)), 0.5 * torch.kron(w1, w2_a @ w2_b))
    w2 = torch.randn(4, 5, 3, 3, generator=gen)
    conv = {
        "lora_unet_mid_block_resnets_0_conv1.lokr_w1": w1,
        "lora_unet_mid_block_resnets_0_conv1.lokr_w2": w2,
    }
    full = lora_from_state_dict(conv).modules["unet.mid_block.resnets.0.conv1"]
    assert (full.rank, full.scale) == (None, 1.0)  # full matrices: alpha is not used
    expected = torch.kron(w1[:, :, None, None], w2)
    assert expected.shape == (8, 15, 3, 3)
    torch.testing.assert_close(full.delta_weight((8, 15, 3, 3)), expected)
    assert expected[4 + 1, 5 * 2 + 3, 2, 0] == w1[1, 2] * w2[1, 3, 2, 0]


def test_locon_cp_mid_and_dora_scale() -> None:
    gen = torch.Generator().manual_seed(10)
    down, mid, up = (
        torch.randn(2, 5, 1, 1, generator=gen),
        torch.randn(2, 2, 3, 3, generator=gen),
        torch.randn(6, 2, 1, 1, generator=gen),
    )
    name = "lora_unet_mid_block_resnets_0_conv2"
    cp = lora_from_state_dict(
        {
            f"{name}.lora_down.weight": down,
            f"{name}.lora_mid.weight": mid,
            f"{name}.lora_up.weight": up,
        }
    )
    delta = cp.modules["unet.mid_block.resnets.0.conv2"].delta_weight()
    x = torch.randn(1, 5, 7, 7, generator=gen)
    layered = torch.nn.functional.conv2d(
        torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down), mid), up
    )
    torch.testing.assert_close(torch.nn.functional.conv2d(x, delta), layered, atol=1e-5, rtol=1e-5)

    name = "lora_unet_mid_block_attentions_0_proj_in"
    lin = _kohya_pair(name)
    magnitude = torch.rand(1, 5, generator=gen) + 0.5  # LyCORIS: one magnitude per input column
    module = lora_from_state_dict(lin | {f"{name}.dora_scale": magnitude}).modules[
        "unet.mid_block.attentions.0.proj_in"
    ]
    base = torch.randn(6, 5, generator=gen)
    with pytest.raises(ValueError, match="base_weight"):
        module.delta_weight()
    merged = (
        base + lin[f"{name}.lora_up.weight"] @ lin[f"{name}.lora_down.weight"]
    )  # no alpha: scale 1
    expected = magnitude * merged / merged.norm(dim=0, keepdim=True) - base
    torch.testing.assert_close(module.delta_weight(base_weight=base), expected)
    written, _ = lora_to_kohya(LoraNetwork({module.target: module}), family="sd1")
    assert torch.equal(written[f"{name}.dora_scale"], magnitude)
    again = lora_from_state_dict(written).modules[module.target]
    torch.testing.assert_close(again.delta_weight(base_weight=base), expected)


def test_unsupported_lycoris_types_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedModelError, match="IA3"):
        lora_from_state_dict({"lora_unet_mid_block_attentions_0_proj_in.weight": torch.ones(4)})
