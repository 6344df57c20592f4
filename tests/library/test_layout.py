"""Library roots and folders: A1111 and ComfyUI layouts, accepted extensions, the default root."""

from __future__ import annotations

from pathlib import Path

import pytest

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.library.layout import (
    Layout,
    accepts,
    default_root,
    expected_kind,
    model_folders,
    resolve_roots,
)

CK, VAE, LORA, EMB, HN = (
    ModelKind.CHECKPOINT,
    ModelKind.VAE,
    ModelKind.LORA,
    ModelKind.EMBEDDING,
    ModelKind.HYPERNETWORK,
)


@pytest.mark.parametrize(
    ("kind", "name", "listed"),
    [
        (CK, "a.safetensors", True),
        (CK, "a.CKPT", True),
        (CK, "a.pt", False),
        (CK, "a.vae.pt", True),  # a VAE beside checkpoints
        (VAE, "a.pt", True),
        (VAE, "a.bin", False),
        (LORA, "a.PT", True),
        (LORA, "a.ckpt", True),
        (LORA, "a.bin", False),
        (HN, "a.pt", True),
        (HN, "a.safetensors", False),  # A1111 loads hypernetworks only as .pt
        (EMB, "a.bin", True),
        (EMB, "a.Safetensors", True),
        (EMB, "a.ckpt", False),
        (LORA, "a.safetensors.json", False),
        (LORA, "noextension", False),
    ],
)
def test_extensions_match_a1111_in_any_case(kind: ModelKind, name: str, listed: bool) -> None:
    assert accepts(kind, name) is listed


def test_vae_names_beside_checkpoints_promise_a_vae() -> None:
    assert expected_kind(CK, "anime.vae.safetensors") is VAE
    assert expected_kind(CK, "anime.safetensors") is CK
    assert expected_kind(LORA, "x.vae.safetensors") is LORA


def _folders(root: Path) -> list[tuple[ModelKind, str, Layout]]:
    return [(f.kind, f.relative, f.layout) for f in model_folders(root)]


def test_a1111_install_keeps_embeddings_beside_models(tmp_path: Path) -> None:
    for name in ("models/Stable-diffusion", "models/VAE", "models/Lora", "models/LyCORIS"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "models/hypernetworks").mkdir()
    (tmp_path / "embeddings").mkdir()
    assert _folders(tmp_path) == [
        (CK, "models/Stable-diffusion", Layout.A1111),
        (VAE, "models/VAE", Layout.A1111),
        (LORA, "models/Lora", Layout.A1111),
        (LORA, "models/LyCORIS", Layout.A1111),
        (HN, "models/hypernetworks", Layout.A1111),
        (EMB, "embeddings", Layout.A1111),
    ]


def test_comfyui_install(tmp_path: Path) -> None:
    for name in ("checkpoints", "vae", "loras", "embeddings"):
        (tmp_path / "models" / name).mkdir(parents=True)
    assert _folders(tmp_path) == [
        (CK, "models/checkpoints", Layout.COMFYUI),
        (VAE, "models/vae", Layout.COMFYUI),
        (LORA, "models/loras", Layout.COMFYUI),
        (EMB, "models/embeddings", Layout.COMFYUI),
    ]


def test_a_bare_models_folder_is_a_root(tmp_path: Path) -> None:
    (tmp_path / "Stable-diffusion").mkdir()
    (tmp_path / "loras").mkdir()
    (tmp_path / "embeddings").mkdir()
    assert _folders(tmp_path) == [
        (CK, "Stable-diffusion", Layout.A1111),
        (EMB, "embeddings", Layout.A1111),
        (LORA, "loras", Layout.COMFYUI),
    ]


def test_default_root_is_models_in_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "brushwork"\n')
    settings = Settings(data_dir=tmp_path / "data")
    assert default_root(settings, tmp_path) == tmp_path / "models"


def test_default_root_is_under_the_data_dir_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    settings = Settings(data_dir=tmp_path / "data")
    (root,) = resolve_roots(settings, cwd=tmp_path)
    assert root == tmp_path / "data" / "models"
    # created on first use, with the A1111 folders
    assert [(f.kind, f.relative) for f in model_folders(root)] == [
        (CK, "Stable-diffusion"),
        (VAE, "VAE"),
        (LORA, "Lora"),
        (HN, "hypernetworks"),
        (EMB, "embeddings"),
    ]


def test_named_roots_override_settings_and_must_exist(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    settings = Settings(data_dir=tmp_path / "data", roots=(one,))
    assert resolve_roots(settings) == (one,)
    assert resolve_roots(settings, (two, one, two)) == (two, one)
    with pytest.raises(ConfigError, match="missing"):
        resolve_roots(settings, (tmp_path / "missing",))
    assert not (tmp_path / "missing").exists()  # a named root is never created
