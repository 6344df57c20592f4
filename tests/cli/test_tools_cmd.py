"""`brushwork merge` and `brushwork lora merge|extract|resize|combine`, through typer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from brushwork.cli.tools_cmd import lora_app, merge
from brushwork.formats.lora import LoraModule, LoraNetwork, read_lora, write_lora
from brushwork.testing.factory import Components, build_components, write_checkpoint_file

app = typer.Typer()
app.command("merge")(merge)
app.add_typer(lora_app, name="lora")


def _lora(components: Components, seed: int, rank: int = 8) -> LoraNetwork:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, layer in components.unet.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(("to_q", "to_v")):
            down = torch.randn(rank, layer.in_features, generator=generator) * 0.1
            up = torch.randn(layer.out_features, rank, generator=generator) * 0.1
            modules[f"unet.{name}"] = LoraModule.lora(f"unet.{name}", down, up, float(rank))
    return LoraNetwork(modules)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An A1111 install with checkpoints a, b, c (SD1), xl (SDXL) and LoRAs style, detail."""
    root = tmp_path_factory.mktemp("webui")
    checkpoints = root / "models" / "Stable-diffusion"
    loras = root / "models" / "Lora"
    checkpoints.mkdir(parents=True)
    loras.mkdir()
    base = build_components("sd1", seed=1)
    for seed, name in ((1, "a"), (2, "b"), (3, "c")):
        write_checkpoint_file(
            build_components("sd1", seed=seed), checkpoints / f"{name}.safetensors"
        )
    write_checkpoint_file(build_components("sdxl"), checkpoints / "xl.safetensors")
    write_lora(loras / "style.safetensors", _lora(base, 1), family="sd1")
    write_lora(loras / "detail.safetensors", _lora(base, 2, rank=4), family="sd1")
    return root


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRUSHWORK_HOME", str(tmp_path / "home"))


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args])
    return result.exit_code, result.stdout, result.stderr


def test_merge_by_library_names_lands_in_the_checkpoint_folder(root: Path) -> None:
    code, out, _ = _run("merge", "a", "b", "--alpha", "0.5", "--out", "ab", "--root", str(root))
    assert code == 0, out
    target = root / "models" / "Stable-diffusion" / "ab.safetensors"
    assert f"wrote {target}" in out
    assert (target.with_suffix(".json")).is_file()
    a = load_file(root / "models" / "Stable-diffusion" / "a.safetensors")
    b = load_file(root / "models" / "Stable-diffusion" / "b.safetensors")
    key = "model.diffusion_model.out.2.weight"
    torch.testing.assert_close(load_file(target)[key], (a[key] + b[key]) / 2, rtol=0, atol=1e-6)


def test_merge_add_difference_with_options_reports_json(root: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "diff.safetensors"
    code, out, _ = _run(
        "merge", "a", "b", "c", "--method", "add-difference", "-M", "1", "--precision", "fp16",
        "--text-encoder-from", "A", "--prune", "--out", str(out_path), "--root", str(root), "--json",
    )  # fmt: skip
    assert code == 0, out
    result = json.loads(out)
    assert result["recipe"]["interp_method"] == "Add difference"
    assert result["recipe"]["text_encoder_from"] == "A"
    assert result["copied"] > 0 and result["merged"] > 0
    assert {t.dtype for t in load_file(out_path).values()} == {torch.float16}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a", "b", "--method", "add-difference"), "needs a third model C"),
        (("a", "xl"), "cannot be merged"),
        (("a", "b", "--block-weights", "1,2,3"), "3 block weights given"),
        (("a", "nothing"), "nothing"),
    ],
)
def test_merge_errors_are_one_line_and_exit_1(
    root: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, _, err = _run("merge", *args, "--out", str(tmp_path / "x"), "--root", str(root))
    assert code == 1
    assert err.startswith("error:") and message in err
    assert not (tmp_path / "x.safetensors").exists()


def test_lora_merge_bakes_into_a_new_checkpoint(root: Path) -> None:
    code, out, _ = _run(
        "lora", "merge", "a", "style:0.5", "detail", "--out", "a-styled", "--root", str(root)
    )
    assert code == 0, out
    assert "style: 16 unet modules merged" in out and "detail: 16 unet modules merged" in out
    baked = root / "models" / "Stable-diffusion" / "a-styled.safetensors"
    recipe = json.loads(baked.with_suffix(".json").read_text())["recipe"]
    assert [(lora["name"], lora["weight"]) for lora in recipe["loras"]] == [
        ("style.safetensors", 0.5),
        ("detail.safetensors", 1.0),
    ]


def test_lora_extract_names_its_output_and_says_the_text_encoder_was_skipped(
    root: Path,
) -> None:
    # a-styled (from the test above, or made here) is a + LoRA: its text encoder is a's
    if not (root / "models" / "Stable-diffusion" / "a-styled.safetensors").exists():
        _run("lora", "merge", "a", "style:0.5", "detail", "--out", "a-styled", "--root", str(root))
    code, out, _ = _run(
        "lora", "extract", "a-styled", "a", "--dim", "4", "--dynamic", "sv_fro", "0.99",
        "--root", str(root),
    )  # fmt: skip
    assert code == 0, out
    target = root / "models" / "Lora" / "a-styled-lora-dim4.safetensors"
    assert f"wrote {target}" in out
    assert "text_encoder is the same as the base's" in out
    assert read_lora(target).metadata["ss_sd_model_name"] == "a.safetensors"


def test_lora_resize_writes_beside_the_input_and_reports_per_layer(root: Path) -> None:
    style = root / "models" / "Lora" / "style.safetensors"
    before = style.read_bytes()
    code, out, _ = _run("lora", "resize", "style", "--dim", "2", "-v", "--root", str(root))
    assert code == 0, out
    assert "8 -> 2" in out and "mean retained Frobenius norm" in out
    assert read_lora(style.with_name("style-dim2.safetensors")).metadata["ss_network_dim"] == "2"
    assert style.read_bytes() == before
    code, _, err = _run("lora", "resize", "style", "--dim", "2", "--root", str(root))
    assert code == 1 and "already exists" in err


def test_lora_combine_concatenates_or_reduces(root: Path) -> None:
    code, out, _ = _run(
        "lora", "combine", "style:0.5", "detail:-1", "--out", "both", "--root", str(root)
    )
    assert code == 0, out
    assert "ranks 12..12" in out
    code, out, _ = _run(
        "lora", "combine", "style", "detail", "--out", "both-4", "--dim", "4", "--root", str(root)
    )
    assert code == 0 and "ranks 4..4" in out
    code, _, err = _run(
        "lora", "combine", "style", "--out", "x", "--dynamic", "sv_fro", "0.9", "--root", str(root)
    )
    assert code == 1 and "need --dim" in err


def test_an_unknown_dynamic_method_is_an_error(root: Path) -> None:
    code, _, err = _run(
        "lora", "resize", "style", "--dim", "2", "--dynamic", "sv_max", "2", "--root", str(root)
    )
    assert code == 1 and "unknown dynamic method 'sv_max'" in err
