"""`brushwork project ...` through typer: new -> version -> train -> preview -> show/list/best."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner, Result

from brushwork.cli.project_cmd import project_app
from brushwork.core.settings import Settings
from brushwork.generation.xyz_output import read_xyz_record
from brushwork.testing.factory import build_components, write_checkpoint_file

FAST = ["--steps", "2", "--sampler", "Euler", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_checkpoint_file(build_components("sd1"), folder / "tiny.safetensors")
    return root


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()

    @cli.callback()
    def main() -> None:
        """The test app."""

    cli.add_typer(project_app, name="project")
    return cli


def _run(app: typer.Typer, root: Path, *args: str) -> Result:
    settings = Settings(roots=(root,), data_dir=root / "data")
    return CliRunner().invoke(app, ["project", *args], obj=settings)


def _pictures(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            folder / f"{index}.png"
        )
        (folder / f"{index}.txt").write_text("sks, cat")
    return folder


def test_a_project_from_pictures_to_preview_grid(
    app: typer.Typer, root: Path, tmp_path: Path
) -> None:
    pictures = _pictures(tmp_path / "pictures")
    made = _run(
        app,
        root,
        "new",
        "cat",
        "--images",
        str(pictures),
        "--prepare-size",
        "64x64",
        "--repeats",
        "1",
    )
    assert made.exit_code == 0, made.output
    assert "4 pictures" in made.stdout and "project version cat --config" in made.stdout
    assert (root / "projects" / "cat" / "dataset" / "1_cat" / "0.png").is_file()
    options = tmp_path / "run.toml"
    options.write_text(
        'pretrained_model_name_or_path = "tiny"\nresolution = 64\ntrain_batch_size = 2\n'
        "network_dim = 2\nmax_train_epochs = 2\nlearning_rate = 1e-3\nseed = 1\n"
    )
    first = _run(app, root, "version", "cat", "--config", str(options))
    assert first.exit_code == 0, first.output
    second = _run(app, root, "version", "cat", "--from", "v1", "--set", "network_dim=4", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["parent"] == "v1"
    for version in ("v1", "2"):
        trained = _run(app, root, "train", "cat", version)
        assert trained.exit_code == 0, trained.output
        assert "cat-000001.safetensors" in trained.stdout and "2 epochs" in trained.stdout
    again = _run(app, root, "train", "cat", "v1")
    assert again.exit_code == 1 and "already trained" in again.output

    drawn = _run(
        app,
        root,
        "preview",
        "cat",
        "v2",
        "--prompt",
        "sks cat",
        "--weights",
        "0.5,1",
        "--seeds",
        "3",
        *FAST,
        "--json",
    )
    assert drawn.exit_code == 0, drawn.output
    info = json.loads(drawn.stdout)
    grid = Path(info["folder"]) / info["file"]
    record = read_xyz_record(grid.read_bytes())
    assert record is not None and grid.parent.parent.name == "v2"
    assert len([cell for cell in record["cells"] if cell.get("box")]) == 2 * 2 == info["cells"]
    assert [axis["labels"] for axis in record["axes"]] == [
        ["LoRA strength: 0.5", "LoRA strength: 1.0"],
        ["LoRA: cat-000001", "LoRA: cat"],
    ]

    shown = json.loads(_run(app, root, "show", "cat", "--json").stdout)
    assert [v["status"] for v in shown["versions"]] == ["done", "done"]
    assert shown["versions"][1]["files"]["checkpoints"] == [
        "checkpoints/cat-000001.safetensors",
        "checkpoints/cat.safetensors",
    ]
    assert shown["dataset"]["images"] == 4 and shown["dataset"]["subsets"][0]["repeats"] == 1
    listed = json.loads(_run(app, root, "list", "--json").stdout)
    assert [(row["name"], row["versions"]) for row in listed] == [
        ("cat", {"v1": "done", "v2": "done"})
    ]
    text = _run(app, root, "show", "cat")
    assert "v2: done" in text.stdout and "1 previews" in text.stdout

    best = _run(app, root, "best", "cat", "v2", "--json")
    assert best.exit_code == 0, best.output
    answer = json.loads(best.stdout)
    assert answer["method"] == "loss" and answer["epoch"] in (1, 2) and answer["strength"] is None


def test_errors_name_the_problem(app: typer.Typer, root: Path, tmp_path: Path) -> None:
    missing = _run(app, root, "show", "nothing-here", "--projects-dir", str(tmp_path / "none"))
    assert missing.exit_code == 1 and "no project 'nothing-here'" in missing.output
    pictures = _pictures(tmp_path / "pictures")
    home = ["--projects-dir", str(tmp_path / "projects")]
    assert (
        _run(app, root, "new", "dog", "--images", str(pictures), "--no-prepare", *home).exit_code
        == 0
    )
    twice = _run(app, root, "new", "dog", "--images", str(pictures), *home)
    assert twice.exit_code == 1 and "already exists" in twice.output
    no_version = _run(app, root, "train", "dog", "v1", *home)
    assert no_version.exit_code == 1 and "no version 'v1'" in no_version.output
    bad_from = _run(app, root, "version", "dog", "--from", "v4", *home)
    assert bad_from.exit_code == 1 and "no version 'v4'" in bad_from.output
    lonely = _run(app, root, "new", "x", "--images", str(pictures), "--trigger", "sks", *home)
    assert lonely.exit_code == 1 and "--trigger needs --concept" in lonely.output
