"""`brushwork train lora`: options from a TOML, flags and --set; errors before work; a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from brushwork.cli.train_cmd import parse_set_options, train_app
from brushwork.core.errors import ConfigError
from brushwork.core.settings import Settings
from brushwork.formats.safeio import read_header
from brushwork.prompt import read_image_infotext
from brushwork.testing.factory import build_components, write_checkpoint_file


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models") / "models" / "Stable-diffusion"
    root.mkdir(parents=True)
    return write_checkpoint_file(build_components("sd1"), root / "tinybase.safetensors")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "img" / "1_sks cat"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("sks cat", encoding="utf-8")
    return tmp_path / "img"


def test_dry_run_resolves_toml_then_flags_then_set(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[model]\npretrained_model_name_or_path = "a.safetensors"\ntrain_data_dir = "data"\n'
        "network_dim = 8\nlearning_rate = 0.0005\nmade_up_key = 1\n"
    )
    result = CliRunner().invoke(
        train_app,
        ["lora", "--config", str(config), "--network-dim", "16", "--output-name", "mine",
         "--set", "noise_offset=0.05", "--set", 'network_args=["conv_dim=4"]', "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "network_dim = 16" in result.stdout
    assert "learning_rate = 0.0005" in result.stdout and "noise_offset = 0.05" in result.stdout
    assert (
        'output_name = "mine"' in result.stdout and 'network_args = ["conv_dim=4"]' in result.stdout
    )
    assert "unknown option 'made_up_key'" in result.stderr


def test_invalid_options_fail_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        train_app,
        ["lora", "--base", "x.safetensors", "--dataset", str(tmp_path), "--optimizer", "Rocket",
         "--output-dir", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "optimizer_type 'Rocket' is not supported" in result.stderr
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(
        train_app, ["lora", "--base", "x", "--dataset", "d", "--max-steps", "0", "--dry-run"]
    )
    assert result.exit_code == 1 and "max_train_steps or max_train_epochs" in result.stderr


def test_set_values_are_toml_or_plain_strings() -> None:
    assert parse_set_options(["a=1", "b=true", 'c="x y"', "d=hello", "e=[1, 2]"]) == {
        "a": 1, "b": True, "c": "x y", "d": "hello", "e": [1, 2],
    }  # fmt: skip
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_options(["novalue"])


def test_a_run_by_library_name_with_previews(
    checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sks cat --w 64 --h 64 --s 2 --d 3 --ss euler\n")
    out = tmp_path / "out"
    settings = Settings(roots=(checkpoint.parents[1],), data_dir=tmp_path / "data")
    result = CliRunner().invoke(
        train_app,
        ["lora", "--base", "tinybase", "--dataset", str(dataset), "--output-dir", str(out),
         "--output-name", "cat", "--max-steps", "2", "--resolution", "64", "--batch-size", "2",
         "--network-dim", "2", "--sample-prompts", str(prompts), "--sample-every-n-steps", "2"],
        obj=settings,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"saved {out / 'cat.safetensors'}" in result.stdout
    meta = read_header(out / "cat.safetensors").metadata
    assert meta["ss_sd_model_name"] == "tinybase.safetensors" and meta["ss_network_dim"] == "2"
    assert (out / "cat-config.toml").is_file() and (out / "cat-loss.csv").is_file()
    samples = list((out / "sample").glob("cat_000002_00_*_3.png"))
    assert len(samples) == 1
    info = read_image_infotext(samples[0].read_bytes())
    assert info is not None and info.startswith("sks cat\n") and "Seed: 3" in info
    shutil.rmtree(out)
