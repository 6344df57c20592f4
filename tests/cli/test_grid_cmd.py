"""`brushwork grid` and `brushwork grid lora-epochs` through typer, on a tiny library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner, Result

from brushwork.cli.grid_cmd import grid_app
from brushwork.core.settings import Settings
from brushwork.formats.lora import LoraModule, LoraNetwork, write_lora
from brushwork.generation.xyz_output import read_xyz_record
from brushwork.prompt import parse_infotext, read_image_infotext
from brushwork.testing.factory import Components, build_components, write_checkpoint_file

FAST = ["--size", "32x32", "--steps", "2", "--sampler", "Euler", "--precision", "fp32"]


@pytest.fixture(scope="module")
def components() -> Components:
    return build_components("sd1")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, components: Components) -> Path:
    root = tmp_path_factory.mktemp("root")
    checkpoint = root / "models" / "Stable-diffusion" / "tiny.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_checkpoint_file(components, checkpoint)
    return root


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()

    @cli.callback()
    def main() -> None:
        """The test app."""

    cli.add_typer(grid_app, name="grid")
    return cli


def _grid(app: typer.Typer, tmp_path: Path, *args: str) -> Result:
    settings = Settings(data_dir=tmp_path / "data")
    return CliRunner().invoke(app, ["grid", *args], obj=settings)


def _lora(components: Components, seed: int) -> LoraNetwork:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, module in components.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_v")):
            target = f"unet.{name}"
            down = torch.randn(4, module.in_features, generator=generator) * 0.3
            up = torch.randn(module.out_features, 4, generator=generator) * 0.3
            modules[target] = LoraModule.lora(target, down, up, 4.0)
    return LoraNetwork(modules)


def test_a_steps_by_cfg_grid_with_its_cells(app: typer.Typer, root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _grid(
        app, tmp_path, "a cat", "--x-type", "steps", "--x-values", "2,3", "--y-type", "CFG Scale",
        "--y-values", "5-9 (+4)", "--root", str(root), "--out", str(out), "--keep-cells",
        "--size", "32x32", "--sampler", "Euler", "--precision", "fp32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (grid,) = sorted((out / "txt2img-grids").rglob("*.png"))
    assert grid.name == "xyz_grid-0000.png"
    record = read_xyz_record(grid.read_bytes())
    assert record is not None
    assert record == json.loads(grid.with_suffix(".json").read_text())
    labels = [axis["labels"] for axis in record["axes"]]
    assert labels == [["Steps: 2", "Steps: 3"], ["CFG Scale: 5.0", "CFG Scale: 9.0"]]
    parameters = read_image_infotext(grid.read_bytes())
    assert parameters is not None and "X Type: Steps" in parameters
    cells = sorted((out / "txt2img-images").rglob("*.png"))
    assert len(cells) == 4
    kept = {read_image_infotext(path.read_bytes()) for path in cells}
    assert kept == {cell["infotext"] for cell in record["cells"]}
    seeds = {parse_infotext(text or "")["Seed"] for text in kept}
    assert len(seeds) == 1  # a random seed, drawn once for every cell


def test_the_general_form_takes_options_before_the_prompt(
    app: typer.Typer, root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _grid(
        app, tmp_path, "xyz", "--x-type", "Prompt S/R", "--x-values", "cube, ball",
        "a red cube", "--root", str(root), "--out", str(out), "--seed", "4", *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (grid,) = sorted(out.rglob("*.png"))
    record = read_xyz_record(grid.read_bytes())
    assert record is not None
    prompts = [cell["infotext"].split("\n")[0] for cell in record["cells"]]
    assert prompts == ["a red cube", "a red ball"]


def test_lora_epochs_rows_are_the_runs_files_in_order(
    app: typer.Typer, root: Path, tmp_path: Path, components: Components
) -> None:
    run = tmp_path / "output"
    run.mkdir()
    for seed, stem in enumerate(["look-000002", "look", "look-000001"]):
        write_lora(
            run / f"{stem}.safetensors",
            _lora(components, seed),
            family="sd1",
            unet_config=dict(components.unet.config),
        )
    out = tmp_path / "out"
    result = _grid(
        app, tmp_path, "lora-epochs", str(run), "--prompt", "a cat", "--strengths", "0,1",
        "--seed", "3", "--root", str(root), "--out", str(out), *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (grid,) = sorted(out.rglob("*.png"))
    record = read_xyz_record(grid.read_bytes())
    assert record is not None
    strengths, epochs = record["axes"]
    assert epochs["labels"] == ["LoRA: look-000001", "LoRA: look-000002", "LoRA: look"]
    assert strengths["labels"] == ["LoRA strength: 0.0", "LoRA strength: 1.0"]
    texts = [cell["infotext"] for cell in record["cells"]]
    assert all("Seed: 3," in text for text in texts)
    assert 'Extra LoRAs: "look-000002:1"' in texts[3]


def test_bad_axes_and_names_are_errors(app: typer.Typer, root: Path, tmp_path: Path) -> None:
    common = ["--root", str(root), "--out", str(tmp_path / "out"), *FAST]
    wrong_type = _grid(app, tmp_path, "a cat", "--x-type", "cfgg", "--x-values", "5", *common)
    assert wrong_type.exit_code == 1
    assert "unknown axis type 'cfgg'; valid types: seed" in wrong_type.output
    wrong_name = _grid(
        app, tmp_path, "a cat", "--x-type", "checkpoint", "--x-values", "tiny,tinny", *common
    )
    assert wrong_name.exit_code == 1
    assert "no model named 'tinny'" in wrong_name.output and "'tiny'" in wrong_name.output
    no_axis = _grid(app, tmp_path, "a cat", *common)
    assert no_axis.exit_code == 1 and "no axis given" in no_axis.output
    no_run = _grid(app, tmp_path, "lora-epochs", str(tmp_path / "nowhere"), "-p", "x", *common)
    assert no_run.exit_code == 1 and "no such folder or file" in no_run.output
    assert not (tmp_path / "out").exists()
