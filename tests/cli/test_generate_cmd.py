"""`brushwork generate` / `brushwork img2img` through typer, on a tiny library."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner, Result

from brushwork.cli import generate_cmd
from brushwork.core.settings import Settings
from brushwork.prompt import read_image_infotext
from brushwork.testing.factory import build_components, write_checkpoint_file

FAST = ["--size", "32x32", "--steps", "2", "--sampler", "Euler a", "--precision", "fp32"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    checkpoint = root / "models" / "Stable-diffusion" / "tiny.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_checkpoint_file(build_components("sd1"), checkpoint)
    return root


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()
    cli.command("generate")(generate_cmd.generate)
    cli.command("img2img")(generate_cmd.img2img)
    return cli


def _run(app: typer.Typer, tmp_path: Path, *args: str) -> Result:
    settings = Settings(data_dir=tmp_path / "data")
    return CliRunner().invoke(app, list(args), obj=settings)


def _generate(app: typer.Typer, tmp_path: Path, *args: str) -> Result:
    return _run(app, tmp_path, "generate", *args)


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def test_generate_saves_numbered_pngs_and_a_grid(
    app: typer.Typer, root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["a cat", "--root", str(root), "--out", str(out), "--seed", "5", *FAST]
    result = _generate(app, tmp_path, *args, "--batch-size", "2", "--grid")
    assert result.exit_code == 0, result.output
    images = _pngs(out / "txt2img-images")
    assert [p.name for p in images] == ["00000-5.png", "00001-6.png"]
    assert images[0].parent.parent == out / "txt2img-images"  # the dated folder
    assert [p.name for p in _pngs(out / "txt2img-grids")] == ["grid-0000.png"]
    infotext = read_image_infotext(images[1].read_bytes())
    assert infotext is not None and "Seed: 6," in infotext and "Model: tiny," in infotext
    again = _generate(app, tmp_path, *args)
    assert again.exit_code == 0
    assert _pngs(out / "txt2img-images")[-1].name == "00002-5.png"
    assert _pngs(out / "txt2img-images")[-1].read_bytes() == images[0].read_bytes()


def test_from_image_draws_the_same_png(app: typer.Typer, root: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    args = ["[a cat|a dog] AND a hat:0.4", "-n", "blurry", "--cfg", "5.5", "--clip-skip", "2"]
    result = _generate(
        app, tmp_path, *args, "--root", str(root), "--out", str(first), "--seed", "-1", *FAST
    )
    assert result.exit_code == 0, result.output
    (original,) = _pngs(first)
    second = tmp_path / "second"
    result = _generate(
        app, tmp_path, "--from-image", str(original), "--root", str(root), "--out", str(second),
        "--precision", "fp32",  # the dtype is not in the infotext (nor is it in A1111's)
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (redrawn,) = _pngs(second)
    assert redrawn.read_bytes() == original.read_bytes()


def test_from_image_without_infotext_says_so(app: typer.Typer, root: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    result = _generate(app, tmp_path, "--from-image", str(plain), "--root", str(root))
    assert result.exit_code == 1
    assert "carries no generation parameters" in result.output


def test_an_empty_library_says_how_to_add_a_checkpoint(app: typer.Typer, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "models").mkdir(parents=True)
    result = _generate(app, tmp_path, "a cat", "--root", str(empty))
    assert result.exit_code == 1
    assert "no checkpoint in the library" in result.output
    assert "models/Stable-diffusion" in result.output
    assert "brushwork dev tiny-model" in result.output


def test_an_unknown_sampler_lists_the_valid_ones(
    app: typer.Typer, root: Path, tmp_path: Path
) -> None:
    result = _generate(app, tmp_path, "a cat", "--root", str(root), "--sampler", "Euler b")
    assert result.exit_code == 1
    assert "valid samplers: DPM++ 2M" in result.output


def test_img2img_with_a_mask(app: typer.Typer, root: Path, tmp_path: Path) -> None:
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(init)
    mask_image = Image.new("L", (32, 32), 0)
    mask_image.paste(255, (8, 8, 24, 24))
    mask_image.save(mask)
    out = tmp_path / "out"
    args = ["--root", str(root), "--out", str(out), "--seed", "3", "--steps", "2"]
    result = _run(
        app, tmp_path, "img2img", str(init), "a cat", "--mask", str(mask), "--mask-blur", "0",
        "--masked-content", "latent-noise", "--denoise", "0.8", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (saved,) = _pngs(out / "img2img-images")
    assert saved.name == "00000-3.png"
    with Image.open(saved) as image:
        assert image.size == (32, 32)
        assert image.getpixel((2, 2)) == (200, 30, 30)  # outside the mask: the original
        infotext = image.info["parameters"]
    assert "Denoising strength: 0.8," in infotext and "Masked content: latent noise" in infotext


def test_compile_flag_reaches_the_generator(
    app: typer.Typer, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brushwork.generation import unet_runner

    compiled: list[object] = []

    def fake_compile(unet: object, options: object, mode: object) -> object:
        compiled.append((options, mode))
        return unet

    monkeypatch.setattr(unet_runner, "_compile", fake_compile)
    args = ["a cat", "--root", str(root), "--out", str(tmp_path / "o"), "--compile", *FAST]
    result = _generate(app, tmp_path, *args)
    assert result.exit_code == 0, result.output
    assert len(compiled) == 1
    assert "it/s" in result.output


def test_ctrl_c_first_stops_at_the_next_step_then_at_once() -> None:
    import signal
    import threading

    from rich.console import Console

    cancel = threading.Event()
    with generate_cmd.ctrl_c_stops(cancel, Console(file=None, quiet=True)):
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)
        assert cancel.is_set()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is not handler  # the previous handler is back


def test_compile_setting_turns_on_the_compiled_path_like_the_flag() -> None:
    from dataclasses import replace as _replace

    from brushwork.cli.generate_cmd import CommonOptions, with_settings
    from brushwork.core.settings import Settings

    fields = dict.fromkeys(CommonOptions.__dataclass_fields__)
    options = CommonOptions(**(fields | {"compile": False, "roots": ()}))  # type: ignore[arg-type]
    assert with_settings(options, Settings(compile_unet=True)).compile is True
    assert with_settings(options, Settings()).compile is False
    assert with_settings(_replace(options, compile=True), Settings()).compile is True
