"""LoRA extraction: a known low-rank fine-tune comes back to float precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brushwork.core.errors import IncompatibleModelError
from brushwork.formats.lora import read_lora
from brushwork.modeltools.extract import ExtractRequest, extract_lora
from brushwork.modeltools.lowrank import RankChoice
from brushwork.modeltools.targets import unet_targets
from brushwork.testing.factory import (
    build_components,
    components_architecture,
    write_checkpoint_file,
)

from .conftest import model_input

RANK = 4


def _tuned(
    folder: Path, *, rank: int = RANK, text_encoder: bool = False, seed: int = 7
) -> tuple[Path, dict[str, torch.Tensor]]:
    """The seed-1 model (the fixtures' a.safetensors) plus a known rank-`rank` ΔW on every
    layer kohya's LoCon patches; returns the file and the ΔW actually stored per target."""
    components = build_components("sd1", seed=1)
    base = {k: v.clone() for k, v in components.unet.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    targets = unet_targets(components_architecture(components), with_convs=True)
    with torch.no_grad():
        for target in targets:
            weight = components.unet.get_submodule(target.path).weight
            low = torch.randn(weight.shape[0], rank, generator=generator)
            high = torch.randn(rank, weight[0].numel(), generator=generator)
            weight.add_((low @ high).reshape(weight.shape) * 0.01)
        if text_encoder:
            encoder = components.text_encoders["text_encoder"]
            layer = encoder.get_submodule("encoder.layers.0.self_attn.q_proj")
            layer.weight.add_(0.05)
    tuned = components.unet.state_dict()
    deltas = {f"unet.{t.path}": tuned[t.weight_key] - base[t.weight_key] for t in targets}
    return write_checkpoint_file(components, folder / "tuned.safetensors"), deltas


def test_a_known_rank_r_difference_is_recovered_to_float_precision(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    tuned, deltas = _tuned(tmp_path)
    out = tmp_path / "extracted.safetensors"
    request = ExtractRequest(
        model_input(tuned),
        model_input(sd1_files[0]),
        out,
        RankChoice(RANK),
        conv_rank=RankChoice(RANK),
        precision="fp32",
    )
    result = extract_lora(request)
    network = read_lora(out)
    assert set(network.modules) == set(deltas)
    for target, delta in deltas.items():
        module = network.modules[target]
        assert module.rank == RANK and module.alpha == RANK  # true alpha: scale 1
        got = module.delta_weight(delta.shape)
        assert float((got - delta).abs().max()) <= 1e-5 * float(delta.abs().max()), target
    assert result.skipped_text_encoders == {"text_encoder": 0.0}
    assert min(result.fro_retained.values()) > 0.999999


def test_the_text_encoder_is_extracted_only_when_it_changed(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    tuned, _ = _tuned(tmp_path, text_encoder=True)
    out = tmp_path / "with-te.safetensors"
    request = ExtractRequest(model_input(tuned), model_input(sd1_files[0]), out, RankChoice(2))
    result = extract_lora(request)
    assert result.skipped_text_encoders == {}
    assert result.modules["text_encoder"] == 1  # only the layer that changed
    assert len(result.unchanged_layers) == 11  # the other 11 text-encoder layers
    network = read_lora(out)
    q_proj = network.modules["text_encoder.encoder.layers.0.self_attn.q_proj"]
    assert torch.allclose(q_proj.delta_weight().float(), torch.full((64, 64), 0.05), atol=1e-3)


def test_without_a_conv_dim_only_kohyas_default_layers_are_extracted(
    tmp_path: Path, sd1_files: list[Path]
) -> None:
    tuned, _ = _tuned(tmp_path)
    out = tmp_path / "plain.safetensors"
    extract_lora(ExtractRequest(model_input(tuned), model_input(sd1_files[0]), out, RankChoice(2)))
    network = read_lora(out)
    assert network.modules and all(".attentions." in t for t in network.modules)
    assert all(m.parts["down"].dtype == torch.float16 for m in network.modules.values())


def test_dynamic_rank_finds_the_true_rank(tmp_path: Path, sd1_files: list[Path]) -> None:
    tuned, _ = _tuned(tmp_path, rank=2)
    out = tmp_path / "dynamic.safetensors"
    request = ExtractRequest(
        model_input(tuned),
        model_input(sd1_files[0]),
        out,
        RankChoice(8, "sv_fro", 0.9999),
        conv_rank=RankChoice(8, "sv_fro", 0.9999),
    )
    result = extract_lora(request)
    assert set(result.ranks.values()) == {2}
    assert read_lora(out).metadata["ss_network_dim"] == "2"


def test_metadata_names_both_models(tmp_path: Path, sd1_files: list[Path]) -> None:
    tuned, _ = _tuned(tmp_path)
    out = tmp_path / "meta.safetensors"
    result = extract_lora(
        ExtractRequest(model_input(tuned), model_input(sd1_files[0]), out, RankChoice(RANK))
    )
    metadata = read_lora(out).metadata
    recipe = json.loads(metadata["brushwork_recipe"])
    assert metadata["ss_sd_model_name"] == "a.safetensors"
    assert metadata["ss_new_sd_model_hash"] == recipe["base"]["sha256"]
    assert recipe["tuned"]["sha256"] in metadata["ss_training_comment"]
    assert "tuned.safetensors" in metadata["ss_training_comment"]
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_alpha"] == str(float(RANK))
    sidecar = json.loads((tmp_path / "meta.json").read_text())
    assert "tuned.safetensors" in sidecar["description"] and result.sidecar is not None


def test_models_that_do_not_fit_are_refused(
    tmp_path: Path, sd1_files: list[Path], sdxl_file: Path
) -> None:
    out = tmp_path / "x.safetensors"
    with pytest.raises(IncompatibleModelError, match="against its own base"):
        extract_lora(
            ExtractRequest(model_input(sdxl_file), model_input(sd1_files[0]), out, RankChoice(4))
        )
    with pytest.raises(IncompatibleModelError, match="nothing to extract"):
        same = model_input(sd1_files[0])
        extract_lora(ExtractRequest(same, model_input(sd1_files[0]), out, RankChoice(4)))
    assert not out.exists()
