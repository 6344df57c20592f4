"""The built-in demo model: shipped, found, the default, and really trained (loose thresholds that
catch a regression; bench/quality.py has the measured figures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from brushwork.cli.main import app
from brushwork.core.settings import Settings
from brushwork.demo.model import DEMO_MODEL_NAME, builtin_roots, demo_model_file
from brushwork.demo.probe import Probe
from brushwork.evaluation.quality import adherence, base_prompt_specs
from brushwork.formats.safeio import read_header
from brushwork.generation import Generator
from brushwork.library.catalog import Library
from brushwork.loading import load_model
from brushwork.prompt import read_image_infotext

pytestmark = pytest.mark.skipif(
    not demo_model_file().is_file(), reason="the demo model is not built in this checkout"
)


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe.load()


@pytest.fixture(scope="module")
def generator() -> Generator:
    return Generator(load_model(demo_model_file(), device="cpu", precision="fp32"))


def _draw(generator: Generator) -> object:
    return lambda request: generator.generate(request).images


def test_the_demo_model_ships_as_a_small_sd1_checkpoint() -> None:
    path = demo_model_file()
    assert path.stat().st_size < 30 * 2**20
    header = read_header(path)
    assert {info.dtype for info in header.tensors.values()} == {"F16"}
    assert "from scratch" in header.metadata["brushwork.training"]
    model = load_model(path, device="cpu", precision="fp32")
    assert model.family.value == "sd1"
    assert model.tokenizers["text_encoder"].vocab_size == 49408  # the real CLIP tokenizer


def test_the_shipped_model_was_built_by_the_shipped_recipe(tmp_path: Path) -> None:
    """`brushwork demo build` is the exact command: the file records the config it ran."""
    import json

    from brushwork.demo.model import TRAINING_CONFIG_FILE
    from brushwork.training.scratch import read_scratch_config, training_record

    recorded = json.loads(read_header(demo_model_file()).metadata["brushwork.training"])
    config = read_scratch_config(
        TRAINING_CONFIG_FILE, {"train_data_dir": tmp_path / "data", "output_dir": tmp_path / "run"}
    )
    assert recorded == json.loads(training_record(config))


def test_it_draws_the_asked_colour_and_shape_well_above_chance(
    generator: Generator, probe: Probe
) -> None:
    """Floors well below what it measures (bench/quality.py: about 90% shape, 90% colour at
    CFG 7) and far above chance (1/8 for the colour, 1/7 for the shape), so that a broken
    conditioning path, sampler or VAE fails."""
    specs = base_prompt_specs(colors=("red", "blue", "yellow", "white"))
    report = adherence(_draw(generator), probe, seeds=[11, 12], specs=specs)  # type: ignore[arg-type]
    assert report.count == 32
    assert report.color >= 0.7, report.as_dict()
    assert report.shape >= 0.7, report.as_dict()
    assert report.shape_and_color >= 0.6, report.as_dict()


def test_an_empty_library_draws_with_the_demo_model(tmp_path: Path, probe: Probe) -> None:
    empty = tmp_path / "empty"
    (empty / "models").mkdir(parents=True)
    settings = Settings(data_dir=tmp_path / "data", builtin_roots=builtin_roots())
    result = CliRunner().invoke(
        app,
        [
            *("generate", "a red circle on a white background", "--root", str(empty)),
            *("--seed", "1", "--out", str(tmp_path / "out"), "--precision", "fp32"),
        ],
        obj=settings,
    )
    assert result.exit_code == 0, result.output
    (png,) = sorted((tmp_path / "out").rglob("*.png"))
    infotext = read_image_infotext(png.read_bytes())
    assert infotext is not None and f"Model: {DEMO_MODEL_NAME}" in infotext
    with Library.open(settings, [empty]) as library:
        names = [e.name for e in library.scan().entries if library.is_builtin(e)]
    assert names == [DEMO_MODEL_NAME]


def test_the_users_own_checkpoint_wins_over_the_demo_model(tmp_path: Path) -> None:
    from brushwork.testing.factory import build_components, write_checkpoint_file

    root = tmp_path / "root"
    write_checkpoint_file(
        build_components("sd1"), root / "models" / "Stable-diffusion" / "mine.safetensors"
    )
    settings = Settings(data_dir=tmp_path / "data", builtin_roots=builtin_roots())
    result = CliRunner().invoke(
        app,
        [
            *("generate", "a cat", "--root", str(root), "--size", "32x32", "--steps", "2"),
            *("--out", str(tmp_path / "out")),
        ],
        obj=settings,
    )
    assert result.exit_code == 0, result.output
    (png,) = sorted((tmp_path / "out").rglob("*.png"))
    assert "Model: mine" in (read_image_infotext(png.read_bytes()) or "")
