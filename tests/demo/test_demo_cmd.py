"""`brushwork demo dataset|probe`, driven through the typer sub-app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from brushwork.cli.demo_cmd import demo_app
from brushwork.demo.shapes import ShapeSpec, caption

runner = CliRunner()


def test_dataset_command_writes_a_kohya_folder(tmp_path: Path) -> None:
    result = runner.invoke(
        demo_app, ["dataset", str(tmp_path), "--shapes", "heart,cross", "--count", "4", "--seed", "2",
                   "--repeats", "3", "--trigger", "sks", "--size", "32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "3_sks"
    assert f"wrote 4 pictures with captions to {folder}" in result.output
    captions = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))]
    assert len(captions) == 4 and all(" sks on " in text for text in captions)
    assert len(list(folder.glob("*.png"))) == 4


def test_dataset_command_names_an_unknown_shape(tmp_path: Path) -> None:
    result = runner.invoke(demo_app, ["dataset", str(tmp_path), "--shapes", "circle,blob"])
    assert result.exit_code == 1
    assert "unknown shape 'blob'" in result.output
    assert not any(tmp_path.iterdir())


def test_probe_command_reads_what_the_dataset_command_drew(tmp_path: Path) -> None:
    runner.invoke(
        demo_app, ["dataset", str(tmp_path), "--shapes", "all", "--count", "7", "--seed", "5"]
    )
    images = sorted((tmp_path / "10_shapes").glob("*.png"))
    result = runner.invoke(demo_app, ["probe", *map(str, images), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    for row, image in zip(rows, images, strict=True):
        said = caption(ShapeSpec(row["shape"], row["color"], row["background"]))
        assert image.with_suffix(".txt").read_text(encoding="utf-8") == said
        assert row["confident"] is True


def test_probe_command_prints_one_line_per_picture_and_flags_blanks(tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (245, 245, 245)).save(blank)
    result = runner.invoke(demo_app, ["probe", str(blank)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{blank}: ") and "[unsure" in result.output


def test_probe_command_refuses_a_file_that_is_not_a_picture(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    result = runner.invoke(demo_app, ["probe", str(text)])
    assert result.exit_code == 1
    assert "notes.txt: cannot be read as a picture" in result.output


def test_demo_build_runs_the_shipped_recipe(tmp_path: Path) -> None:
    """A few steps of each stage: the shipped config is valid and runs end to end; the full
    recipe is what built the shipped model (its file records the same config)."""
    from brushwork.cli.main import app
    from brushwork.loading import load_model

    result = CliRunner().invoke(
        app,
        [
            *("demo", "build", str(tmp_path), "--count", "16", "--vae-steps", "1"),
            *("--max-train-steps", "1"),
        ],
    )
    assert result.exit_code == 0, result.output
    built = tmp_path / "run" / "shapes-sd1.safetensors"
    model = load_model(built, device="cpu", precision="fp32")
    assert model.native_size == 64
