"""Finding a model by name, alias, path or hash, and saying why not when it cannot."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.library.catalog import Library
from brushwork.library.entry import ModelEntry
from brushwork.library.errors import AmbiguousModelError, ModelNotFoundError
from brushwork.library.lookup import find_model

from .conftest import place, write_big_lora, write_lora


@pytest.fixture
def entries(settings: Settings, root: Path) -> list[ModelEntry]:
    place(root, "models/Stable-diffusion/realistic/dream-v2.safetensors", "checkpoint")
    place(root, "models/Stable-diffusion/anime.ckpt", "checkpoint")
    (root / "models/Lora").mkdir(parents=True)
    write_lora(root / "models/Lora/style_v1.safetensors", {"ss_output_name": "painterly"})
    place(root, "models/Lora/a/twin.safetensors", "lora")
    place(root, "models/Lora/b/twin.safetensors", "lora")
    place(root, "embeddings/anime.pt", "embedding")
    with Library.open(settings, [root]) as library:
        return library.hash_entries(library.scan().entries)


def _find(entries: list[ModelEntry], query: str, kind: ModelKind | None = None) -> str:
    return find_model(entries, query, kind=kind).relative_path


def test_by_stem_alias_and_path(entries: list[ModelEntry]) -> None:
    assert _find(entries, "dream-v2") == "models/Stable-diffusion/realistic/dream-v2.safetensors"
    assert _find(entries, "painterly") == "models/Lora/style_v1.safetensors"  # ss_output_name
    assert _find(entries, "style_v1") == "models/Lora/style_v1.safetensors"
    # A1111's checkpoint names: relative to the folder, with or without extension, any slash
    for query in (
        "realistic/dream-v2.safetensors",
        "realistic\\dream-v2",
        "models/Stable-diffusion/realistic/dream-v2.safetensors",
    ):
        assert _find(entries, query).endswith("dream-v2.safetensors")
    assert _find(entries, "a/twin") == "models/Lora/a/twin.safetensors"
    assert _find(entries, "PAINTERLY") == "models/Lora/style_v1.safetensors"  # case as last resort


def test_by_every_hash_form(entries: list[ModelEntry]) -> None:
    dream = next(e for e in entries if e.name == "dream-v2")
    lora = next(e for e in entries if e.name == "style_v1")
    assert dream.sha256 is not None and lora.addnet_hash is not None
    for query in (dream.sha256, dream.sha256[:10], dream.sha256[:12].upper()):
        assert _find(entries, query) == dream.relative_path
    assert _find(entries, lora.addnet_hash[:12]) == lora.relative_path  # A1111's LoRA hash
    assert _find(entries, f"dream-v2 [{dream.sha256[:10]}]") == dream.relative_path  # a title


def test_the_legacy_hash_finds_a_large_file(settings: Settings, root: Path) -> None:
    big = write_big_lora(root / "models/Lora/big.safetensors")
    place(root, "models/Lora/small.safetensors", "lora")
    with Library.open(settings, [root]) as library:
        entries = library.scan().entries
    legacy = hashlib.sha256(big.read_bytes()[0x100000:0x110000]).hexdigest()[:8]
    assert find_model(entries, legacy).path == big
    with pytest.raises(AmbiguousModelError):  # every file under 1 MiB shares e3b0c442
        find_model([*entries, *entries], "e3b0c442")


def test_kind_narrows_a_shared_name(entries: list[ModelEntry]) -> None:
    with pytest.raises(AmbiguousModelError) as ambiguous:
        _find(entries, "anime")
    assert len(ambiguous.value.candidates) == 2
    assert _find(entries, "anime", ModelKind.EMBEDDING) == "embeddings/anime.pt"
    assert _find(entries, "anime", ModelKind.CHECKPOINT).endswith("anime.ckpt")


def test_ambiguous_names_list_the_candidates(entries: list[ModelEntry]) -> None:
    with pytest.raises(AmbiguousModelError) as error:
        _find(entries, "twin")
    assert error.value.candidates == (
        f"models/Lora/a/twin.safetensors (lora, in {entries[0].root})",
        f"models/Lora/b/twin.safetensors (lora, in {entries[0].root})",
    )
    assert "name one by its path" in str(error.value)


def test_unknown_names_suggest_the_closest(entries: list[ModelEntry]) -> None:
    with pytest.raises(ModelNotFoundError) as error:
        _find(entries, "dream_v2")
    assert error.value.suggestions[0] == "dream-v2"
    assert "did you mean 'dream-v2'" in str(error.value)
    with pytest.raises(ModelNotFoundError) as error:
        _find(entries, "anime", ModelKind.LORA)
    assert str(error.value).startswith(
        "no model named 'anime' in the library among lora models; other models of that name: "
        "models/Stable-diffusion/anime.ckpt (checkpoint), embeddings/anime.pt (embedding)"
    )


def test_library_find_hashes_when_asked_for_an_unknown_hash(settings: Settings, root: Path) -> None:
    place(root, "models/VAE/v.safetensors", "vae")
    with Library.open(settings, [root]) as library:
        (entry,) = library.scan().entries
        assert entry.sha256 is None
        (hashed,) = library.hash_entries([entry])
        assert hashed.sha256 is not None
    with Library.open(Settings(data_dir=root.parent / "fresh-data"), [root]) as library:
        assert library.find(hashed.sha256[:10]).sha256 == hashed.sha256
