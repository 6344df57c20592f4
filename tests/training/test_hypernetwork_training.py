"""Hypernetwork training on a tiny SD1 model: A1111 file, frozen UNet, effect, resume."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.formats.hypernetwork import read_hypernetwork
from brushwork.loading import load_model
from brushwork.patching.hypernetwork import HypernetworkApplication, apply_hypernetworks
from brushwork.training.hypernetwork import HypernetworkTrainingConfig, train_hypernetwork
from brushwork.training.template_training import resolve_options

from .test_textual_inversion import fingerprint, flat_image_folder, folder_snapshot, log_rows


def hn_config(base: Path, data: Path, output: Path, **options: Any) -> HypernetworkTrainingConfig:
    values: dict[str, Any] = {
        "pretrained_model_name_or_path": str(base),
        "train_data_dir": str(data),
        "output_dir": str(output),
        "output_name": "grain",
        "resolution": 64,
        "train_batch_size": 2,
        "max_train_steps": 4,
        "learning_rate": "1e-3",
        "save_every_n_steps": 2,
        "layer_structure": "1, 2, 1",
        "activation_func": "relu",
        "is_layer_norm": True,
        "seed": 5,
    }
    config, _ = resolve_options(HypernetworkTrainingConfig, values | options)
    return config


def unet_output(model: Any, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 8, 8, generator=gen)
    width = model.unet.config.cross_attention_dim
    context = torch.randn(1, 77, width, generator=gen)
    with torch.no_grad():
        out: torch.Tensor = model.unet(
            sample, torch.tensor([500]), encoder_hidden_states=context
        ).sample
    return out


def test_trains_a1111_hypernetwork_with_the_unet_frozen(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    model = load_model(tiny_checkpoint, device="cpu", precision="fp32", vae="none")
    for module in model.modules().values():
        module.requires_grad_(False)
    context_width = model.unet.config.cross_attention_dim
    before = fingerprint(model)
    base_out = unet_output(model)
    outcome = train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "out"), tiny_checkpoint, model=model
    )
    assert fingerprint(model) == before
    assert torch.equal(unet_output(model), base_out)  # wrappers removed

    assert [p.name for p in outcome.result.saved_files] == ["grain-2.pt", "grain.pt"]
    hn = read_hypernetwork(tmp_path / "out" / "grain.pt")
    assert hn.step == 4 and read_hypernetwork(tmp_path / "out" / "grain-2.pt").step == 2
    assert hn.layer_structure == [1.0, 2.0, 1.0] and hn.activation_func == "relu"
    assert hn.is_layer_norm and hn.sd_checkpoint is not None
    assert hn.sd_checkpoint_name == tiny_checkpoint.stem
    assert context_width in hn.widths
    with apply_hypernetworks(model.unet, [HypernetworkApplication(hn, 1.0)]) as report:
        assert report.attentions["grain"] > 0
        changed = unet_output(model)
    assert not torch.allclose(changed, base_out)


def test_hypernetwork_resume_matches_one_run(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = flat_image_folder(tmp_path / "data")
    whole = train_hypernetwork(hn_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "b", save_state=True), tiny_checkpoint
    )
    resumed = train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "c", resume=tmp_path / "b" / "grain-2-state"),
        tiny_checkpoint,
    )
    one = read_hypernetwork(whole.result.final_file)
    two = read_hypernetwork(resumed.result.final_file)
    for width, (k, v) in one.layers.items():
        for key in k:
            assert torch.allclose(k[key], two.layers[width][0][key], atol=1e-6)
            assert torch.allclose(v[key], two.layers[width][1][key], atol=1e-6)


def test_create_options_reach_the_file_and_weights_continue_it(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    first = train_hypernetwork(
        hn_config(
            tiny_checkpoint,
            data,
            tmp_path / "a",
            layer_structure="1, 1.5, 1",
            use_dropout=True,
            dropout_structure="0, 0.3, 0",
            weight_initialization="XavierNormal",
            enable_sizes="32",
            max_train_steps=2,
        ),
        tiny_checkpoint,
    )
    made = read_hypernetwork(first.result.final_file)
    assert made.layer_structure == [1.0, 1.5, 1.0] and made.use_dropout
    assert (
        made.dropout_structure == [0.0, 0.3, 0.0] and made.weight_initialization == "XavierNormal"
    )
    assert list(made.widths) == [32] and made.is_layer_norm
    again = train_hypernetwork(
        hn_config(
            tiny_checkpoint,
            data,
            tmp_path / "b",
            weights=str(first.result.final_file),
            learning_rate="0",
            max_train_steps=3,  # the file is at step 2: one more step
        ),
        tiny_checkpoint,
    )
    continued = read_hypernetwork(again.result.final_file)
    assert continued.step == 3 and again.result.start_step == 2
    assert continued.layer_structure == [1.0, 1.5, 1.0]  # the file's own structure
    for width, (k, v) in made.layers.items():
        assert all(torch.equal(k[key], continued.layers[width][0][key]) for key in k)
        assert all(torch.equal(v[key], continued.layers[width][1][key]) for key in v)


def same_layers(one: Any, two: Any) -> bool:
    return all(
        torch.equal(one.layers[width][i][key], two.layers[width][i][key])
        for width in one.layers
        for i in (0, 1)
        for key in one.layers[width][i]
    )


def test_continued_hypernetwork_counts_on_from_its_own_step(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A1111: `initial_step = hypernetwork.step`; max steps is the absolute step to stop at, the
    schedule is read at the absolute step, and saves carry it."""
    data = flat_image_folder(tmp_path / "data")
    first = train_hypernetwork(hn_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    start = read_hypernetwork(first.result.final_file)
    assert start.step == 4
    config = hn_config(
        tiny_checkpoint,
        data,
        tmp_path / "b",
        weights=str(first.result.final_file),
        max_train_steps=7,
        learning_rate="1e-3:5, 1e-4",  # step 5 at 1e-3, steps 6 and 7 at 1e-4
    )
    outcome = train_hypernetwork(config, tiny_checkpoint)
    assert (outcome.result.start_step, outcome.result.steps) == (4, 7)
    assert [p.name for p in outcome.result.saved_files] == ["grain-6.pt", "grain.pt"]
    final = read_hypernetwork(tmp_path / "b" / "grain.pt")
    assert final.step == 7 and read_hypernetwork(tmp_path / "b" / "grain-6.pt").step == 6
    assert not same_layers(final, start)
    rows = log_rows(outcome.result.log_csv)
    assert [int(row["step"]) for row in rows] == [5, 6, 7]
    assert [float(row["lr/hypernetwork"]) for row in rows] == [1e-3, 1e-4, 1e-4]


def test_hypernetwork_at_max_steps_is_refused_and_nothing_is_written(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    first = train_hypernetwork(
        hn_config(tiny_checkpoint, data, tmp_path / "a", max_train_steps=2), tiny_checkpoint
    )
    folder = tmp_path / "hn"  # continued in place: a write would overwrite the file
    folder.mkdir()
    shutil.copy(first.result.final_file, folder / "grain.pt")
    before = folder_snapshot(folder)
    for max_steps in (2, 1):
        config = hn_config(
            tiny_checkpoint, data, folder, weights=str(folder / "grain.pt"),
            max_train_steps=max_steps,
        )  # fmt: skip
        message = f"already trained to step 2, at or beyond max_train_steps \\({max_steps}\\)"
        with pytest.raises(ConfigError, match=message) as raised:
            train_hypernetwork(config, tiny_checkpoint)
        assert "nothing was trained and nothing was written" in str(raised.value)
        assert folder_snapshot(folder) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layer_structure": "2, 2, 1"}, "must start and end with 1"),
        ({"dropout_structure": "0, 0.3, 0"}, "use_dropout is false"),
        ({"use_dropout": True, "dropout_structure": "0, 0.3"}, "one value per"),
    ],
)
def test_bad_create_options_fail_before_work(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        hn_config(tmp_path / "m.safetensors", tmp_path, tmp_path / "o", **options)


def test_cli_reads_a1111_names_from_toml_and_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brushwork.cli.train_cmd import train_app

    toml = tmp_path / "hn.toml"
    toml.write_text(
        'pretrained_model_name_or_path = "m.safetensors"\ntrain_data_dir = "d"\n'
        'layer_structure = "1, 2, 2, 1"\nactivation_func = "swish"\nenable_sizes = "768, 320"\n'
        'learning_rate = "5e-5:100, 1e-5"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        train_app,
        ["hypernetwork", "--config", str(toml), "--layer-norm", "--dropout-structure",
         "0, 0.1, 0.1, 0", "--weight-initialization", "KaimingUniform", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for line in (
        "layer_structure = [1.0, 2.0, 2.0, 1.0]",
        'activation_func = "swish"',
        'enable_sizes = "768,320"',  # two numbers are written like a resolution; read back
        "is_layer_norm = true",
        "use_dropout = true",
        "dropout_structure = [0.0, 0.1, 0.1, 0.0]",
        'weight_initialization = "KaimingUniform"',
        'learning_rate = "5e-5:100, 1e-5"',
    ):
        assert line in result.stdout
