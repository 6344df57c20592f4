"""`brushwork models list|show|convert|doctor`, driven through the typer sub-app."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from brushwork.cli import models_cmd
from brushwork.cli.models_cmd import models_app
from brushwork.core.settings import Settings
from brushwork.formats.safeio import write_pickle, write_safetensors
from brushwork.library.catalog import Library

LORA_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
LORA = {
    f"{LORA_KEY}.lora_down.weight": torch.ones(4, 768),
    f"{LORA_KEY}.lora_up.weight": torch.ones(320, 4),
    f"{LORA_KEY}.alpha": torch.tensor(4.0),
}
CHECKPOINT = {
    "model.diffusion_model.input_blocks.0.0.weight": torch.ones(8, 4, 3, 3),
    "first_stage_model.encoder.conv_in.weight": torch.ones(8, 3, 3, 3),
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.ones(
        16, 768
    ),
}
SUMMARY_FIELDS = {
    "name",
    "kind",
    "base",
    "path",
    "root",
    "format",
    "size",
    "sha256",
    "autov2",
    "legacy_hash",
    "trigger_words",
    "problems",
}


class _TouchFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def webui(tmp_path: Path) -> Path:
    """An A1111 install with good and bad files side by side."""
    root = tmp_path / "webui"
    lora_dir, ckpt_dir = root / "models/Lora", root / "models/Stable-diffusion"
    lora_dir.mkdir(parents=True)
    ckpt_dir.mkdir(parents=True)
    write_safetensors(lora_dir / "style.safetensors", LORA, {"ss_output_name": "painterly"})
    write_safetensors(lora_dir / os.fsdecode(b"caf\xe9.safetensors"), LORA)  # not UTF-8
    write_safetensors(ckpt_dir / "dream.safetensors", CHECKPOINT)
    write_safetensors(ckpt_dir / "stray-lora.safetensors", LORA)
    (lora_dir / "login.safetensors").write_text("<html><body>Please log in</body></html>")
    (lora_dir / "empty.pt").write_bytes(b"")
    torch.save({"w": _TouchFile(tmp_path / "pwned")}, lora_dir / "evil.ckpt")
    return root


def _run(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(models_app, list(args), obj=settings)


def test_list_json_reports_every_file_and_exits_0(
    settings: Settings, webui: Path, tmp_path: Path
) -> None:
    result = _run(settings, "list", "--root", str(webui), "--json")
    assert result.exit_code == 0, result.output
    listed = {item["name"]: item for item in json.loads(result.stdout)}
    cafe = os.fsdecode(b"caf\xe9")
    assert set(listed) == {"dream", "stray-lora", "style", cafe, "login", "empty", "evil"}
    assert listed[cafe]["kind"] == "lora" and "not valid UTF-8" in listed[cafe]["problems"][0]
    for item in listed.values():
        assert set(item) >= SUMMARY_FIELDS
        assert item["sha256"] is None and item["autov2"] is None  # not hashed without --hash
        assert item["root"] == str(webui)
    assert listed["style"]["kind"] == "lora" and listed["style"]["base"] == "sd1"
    assert listed["style"]["path"] == "models/Lora/style.safetensors"
    assert listed["style"]["problems"] == []
    assert listed["dream"]["kind"] == "checkpoint"
    assert "move it to models/Lora" in listed["stray-lora"]["problems"][0]
    for bad, phrase in (("login", "HTML page"), ("empty", "empty"), ("evil", "posix.system")):
        assert listed[bad]["kind"] == "invalid"
        assert phrase in listed[bad]["problems"][0]
    assert not (tmp_path / "pwned").exists()


def test_list_hash_and_kind(settings: Settings, webui: Path) -> None:
    result = _run(settings, "list", "--root", str(webui), "--kind", "lora", "--hash", "--json")
    assert result.exit_code == 0, result.output
    listed = {item["name"]: item for item in json.loads(result.stdout)}
    # LoRAs wherever they sit, and the bad files of the LoRA folder
    assert set(listed) == {"stray-lora", "style", os.fsdecode(b"caf\xe9"), "login", "empty", "evil"}
    data = (webui / "models/Lora/style.safetensors").read_bytes()
    assert listed["style"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert listed["style"]["autov2"] == hashlib.sha256(data).hexdigest()[:10]
    invalid = _run(settings, "list", "--root", str(webui), "--kind", "invalid", "--json")
    assert {item["name"] for item in json.loads(invalid.stdout)} == {"login", "empty", "evil"}


def test_list_table(settings: Settings, webui: Path) -> None:
    result = _run(settings, "list", "--root", str(webui))
    assert result.exit_code == 0, result.output
    for name in ("dream", "style", "login", "invalid", "caf\ufffd"):
        assert name in result.stdout
    assert "7 files, 3 invalid" in result.stdout


def test_show_finds_by_alias_and_hashes(settings: Settings, webui: Path) -> None:
    result = _run(settings, "show", "painterly", "--root", str(webui), "--json")
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["name"] == "style" and details["alias"] == "painterly"
    assert details["sha256"] is not None and details["addnet_hash"] is not None
    assert details["tensors"]["tensor_count"] == 3
    assert details["reasons"]
    table = _run(settings, "show", "style", "--root", str(webui))
    assert table.exit_code == 0 and "painterly" in table.stdout


def test_show_unknown_name_exits_1_with_suggestions(settings: Settings, webui: Path) -> None:
    result = _run(settings, "show", "styel", "--root", str(webui))
    assert result.exit_code == 1
    assert "no model named 'styel'" in result.stderr
    assert "did you mean 'style'" in result.stderr


def test_convert(settings: Settings, tmp_path: Path) -> None:
    write_pickle(tmp_path / "lora.pt", LORA)
    result = _run(settings, "convert", str(tmp_path / "lora.pt"), "--half")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "cast 3 tensors to fp16" in result.stdout
    again = _run(settings, "convert", str(tmp_path / "lora.pt"))
    assert again.exit_code == 1 and "--force" in again.stderr
    hypernetwork = {768: ({"linear.0.weight": torch.ones(2, 768)},) * 2, "layer_structure": [1, 1]}
    write_pickle(tmp_path / "hn.pt", hypernetwork)
    refused = _run(settings, "convert", str(tmp_path / "hn.pt"))
    assert refused.exit_code == 2 and "hypernetwork" in refused.stderr


def test_doctor(settings: Settings, webui: Path, tmp_path: Path) -> None:
    result = _run(settings, "doctor", "--root", str(webui), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    categories = sorted(f["category"] for f in report["findings"])
    # café is a byte-for-byte copy of stray-lora; style has other metadata, so is no copy
    assert categories == ["duplicate", "invalid", "invalid", "invalid", "misfiled", "warning"]
    clean = tmp_path / "clean"
    (clean / "models/Lora").mkdir(parents=True)
    write_safetensors(clean / "models/Lora/ok.safetensors", LORA)
    healthy = _run(settings, "doctor", "--root", str(clean))
    assert healthy.exit_code == 0 and "no problems found" in healthy.stdout


def test_the_default_root_is_created_on_first_use(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # not a brushwork checkout
    result = _run(settings, "list", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert (settings.data_dir / "models" / "Stable-diffusion").is_dir()
    missing = _run(settings, "list", "--root", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "is not a folder" in missing.stderr


def test_hashing_shows_a_progress_bar_on_a_terminal(
    settings: Settings, webui: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models_cmd, "PROGRESS_MIN_BYTES", 1)  # the fixtures are tiny
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=100)
    with Library.open(settings, [webui]) as library:
        entries = library.scan().entries
        hashed = models_cmd.hash_with_progress(library, entries, console)
    assert all(entry.sha256 for entry in hashed if entry.size)
    assert "hashing" in output.getvalue()
