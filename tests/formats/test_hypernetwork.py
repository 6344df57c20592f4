"""A1111 hypernetworks: file layout, load defaults, validation, and the MLPs they build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from brushwork.core.errors import (
    BrushworkError,
    ConfigError,
    CorruptModelError,
    UnsupportedModelError,
    WrongKindError,
)
from brushwork.formats import safeio
from brushwork.formats.hypernetwork import (
    Hypernetwork,
    build_mlp,
    create_hypernetwork,
    derive_dropout_structure,
    load_mlps,
    read_hypernetwork,
    write_hypernetwork,
)

SMALL_WIDTHS = (16, 8)


def _linear_pair(width: int, hidden: int, *, old_keys: bool = False) -> dict[str, torch.Tensor]:
    first, second = ("linear1", "linear2") if old_keys else ("linear.0", "linear.1")
    return {
        f"{first}.weight": torch.randn(hidden, width),
        f"{first}.bias": torch.randn(hidden),
        f"{second}.weight": torch.randn(width, hidden),
        f"{second}.bias": torch.randn(width),
    }


def _assert_same_layers(a: Hypernetwork, b: Hypernetwork) -> None:
    assert a.widths == b.widths
    for width in a.widths:
        for state_a, state_b in zip(a.layers[width], b.layers[width], strict=True):
            assert state_a.keys() == state_b.keys()
            assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# ---------------------------------------------------------------------------------------------
# create, write, read


def test_round_trip_keeps_weights_and_settings(tmp_path: Path) -> None:
    created = create_hypernetwork(
        "anime style!",
        widths=SMALL_WIDTHS,
        layer_structure=(1, 2, 2, 1),
        activation_func="relu",
        add_layer_norm=True,
        use_dropout=True,
        dropout_structure=(0, 0.1, 0.2, 0),
        seed=3,
    )
    write_hypernetwork(tmp_path / "file-stem.pt", created)

    loaded = read_hypernetwork(tmp_path / "file-stem.pt")

    assert loaded.name == "anime style"  # the stored name wins, cleaned as A1111 cleans it
    _assert_same_layers(created, loaded)
    for attr in (
        "layer_structure",
        "activation_func",
        "is_layer_norm",
        "weight_initialization",
        "use_dropout",
        "dropout_structure",
        "last_layer_dropout",
        "activate_output",
        "step",
        "sd_checkpoint",
        "optional_info",
    ):
        assert getattr(loaded, attr) == getattr(created, attr), attr
    assert loaded.activate_output is False  # new ones do not activate the output
    assert loaded.last_layer_dropout is True  # derived from dropout_structure[-2]


def test_file_has_a1111_layout(tmp_path: Path) -> None:
    write_hypernetwork(tmp_path / "hn.pt", create_hypernetwork("hn", widths=SMALL_WIDTHS))

    raw = safeio.read_pickle(tmp_path / "hn.pt")

    assert [k for k in raw if type(k) is int] == list(SMALL_WIDTHS)
    k_state, v_state = raw[16]
    assert set(k_state) == {"linear.0.weight", "linear.0.bias", "linear.1.weight", "linear.1.bias"}
    assert k_state["linear.0.weight"].shape == (32, 16)
    assert v_state["linear.1.weight"].shape == (16, 32)
    for key in ("layer_structure", "activation_func", "is_layer_norm", "weight_initialization"):
        assert key in raw
    assert (raw["name"], raw["step"], raw["activate_output"]) == ("hn", 0, False)


def test_write_refuses_to_replace_unless_asked(tmp_path: Path) -> None:
    hn = create_hypernetwork("hn", widths=(8,))
    write_hypernetwork(tmp_path / "hn.pt", hn)
    with pytest.raises(BrushworkError, match="already exists"):
        write_hypernetwork(tmp_path / "hn.pt", hn)
    write_hypernetwork(tmp_path / "hn.pt", hn, overwrite=True)


def test_create_is_seeded_and_uses_a1111_normal_init() -> None:
    first = create_hypernetwork("a", widths=(64,), seed=1)
    second = create_hypernetwork("a", widths=(64,), seed=1)
    other = create_hypernetwork("a", widths=(64,), seed=2)

    _assert_same_layers(first, second)
    weight = first.layers[64][0]["linear.0.weight"]
    assert not torch.equal(weight, other.layers[64][0]["linear.0.weight"])
    assert abs(weight.std().item() - 0.01) < 0.002
    assert torch.count_nonzero(first.layers[64][0]["linear.0.bias"]) == 0
    assert not torch.equal(
        first.layers[64][0]["linear.0.weight"], first.layers[64][1]["linear.0.weight"]
    )


def test_create_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="start and end with 1"):
        create_hypernetwork("x", widths=(8,), layer_structure=(2, 1))
    with pytest.raises(ConfigError, match=r"not a torch\.nn activation"):
        create_hypernetwork("x", widths=(8,), activation_func="wiggle")
    with pytest.raises(ConfigError, match="weight_initialization"):
        create_hypernetwork("x", widths=(8,), weight_initialization="Zeros")
    with pytest.raises(ConfigError, match="use_dropout is False"):
        create_hypernetwork("x", widths=(8,), dropout_structure=(0, 0.3, 0))
    with pytest.raises(ConfigError, match="no usable characters"):
        create_hypernetwork("???", widths=(8,))


# ---------------------------------------------------------------------------------------------
# A1111's load defaults and old files


def test_old_file_with_linear1_linear2_keys_loads_with_a1111_defaults(tmp_path: Path) -> None:
    weights = {
        768: (_linear_pair(768, 1536, old_keys=True), _linear_pair(768, 1536, old_keys=True))
    }
    torch.save(weights, tmp_path / "nai-style.pt")

    loaded = read_hypernetwork(tmp_path / "nai-style.pt")

    assert loaded.name == "nai-style"
    assert loaded.layer_structure == [1, 2, 1]
    assert loaded.activation_func == "linear"
    assert loaded.activate_output is True
    assert (loaded.is_layer_norm, loaded.use_dropout, loaded.weight_initialization) == (
        False,
        False,
        "Normal",
    )
    assert loaded.dropout_structure == [0, 0, 0]
    assert (loaded.step, loaded.sd_checkpoint, loaded.optional_info) == (0, None, None)
    k_state = loaded.layers[768][0]
    assert set(k_state) == {"linear.0.weight", "linear.0.bias", "linear.1.weight", "linear.1.bias"}
    assert torch.equal(k_state["linear.0.weight"], weights[768][0]["linear1.weight"])
    k_mlp, _v_mlp = load_mlps(loaded, 768)
    assert [type(m) for m in k_mlp] == [torch.nn.Linear, torch.nn.Linear]


@pytest.mark.parametrize(
    ("layer_structure", "last_layer_dropout", "expected"),
    [
        ([1, 2, 1], False, [0, 0, 0]),
        ([1, 2, 1], True, [0, 0.3, 0]),
        ([1, 2, 2, 1], False, [0, 0.3, 0, 0]),
        ([1, 2, 2, 1], True, [0, 0.3, 0.3, 0]),
    ],
)
def test_dropout_structure_is_derived_when_missing(
    tmp_path: Path, layer_structure: list[float], last_layer_dropout: bool, expected: list[float]
) -> None:
    template = create_hypernetwork(
        "t",
        widths=(8,),
        layer_structure=layer_structure,
        use_dropout=any(expected),
        dropout_structure=expected if any(expected) else None,
    )
    raw: dict[Any, Any] = {8: template.layers[8]}
    raw.update(
        layer_structure=layer_structure,
        use_dropout=True,
        last_layer_dropout=last_layer_dropout,
        activate_output=False,
    )
    torch.save(raw, tmp_path / "d.pt")

    loaded = read_hypernetwork(tmp_path / "d.pt")

    assert loaded.dropout_structure == expected
    assert derive_dropout_structure(layer_structure, False, last_layer_dropout) == [0] * len(
        layer_structure
    )
    dropouts = [m.p for m in build_mlp(loaded, 8) if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [p for p in expected if p > 0]


def test_a_stored_dropout_structure_turns_dropout_on(tmp_path: Path) -> None:
    template = create_hypernetwork(
        "t",
        widths=(8,),
        layer_structure=(1, 2, 2, 1),
        use_dropout=True,
        dropout_structure=(0, 0.25, 0, 0),
    )
    raw: dict[Any, Any] = {8: template.layers[8], "layer_structure": [1, 2, 2, 1]}
    raw.update(dropout_structure=[0, 0.25, 0, 0], use_dropout=False)
    torch.save(raw, tmp_path / "d.pt")

    loaded = read_hypernetwork(tmp_path / "d.pt")

    assert loaded.use_dropout is True
    assert loaded.dropout_structure == [0, 0.25, 0, 0]


# ---------------------------------------------------------------------------------------------
# the MLP


@pytest.mark.parametrize(
    ("settings", "expected_types"),
    [
        ({}, [torch.nn.Linear, torch.nn.Linear]),
        (
            {"activation_func": "relu", "add_layer_norm": True},
            [
                torch.nn.Linear,
                torch.nn.ReLU,
                torch.nn.LayerNorm,
                torch.nn.Linear,
                torch.nn.LayerNorm,
            ],
        ),
        (
            {"activation_func": "swish", "use_dropout": True, "dropout_structure": (0, 0.3, 0)},
            [torch.nn.Linear, torch.nn.Hardswish, torch.nn.Dropout, torch.nn.Linear],
        ),
        ({"activation_func": "prelu"}, [torch.nn.Linear, torch.nn.PReLU, torch.nn.Linear]),
    ],
)
def test_build_mlp_follows_a1111_module_order(
    tmp_path: Path, settings: dict[str, Any], expected_types: list[type]
) -> None:
    created = create_hypernetwork("m", widths=(8,), **settings)
    write_hypernetwork(tmp_path / "m.pt", created)
    loaded = read_hypernetwork(tmp_path / "m.pt")  # loaded files activate the output by default

    assert [type(m) for m in build_mlp(created, 8)] == expected_types
    k_mlp, v_mlp = load_mlps(loaded, 8)  # strict load of the file's state dicts
    assert torch.equal(k_mlp[0].weight, created.layers[8][0]["linear.0.weight"])
    assert torch.equal(v_mlp[0].weight, created.layers[8][1]["linear.0.weight"])


def test_activate_output_adds_the_activation_after_the_last_linear() -> None:
    hn = create_hypernetwork("g", widths=(8,), activation_func="gelu")
    loaded_style = Hypernetwork(
        name="g",
        layers=hn.layers,
        layer_structure=[1, 2, 1],
        activation_func="gelu",
        activate_output=True,
    )
    assert [type(m) for m in build_mlp(hn, 8)] == [torch.nn.Linear, torch.nn.GELU, torch.nn.Linear]
    assert [type(m) for m in build_mlp(loaded_style, 8)][-1] is torch.nn.GELU


def test_mlp_keeps_width_and_is_a_residual_that_vanishes_at_zero_strength() -> None:
    hn = create_hypernetwork(
        "r", widths=(16, 8), activation_func="tanh", add_layer_norm=True, seed=0
    )
    for width in hn.widths:
        k_mlp, v_mlp = load_mlps(hn, width)
        context = torch.randn(2, 5, width)
        for mlp in (k_mlp, v_mlp):
            out = mlp(context)
            assert out.shape == context.shape
            assert torch.equal(context + out * 0.0, context)
            assert not torch.allclose(context + out, context)


def test_load_mlps_for_a_missing_width_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no layers for width 1024"):
        load_mlps(create_hypernetwork("x", widths=(8,)), 1024)


# ---------------------------------------------------------------------------------------------
# malformed files


def test_state_dict_of_another_width_is_named(tmp_path: Path) -> None:
    torch.save({768: (_linear_pair(320, 640), _linear_pair(320, 640))}, tmp_path / "bad.pt")
    with pytest.raises(
        CorruptModelError,
        match=r"layer 768 \(k MLP\): linear.0.weight has shape \[640, 320\].*needs \[1536, 768\]",
    ):
        read_hypernetwork(tmp_path / "bad.pt")


def test_keys_that_do_not_match_the_settings_are_named(tmp_path: Path) -> None:
    pair = _linear_pair(8, 16)
    raw: dict[Any, Any] = {8: (pair, pair), "is_layer_norm": True}
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CorruptModelError, match=r"missing \['linear\.2\.weight'"):
        read_hypernetwork(tmp_path / "bad.pt")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layer_structure": [1, 2]}, "layer_structure"),
        ({"layer_structure": "1,2,1"}, "not a list of numbers"),
        ({"activation_func": "wiggle"}, "not a torch.nn activation"),
        ({"dropout_structure": [0, 1.5, 0]}, "dropout_structure"),
    ],
)
def test_invalid_settings_are_errors(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    pair = _linear_pair(8, 16)
    raw: dict[Any, Any] = {8: (pair, pair), **settings}
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CorruptModelError, match=message):
        read_hypernetwork(tmp_path / "bad.pt")


def test_layer_that_is_not_a_pair_is_an_error(tmp_path: Path) -> None:
    torch.save({8: _linear_pair(8, 16)}, tmp_path / "bad.pt")
    with pytest.raises(CorruptModelError, match="not a \\(k, v\\) pair"):
        read_hypernetwork(tmp_path / "bad.pt")


def test_lora_files_are_the_wrong_kind(tmp_path: Path) -> None:
    lora = {
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4),
    }
    save_file(lora, str(tmp_path / "lora.safetensors"))
    torch.save(lora, tmp_path / "lora.pt")
    with pytest.raises(WrongKindError, match="LoRA"):
        read_hypernetwork(tmp_path / "lora.safetensors")
    with pytest.raises(WrongKindError, match="LoRA"):
        read_hypernetwork(tmp_path / "lora.pt")


def test_embedding_file_is_the_wrong_kind(tmp_path: Path) -> None:
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "name": "e"}, tmp_path / "e.pt")
    with pytest.raises(WrongKindError, match="textual-inversion embedding"):
        read_hypernetwork(tmp_path / "e.pt")


def test_fork_only_features_are_refused(tmp_path: Path) -> None:
    pair = _linear_pair(8, 16)
    torch.save({8: (pair, pair), "skip_connection": True}, tmp_path / "fork.pt")
    with pytest.raises(UnsupportedModelError, match="skip_connection"):
        read_hypernetwork(tmp_path / "fork.pt")
