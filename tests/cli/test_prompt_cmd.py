"""`brushwork prompt explain` and `brushwork pnginfo` from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from brushwork.cli.main import app

runner = CliRunner()
INFOTEXT = (
    "a red circle\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: 6ce0161689"
)


def test_explain_json_lists_chunks_and_networks() -> None:
    result = runner.invoke(
        app, ["prompt", "explain", "a (red:1.2) circle <lora:x:0.5>", "--no-library", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["networks"][0]["name"] == "x"
    assert report["parts"][0]["schedule"][0]["chunks"] == 1


def test_explain_table_shows_the_schedule() -> None:
    result = runner.invoke(
        app, ["prompt", "explain", "[cat:dog:3]", "--steps", "6", "--no-library"]
    )
    assert result.exit_code == 0, result.output
    assert "1-3" in result.output and "4-6" in result.output


def _png_with(tmp_path: Path, text: str | None) -> Path:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    path = tmp_path / "image.png"
    path.write_bytes(buffer.getvalue())
    return path


def test_pnginfo_prints_and_parses_a1111_parameters(tmp_path: Path) -> None:
    path = _png_with(tmp_path, INFOTEXT)
    result = runner.invoke(app, ["pnginfo", str(path)])
    assert result.exit_code == 0 and result.output.strip() == INFOTEXT
    parsed = json.loads(runner.invoke(app, ["pnginfo", str(path), "--json"]).output)
    assert parsed["Prompt"] == "a red circle" and parsed["Negative prompt"] == "blurry"
    assert parsed["Sampler"] == "DPM++ 2M" and parsed["Schedule type"] == "Karras"
    assert parsed["Size-1"] == "512" and parsed["Size-2"] == "768"


def test_pnginfo_without_parameters_or_not_an_image(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pnginfo", str(_png_with(tmp_path, None))])
    assert result.exit_code == 1 and "no generation parameters" in result.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    result = runner.invoke(app, ["pnginfo", str(bad)])
    assert result.exit_code == 1 and "not an image" in result.output
