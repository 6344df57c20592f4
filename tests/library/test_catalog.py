"""Scanning a library: every kind in each layout, misfiled and invalid files, odd file names."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core.kinds import BaseFamily, FileFormat, ModelKind
from brushwork.core.settings import Settings
from brushwork.formats.safeio import write_safetensors
from brushwork.library.catalog import Library, LibraryScan

from .conftest import place, write_lora

SD1 = BaseFamily.SD1
A1111_FILES = {
    "models/Stable-diffusion/sub/dream.safetensors": ("checkpoint", SD1, "safetensors"),
    "models/Stable-diffusion/old.ckpt": ("checkpoint", SD1, "pickle"),
    "models/Stable-diffusion/dream.vae.safetensors": ("vae", None, "safetensors"),
    "models/VAE/ft-mse.pt": ("vae", None, "pickle"),
    "models/Lora/style.safetensors": ("lora", SD1, "safetensors"),
    "models/LyCORIS/locon.safetensors": ("lora", SD1, "safetensors"),
    "models/hypernetworks/anime.pt": ("hypernetwork", SD1, "pickle"),
    "embeddings/bad-hands.pt": ("embedding", SD1, "pickle"),
    "embeddings/kohya.safetensors": ("embedding", SD1, "safetensors"),
}
COMFYUI_FILES = {
    "models/checkpoints/dream.safetensors": ("checkpoint", SD1, "safetensors"),
    "models/vae/ft-mse.safetensors": ("vae", None, "safetensors"),
    "models/loras/style.safetensors": ("lora", SD1, "safetensors"),
    "models/embeddings/bad-hands.pt": ("embedding", SD1, "pickle"),
    "models/hypernetworks/anime.pt": ("hypernetwork", SD1, "pickle"),
}


def _scan(settings: Settings, *roots: Path) -> LibraryScan:
    with Library.open(settings, roots) as library:
        return library.scan()


def _by_path(scan: LibraryScan) -> dict[str, Any]:
    return {entry.relative_path: entry for entry in scan.entries}


@pytest.mark.parametrize("files", [A1111_FILES, COMFYUI_FILES], ids=["a1111", "comfyui"])
def test_each_kind_in_each_layout_is_identified(
    files: dict[str, tuple[str, Any, str]], settings: Settings, root: Path
) -> None:
    for relative, (kind, _base, _fmt) in files.items():
        place(root, relative, kind)
    found = _by_path(_scan(settings, root))
    assert set(found) == set(files)
    for relative, (kind, base, fmt) in files.items():
        entry = found[relative]
        assert (entry.kind, entry.base, entry.format) == (ModelKind(kind), base, FileFormat(fmt))
        assert entry.problems == (), relative
        assert entry.name == Path(relative).name.rsplit(".", 1)[0]


def test_several_roots_combine(settings: Settings, tmp_path: Path) -> None:
    a1111, comfy = tmp_path / "webui", tmp_path / "comfy"
    place(a1111, "models/Lora/one.safetensors", "lora")
    place(comfy, "models/loras/two.safetensors", "lora")
    scan = _scan(settings, a1111, comfy)
    assert [(e.root, e.name) for e in scan.entries] == [(a1111, "one"), (comfy, "two")]


def test_a_lora_among_checkpoints_is_listed_with_a_warning(settings: Settings, root: Path) -> None:
    place(root, "models/Stable-diffusion/actually-a-lora.safetensors", "lora")
    place(root, "models/Lora/actually-a-checkpoint.safetensors", "checkpoint")
    lora, checkpoint = _scan(settings, root).entries
    assert lora.kind is ModelKind.LORA
    assert lora.problems == (
        "is a LoRA but sits in models/Stable-diffusion (the checkpoint folder), where it will "
        "not be used as a LoRA: move it to models/Lora",
    )
    assert checkpoint.kind is ModelKind.CHECKPOINT
    assert "move it to models/Stable-diffusion" in checkpoint.problems[0]


def test_a_checkpoint_named_like_a_vae_is_flagged(settings: Settings, root: Path) -> None:
    place(root, "models/Stable-diffusion/x.vae.safetensors", "checkpoint")
    (entry,) = _scan(settings, root).entries
    assert entry.kind is ModelKind.CHECKPOINT
    assert "rename it without .vae" in entry.problems[0]


class _TouchFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


def _write_bad_files(folder: Path, marker: Path) -> dict[str, str]:
    """Files that are not usable models, and a phrase each one's reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "login.safetensors").write_text("<!DOCTYPE html><html>Sign in</html>")
    (folder / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    (folder / "empty.ckpt").write_bytes(b"")
    write_lora(folder / "full.safetensors")
    (folder / "truncated.safetensors").write_bytes((folder / "full.safetensors").read_bytes()[:-9])
    (folder / "full.safetensors").unlink()
    torch.save({"state_dict": {"x": _TouchFile(marker)}}, folder / "evil.ckpt")
    (folder / "evil-raw.pt").write_bytes(pickle.dumps(_TouchFile(marker)))
    write_safetensors(folder / "random.safetensors", {"weights": torch.zeros(2, 2, 2)})
    return {
        "login": "HTML page",
        "lfs": "Git-LFS pointer",
        "empty": "empty (0 bytes)",
        "truncated": "truncated",
        "evil": "posix.system",
        "evil-raw": "posix.system",
        "random": "",  # the reason is formats.detect's; only its type is checked here
    }


def test_bad_files_are_invalid_with_reasons_and_never_run(
    settings: Settings, root: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    reasons = _write_bad_files(root / "models/Lora", marker)
    place(root, "models/Lora/good.safetensors", "lora")
    found = {e.name: e for e in _scan(settings, root).entries}
    assert not marker.exists()
    assert found.pop("good").kind is ModelKind.LORA
    assert set(found) == set(reasons)
    for name, phrase in reasons.items():
        entry = found[name]
        assert entry.kind is None and entry.kind_label == "invalid"
        assert phrase in entry.problems[0], (name, entry.problems)
    assert found["evil"].identity.error_type == "UnsafeModelError"
    assert found["random"].identity.error_type == "NotAModelError"


def test_links_loops_and_special_files_are_safe(settings: Settings, root: Path) -> None:
    lora_dir = root / "models/Lora"
    target = place(root, "elsewhere/real.safetensors", "lora")
    lora_dir.mkdir(parents=True)
    (lora_dir / "linked.safetensors").symlink_to(target)
    (lora_dir / "broken.safetensors").symlink_to(root / "missing.safetensors")
    (lora_dir / "loop.safetensors").symlink_to(lora_dir / "loop.safetensors")
    (lora_dir / "sub").mkdir()
    (lora_dir / "sub/up").symlink_to(lora_dir)  # a folder loop
    os.mkfifo(lora_dir / "fifo.safetensors")  # opening it would block forever
    found = {e.name: e for e in _scan(settings, root).entries}
    assert set(found) == {"linked", "broken", "loop", "fifo"}
    assert found["linked"].kind is ModelKind.LORA
    assert "broken symbolic link" in found["broken"].problems[0]
    assert found["loop"].problems[0] == "is a symbolic link loop"
    assert found["fifo"].problems[0] == "is not a regular file"


def test_non_utf8_names_are_listed_and_serialisable(settings: Settings, root: Path) -> None:
    folder = root / "models/Lora"
    folder.mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.safetensors")
    write_lora(folder / name)
    (entry,) = _scan(settings, root).entries
    assert entry.kind is ModelKind.LORA
    assert "not valid UTF-8" in entry.problems[-1]
    assert json.loads(json.dumps(entry.summary()))["path"] == f"models/Lora/{name}"
    assert entry.display_path == "models/Lora/caf\ufffd.safetensors"


def test_sidecars_without_a_model_are_found(settings: Settings, root: Path) -> None:
    place(root, "models/Lora/kept.safetensors", "lora")
    folder = root / "models/Lora"
    for name in ("kept.preview.png", "kept.json", "gone.civitai.info", "gone.png", "x.pt.optim"):
        (folder / name).write_text("{}")
    (root / "embeddings").mkdir()
    (root / "embeddings/image-embedding.png").write_bytes(b"\x89PNG")  # may be an embedding
    scan = _scan(settings, root)
    assert sorted(o.path.name for o in scan.orphan_sidecars) == [
        "gone.civitai.info",
        "gone.png",
        "x.pt.optim",
    ]
