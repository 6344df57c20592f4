"""Hypernetworks at generation: A1111's residual MLPs on the k/v context of every attention."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from brushwork.formats.hypernetwork import (
    Hypernetwork,
    create_hypernetwork,
    load_mlps,
    write_hypernetwork,
)
from brushwork.formats.lora import LoraModule, LoraNetwork
from brushwork.patching.hypernetwork import (
    HypernetworkApplication,
    HypernetworkPatcher,
    HypernetworkProjection,
    apply_hypernetworks,
    load_hypernetwork_application,
)
from brushwork.patching.lora import LoraApplication, apply_loras
from brushwork.testing.factory import Components, build_components

# the tiny SD1 UNet: 8 attention modules; text context 64 wide (4 attn2), hidden states 32 wide
# (3 attn1, down and up blocks) and 64 wide (the mid block attn1)
ATTN2 = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
ATTN1_32 = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
ATTN1_64 = "mid_block.attentions.0.transformer_blocks.0.attn1"


@pytest.fixture(scope="module")
def sd1() -> Components:
    return build_components("sd1", seed=1)


def _hypernet(name: str, widths: tuple[int, ...] = (64, 32), seed: int = 0) -> Hypernetwork:
    return create_hypernetwork(
        name, widths, activation_func="relu", weight_initialization="XavierNormal", seed=seed
    )


def _unet_out(unet: torch.nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    dtype = next(unet.parameters()).dtype
    sample = torch.randn(1, 4, 16, 16, generator=gen).to(dtype)
    context = torch.randn(1, 7, 64, generator=gen).to(dtype)
    with torch.no_grad():
        out: torch.Tensor = unet(sample, 10, encoder_hidden_states=context).sample
    return out


def _projections(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {
        f"{name}.{p}": getattr(module, p)
        for name, module in unet.named_modules()
        if hasattr(module, "to_k")
        for p in ("to_k", "to_v")
    }


class _Inputs:
    """Records what one layer receives in a forward pass."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def hook(self, _module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.seen.append(args[0].detach().clone())


@contextmanager
def _recording(*layers: torch.nn.Module) -> Iterator[list[_Inputs]]:
    inputs = [_Inputs() for _ in layers]
    handles = [
        layer.register_forward_pre_hook(i.hook) for layer, i in zip(layers, inputs, strict=True)
    ]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def test_multiplier_zero_is_the_base_model_exactly(sd1: Components) -> None:
    base, originals = _unet_out(sd1.unet), _projections(sd1.unet)
    app = HypernetworkApplication(_hypernet("h"), multiplier=0.0)
    with apply_hypernetworks(sd1.unet, [app]) as report:
        assert torch.equal(_unet_out(sd1.unet), base)
        assert _projections(sd1.unet) == originals
    assert report.attentions == {"h": 0}


def test_hypernetwork_changes_the_output_and_removal_restores_every_module(
    sd1: Components,
) -> None:
    base, originals = _unet_out(sd1.unet), _projections(sd1.unet)
    keys = list(sd1.unet.state_dict())
    with apply_hypernetworks(sd1.unet, [HypernetworkApplication(_hypernet("h"))]) as report:
        assert (_unet_out(sd1.unet) - base).abs().max() > 1e-3
        wrapped = _projections(sd1.unet)
        assert all(isinstance(w, HypernetworkProjection) for w in wrapped.values())
        assert {k: w.base_layer for k, w in wrapped.items()} == originals
    assert report.attentions == {"h": 8} and report.missing_widths == {"h": ()}
    assert all(sd1.unet.get_submodule(k) is v for k, v in originals.items())
    assert list(sd1.unet.state_dict()) == keys
    assert torch.equal(_unet_out(sd1.unet), base)


@pytest.mark.parametrize("path", [ATTN2, ATTN1_32, ATTN1_64])
def test_k_and_v_inputs_become_x_plus_mlp_times_multiplier(sd1: Components, path: str) -> None:
    hn = _hypernet("h")
    attn = sd1.unet.get_submodule(path)
    width = attn.to_k.in_features
    with apply_hypernetworks(sd1.unet, [HypernetworkApplication(hn, multiplier=0.7)]):
        layers = (attn.to_k, attn.to_k.base_layer, attn.to_v.base_layer)
        with _recording(*layers) as (outer_k, inner_k, inner_v):
            _unet_out(sd1.unet)
    mlp_k, mlp_v = load_mlps(hn, width)
    (x,), (k_in,), (v_in,) = outer_k.seen, inner_k.seen, inner_v.seen
    with torch.no_grad():
        torch.testing.assert_close(k_in, x + mlp_k(x) * 0.7)
        torch.testing.assert_close(v_in, x + mlp_v(x) * 0.7)
    assert (k_in - x).abs().max() > 1e-3


def test_the_mlp_pair_is_chosen_by_context_width(sd1: Components) -> None:
    only_64 = _hypernet("wide", widths=(64,))
    with apply_hypernetworks(sd1.unet, [HypernetworkApplication(only_64)]) as report:
        reached = {
            name.rpartition(".")[0]
            for name, layer in _projections(sd1.unet).items()
            if isinstance(layer, HypernetworkProjection)
        }
    assert ATTN2 in reached and ATTN1_64 in reached and ATTN1_32 not in reached
    assert report.attentions == {"wide": 5} and report.missing_widths == {"wide": (32,)}


def test_several_hypernetworks_chain_in_order(sd1: Components) -> None:
    first, second = _hypernet("first", seed=1), _hypernet("second", seed=2)
    attn = sd1.unet.get_submodule(ATTN2)
    results = []
    for order in ((first, 0.5), (second, 1.5)), ((second, 1.5), (first, 0.5)):
        apps = [HypernetworkApplication(hn, multiplier=m) for hn, m in order]
        with (
            apply_hypernetworks(sd1.unet, apps),
            _recording(attn.to_k, attn.to_k.base_layer) as (outer, inner),
        ):
            _unet_out(sd1.unet)
        x = outer.seen[0]
        with torch.no_grad():
            for hn, multiplier in order:
                mlp_k, _ = load_mlps(hn, 64)
                x = x + mlp_k(x) * multiplier
        torch.testing.assert_close(inner.seen[0], x)
        results.append(inner.seen[0])
    assert (results[0] - results[1]).abs().max() > 1e-4  # order matters, and is kept


def test_mlps_run_in_the_unets_dtype() -> None:
    c = build_components("sd1", seed=3, dtype=torch.bfloat16)
    base = _unet_out(c.unet)
    with apply_hypernetworks(c.unet, [HypernetworkApplication(_hypernet("h"))]):
        out = _unet_out(c.unet)
    assert out.dtype == torch.bfloat16 and not torch.equal(out, base)


def test_patcher_rewraps_only_when_the_set_changes(sd1: Components) -> None:
    hn = _hypernet("h")
    base, originals = _unet_out(sd1.unet), _projections(sd1.unet)
    with HypernetworkPatcher(sd1.unet) as patcher:
        patcher.apply([HypernetworkApplication(hn, multiplier=1.0)])
        wrapped = _projections(sd1.unet)
        with_one = _unet_out(sd1.unet)
        patcher.apply([HypernetworkApplication(hn, multiplier=1.0)])
        assert _projections(sd1.unet) == wrapped  # the same wrappers: nothing was redone
        patcher.apply([HypernetworkApplication(hn, multiplier=0.3)])
        assert not torch.equal(_unet_out(sd1.unet), with_one)
        patcher.apply([])
        assert _projections(sd1.unet) == originals
        patcher.apply([HypernetworkApplication(hn)])
        assert torch.equal(_unet_out(sd1.unet), with_one)
    assert _projections(sd1.unet) == originals
    assert torch.equal(_unet_out(sd1.unet), base)


def test_lora_patches_the_layer_inside_a_hypernetwork_wrapper(sd1: Components) -> None:
    target = f"unet.{ATTN2}.to_k"
    linear = sd1.unet.get_submodule(f"{ATTN2}.to_k")
    w0 = linear.weight.detach().clone()
    down, up = torch.randn(2, 64), torch.randn(linear.out_features, 2)
    network = LoraNetwork({target: LoraModule.lora(target, down, up, 2.0)})
    with (
        apply_hypernetworks(sd1.unet, [HypernetworkApplication(_hypernet("h"))]),
        apply_loras(unet=sd1.unet, applications=[LoraApplication(network, "l")]) as report,
    ):
        torch.testing.assert_close(linear.weight - w0, up @ down)
    assert report.per_component == {"unet": 1} and torch.equal(linear.weight, w0)


def test_a_file_read_twice_is_the_same_set_for_the_patcher(sd1: Components, tmp_path: Path) -> None:
    path = tmp_path / "style.pt"
    write_hypernetwork(path, _hypernet("style"))
    originals = _projections(sd1.unet)
    with HypernetworkPatcher(sd1.unet) as patcher:
        report = patcher.apply([load_hypernetwork_application(path, multiplier=0.8)])
        wrapped = _projections(sd1.unet)
        patcher.apply([load_hypernetwork_application(path, multiplier=0.8)])
        assert _projections(sd1.unet) == wrapped
    assert report.attentions == {"style": 8}
    assert _projections(sd1.unet) == originals
