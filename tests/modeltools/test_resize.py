"""LoRA resize and combine: SVD-optimal ranks, exact sums, inputs untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import BaseFamily
from brushwork.formats.lora import LoraModule, LoraNetwork, read_lora, write_lora
from brushwork.modeltools.combine import CombineRequest, combine_loras
from brushwork.modeltools.lowrank import RankChoice
from brushwork.modeltools.resize import ResizeRequest, resize_lora
from brushwork.testing.factory import Components, build_components

from .conftest import model_input, random_lora


def _write(folder: Path, name: str, network: LoraNetwork, family: str = "sd1") -> Path:
    path = folder / f"{name}.safetensors"
    write_lora(path, network, family=family)
    return path


def _optimal_share(delta: torch.Tensor, rank: int) -> float:
    singular = torch.linalg.svdvals(delta.double().flatten(1))
    return float(singular[:rank].pow(2).sum().sqrt() / singular.pow(2).sum().sqrt())


def test_resizing_32_to_8_keeps_the_svd_optimal_share_of_the_norm(
    tmp_path: Path, sd1_components: Components
) -> None:
    original = random_lora(sd1_components, rank=32, alpha=16.0, convs=True)
    source = _write(tmp_path, "style", original)
    result = resize_lora(
        ResizeRequest(model_input(source), tmp_path / "style-dim8.safetensors", RankChoice(8))
    )
    resized = read_lora(result.path)
    by_target = {layer.target: layer for layer in result.layers}
    for target, module in original.modules.items():
        delta = module.delta_weight()
        new = resized.modules[target]
        rank = min(8, delta.flatten(1).shape[0], delta.flatten(1).shape[1])
        assert new.rank == rank
        assert new.alpha == pytest.approx(16.0 / 32 * rank)  # kohya keeps alpha / rank
        kept = float(new.delta_weight().double().norm() / delta.double().norm())
        optimal = _optimal_share(delta, rank)
        assert kept >= optimal - 1e-5
        assert by_target[target].fro_retained == pytest.approx(optimal, abs=1e-5)
        error = float((new.delta_weight() - delta).double().norm())
        singular = torch.linalg.svdvals(delta.double().flatten(1))
        optimal_error = float(singular[rank:].pow(2).sum().sqrt())
        assert error == pytest.approx(optimal_error, rel=1e-4, abs=1e-6 * float(singular[0]))


def test_resize_never_touches_the_input_and_records_the_recipe(
    tmp_path: Path, sd1_components: Components
) -> None:
    source = _write(tmp_path, "style", random_lora(sd1_components, rank=8))
    before = source.read_bytes()
    with pytest.raises(ConfigError, match="is one of the inputs"):
        resize_lora(ResizeRequest(model_input(source), source, RankChoice(4), overwrite=True))
    out = tmp_path / "style-dim4.safetensors"
    resize_lora(ResizeRequest(model_input(source), out, RankChoice(4), precision="fp16"))
    assert source.read_bytes() == before
    resized = read_lora(out)
    assert resized.metadata["ss_network_dim"] == "4"
    assert resized.metadata["ss_training_comment"].startswith("resized by brushwork to dim 4")
    assert json.loads(resized.metadata["brushwork_recipe"])["input"]["name"] == "style.safetensors"
    assert next(iter(resized.modules.values())).parts["up"].dtype == torch.float16
    assert json.loads((tmp_path / "style-dim4.json").read_text())["recipe"]["dim"] == 4


def test_dynamic_resize_chooses_ranks_per_layer(tmp_path: Path, sd1_components: Components) -> None:
    network = random_lora(sd1_components, rank=16)
    # one layer made almost rank 2: sv_ratio 10 keeps only its two large directions
    target = next(iter(network.modules))
    module = network.modules[target]
    low = torch.randn(module.parts["up"].shape[0], 2) @ torch.randn(2, 16)
    up = low + 1e-4 * torch.randn_like(module.parts["up"])
    network.modules[target] = LoraModule.lora(target, module.parts["down"], up, module.alpha)
    source = _write(tmp_path, "mixed", network)
    request = ResizeRequest(
        model_input(source), tmp_path / "out.safetensors", RankChoice(8, "sv_ratio", 10.0)
    )
    result = resize_lora(request)
    ranks = {layer.target: layer.new_rank for layer in result.layers}
    assert ranks[target] == 2
    assert max(ranks.values()) <= 8


def test_combining_by_concatenation_is_the_weighted_sum_exactly(
    tmp_path: Path, sd1_components: Components
) -> None:
    first = random_lora(sd1_components, rank=8, alpha=4.0, seed=1, convs=True)
    second = random_lora(sd1_components, rank=4, alpha=1.0, seed=2, convs=True)
    paths = [_write(tmp_path, "one", first), _write(tmp_path, "two", second)]
    request = CombineRequest(
        ((model_input(paths[0]), 0.5), (model_input(paths[1]), -1.5)),
        tmp_path / "both.safetensors",
    )
    result = combine_loras(request)
    combined = read_lora(result.path)
    for target, module in first.modules.items():
        expected = 0.5 * module.delta_weight() - 1.5 * second.modules[target].delta_weight()
        got = combined.modules[target]
        assert got.rank == 12
        torch.testing.assert_close(got.delta_weight(), expected, rtol=1e-5, atol=1e-6)
    recipe = json.loads(combined.metadata["brushwork_recipe"])
    assert [i["weight"] for i in recipe["inputs"]] == [0.5, -1.5]


def test_combining_to_a_dim_is_the_best_approximation_of_the_sum(
    tmp_path: Path, sd1_components: Components
) -> None:
    first = random_lora(sd1_components, rank=8, seed=1)
    second = random_lora(sd1_components, rank=8, seed=2)
    paths = [_write(tmp_path, "one", first), _write(tmp_path, "two", second)]
    request = CombineRequest(
        ((model_input(paths[0]), 1.0), (model_input(paths[1]), 1.0)),
        tmp_path / "both.safetensors",
        rank=RankChoice(4),
    )
    combined = read_lora(combine_loras(request).path)
    for target, module in first.modules.items():
        total = module.delta_weight() + second.modules[target].delta_weight()
        singular = torch.linalg.svdvals(total.double())
        error = float((combined.modules[target].delta_weight() - total).double().norm())
        assert error == pytest.approx(float(singular[4:].pow(2).sum().sqrt()), rel=1e-4)


def test_loras_of_different_families_are_not_combined(
    tmp_path: Path, sd1_components: Components
) -> None:
    sd1 = _write(tmp_path, "one", random_lora(sd1_components, rank=4))
    xl_components = build_components("sdxl")
    target = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    layer = xl_components.unet.get_submodule(target.removeprefix("unet."))
    module = LoraModule.lora(
        target, torch.ones(2, layer.in_features), torch.ones(layer.out_features, 2)
    )
    xl = _write(tmp_path, "xl", LoraNetwork({target: module}, family=BaseFamily.SDXL), "sdxl")
    request = CombineRequest(
        ((model_input(sd1), 1.0), (model_input(xl), 1.0)), tmp_path / "both.safetensors"
    )
    with pytest.raises(ConfigError, match="different families"):
        combine_loras(request)
    assert not (tmp_path / "both.safetensors").exists()
