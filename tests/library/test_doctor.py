"""The library health check: what to fix, with the files concerned."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from brushwork.core.settings import Settings
from brushwork.library.catalog import Library
from brushwork.library.doctor import DoctorReport, check_library

from .conftest import place


def _check(settings: Settings, root: Path) -> DoctorReport:
    with Library.open(settings, [root]) as library:
        return check_library(library)


def _categories(report: DoctorReport) -> dict[str, list[tuple[str, ...]]]:
    found: dict[str, list[tuple[str, ...]]] = {}
    for finding in report.findings:
        found.setdefault(finding.category, []).append(
            tuple(p.split(" (in ")[0] for p in finding.paths)
        )
    return found


def test_a_clean_library_is_healthy(settings: Settings, root: Path) -> None:
    place(root, "models/Lora/style.safetensors", "lora")
    place(root, "embeddings/neg.pt", "embedding")
    (root / "models/Lora/style.preview.png").write_bytes(b"\x89PNG")
    report = _check(settings, root)
    assert report.healthy and report.checked == 2


def test_every_kind_of_finding(settings: Settings, root: Path) -> None:
    lora = place(root, "models/Lora/style.safetensors", "lora")
    shutil.copy(lora, root / "models/Lora/style-copy.safetensors")
    os.link(lora, root / "models/Lora/style-hardlink.safetensors")  # a link is not a copy
    place(root, "models/Lora/sub/style.safetensors", "lora")  # another LoRA called "style"
    place(root, "models/Stable-diffusion/lost-lora.safetensors", "lora")
    (root / "models/VAE").mkdir(parents=True)
    (root / "models/VAE/broken.pt").write_bytes(b"\x80\x04garbage")
    (root / "models/Lora/deleted.civitai.info").write_text("{}")
    found = _categories(_check(settings, root))
    assert found.pop("invalid") == [("models/VAE/broken.pt",)]
    assert found.pop("misfiled") == [("models/Stable-diffusion/lost-lora.safetensors",)]
    assert found.pop("orphan-sidecar") == [("models/Lora/deleted.civitai.info",)]
    duplicates = found.pop("duplicate")
    assert len(duplicates) == 1
    assert set(duplicates[0]) >= {
        "models/Lora/style.safetensors",
        "models/Lora/style-copy.safetensors",
    }
    assert found.pop("name-clash") == [
        ("models/Lora/style.safetensors", "models/Lora/sub/style.safetensors")
    ]
    assert found == {}
