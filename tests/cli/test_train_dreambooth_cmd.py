"""`brushwork train dreambooth create` then `brushwork train dreambooth --config`: a project
from a checkpoint, class images generated with the base model, a trained A1111 checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from brushwork.cli.train_cmd import train_app
from brushwork.formats.safeio import read_header
from brushwork.prompt import read_image_infotext
from brushwork.testing.factory import build_components, write_checkpoint_file


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    return write_checkpoint_file(build_components("sd1"), folder / "tinybase.safetensors")


def create(checkpoint: Path, projects: Path, *extra: str) -> Path:
    result = CliRunner().invoke(
        train_app,
        ["dreambooth", "create", "rex", "--from", str(checkpoint), "--dir", str(projects),
         "--token", "ohwx", "--class-word", "dog", "--repeats", "1", "--resolution", "64",
         "--num-class-images", "2", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = projects / "rex" / "config.toml"
    assert f"next: brushwork train dreambooth --config {config}" in result.stdout
    return config


def test_create_then_train_generates_class_images_and_saves_a_checkpoint(
    checkpoint: Path, tmp_path: Path
) -> None:
    config = create(checkpoint, tmp_path)
    instance = tmp_path / "rex" / "img" / "1_ohwx dog"
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(instance / f"{i}.png")
    prompts = tmp_path / "prompts.txt"  # the project's own prompts take 20 steps
    prompts.write_text("ohwx dog --w 64 --h 64 --s 2 --d 5\ndog --w 64 --h 64 --s 2 --d 5\n")
    result = CliRunner().invoke(
        train_app,
        [
            "dreambooth",
            "--config",
            str(config),
            "--max-steps",
            "2",
            "--sample-every-n-steps",
            "2",
            "--sample-prompts",
            str(prompts),
            "--set",
            "class_infer_steps=2",
            "--set",
            "sample_sampler='euler'",
            "--set",
            "save_every_n_steps=5",
            "--set",
            "cache_latents=false",
        ],
    )  # fmt: skip  (the tiny VAE's latents are not 1/8 size, which latent caching expects)
    assert result.exit_code == 0, result.output
    assert "class 'dog': 0 of 2 images" in result.stderr and "generated 2 class images" in (
        result.stderr
    )
    class_images = sorted((tmp_path / "rex" / "reg" / "1_dog").glob("*.png"))
    assert [p.name for p in class_images] == ["class-00000.png", "class-00001.png"]
    info = read_image_infotext(class_images[1].read_bytes())
    assert info is not None and info.startswith("dog\n") and "Steps: 2" in info
    assert "Seed: 1235" in info  # the project's seed 1234, image 1
    final = tmp_path / "rex" / "output" / "rex.safetensors"
    assert f"saved {final}" in result.stdout
    meta = read_header(final).metadata
    assert meta["ss_num_reg_images"] == "2" and meta["modelspec.title"] == "rex"
    assert len(list((tmp_path / "rex" / "output" / "sample").glob("rex_000002_*.png"))) == 2


def test_dry_run_shows_options_and_missing_class_images(checkpoint: Path, tmp_path: Path) -> None:
    config = create(checkpoint, tmp_path)
    result = CliRunner().invoke(
        train_app,
        ["dreambooth", "--config", str(config), "--learning-rate-te", "1e-6",
         "--no-train-text-encoder", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "learning_rate_te = 1e-06" in result.stdout
    assert "train_text_encoder = false" in result.stdout
    assert "class 'dog': 0 of 2 images" in result.stderr and "2 to generate" in result.stderr


def test_errors_exit_1_with_the_reason(checkpoint: Path, tmp_path: Path) -> None:
    create(checkpoint, tmp_path)
    again = CliRunner().invoke(
        train_app,
        ["dreambooth", "create", "rex", "--from", str(checkpoint), "--dir", str(tmp_path)],
    )
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = CliRunner().invoke(
        train_app,
        ["dreambooth", "--base", str(checkpoint), "--dataset", str(tmp_path),
         "--num-class-images", "5"],
    )  # fmt: skip
    assert bad.exit_code == 1 and "num_class_images needs reg_data_dir" in bad.stderr
