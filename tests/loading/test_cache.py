"""ComponentCache: hits, LRU eviction under a byte budget, stale files, VAE swaps on a hit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from brushwork.core.errors import ConfigError
from brushwork.loading import (
    CacheStats,
    ComponentCache,
    LoadedModel,
    estimate_model_bytes,
    load_model,
)
from brushwork.testing.factory import Components, build_components, write_vae_file


@pytest.fixture(scope="module")
def three(
    tiny: dict[str, Components],
    tiny_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> list[Path]:
    """Three different SD1 checkpoint files of the same size."""
    folder = tmp_path_factory.mktemp("three")
    return [Path(shutil.copy(tiny_files["sd1"], folder / f"m{i}.safetensors")) for i in range(3)]


@pytest.fixture(scope="module")
def model_bytes(three: list[Path]) -> int:
    return load_model(three[0], device="cpu", precision="fp32").nbytes()


class RecordingLoader:
    """load_model, remembering what the cache held when each load began."""

    def __init__(self) -> None:
        self.cache: ComponentCache | None = None
        self.held_at_load: list[int] = []

    def __call__(self, path: Path, **options: Any) -> LoadedModel:
        assert self.cache is not None
        self.held_at_load.append(len(self.cache))
        return load_model(path, **options)


def get(cache: ComponentCache, path: Path, **options: Any) -> LoadedModel:
    return cache.get_or_load(path, **({"device": "cpu", "precision": "fp32"} | options))


def test_a_hit_returns_the_same_model(three: list[Path], model_bytes: int) -> None:
    cache = ComponentCache(10 * model_bytes)
    first = get(cache, three[0])
    assert get(cache, three[0]) is first
    assert cache.stats == CacheStats(hits=1, misses=1)
    assert cache.nbytes == model_bytes
    assert get(cache, three[0], precision="bf16") is not first  # another dtype, another entry
    assert cache.stats.misses == 2


def test_least_recently_used_is_evicted_first(three: list[Path], model_bytes: int) -> None:
    cache = ComponentCache(2 * model_bytes)
    a, b, _ = get(cache, three[0]), get(cache, three[1]), get(cache, three[0])
    assert cache.stats == CacheStats(hits=1, misses=2)
    get(cache, three[2])  # over budget: b is the least recently used
    assert [k.checkpoint.path.name for k in cache.cached_keys()] == [
        "m0.safetensors",
        "m2.safetensors",
    ]
    assert cache.stats.evictions == 1
    assert get(cache, three[0]) is a
    assert get(cache, three[1]) is not b  # reloaded
    assert cache.stats == CacheStats(hits=2, misses=4, evictions=2)
    assert cache.nbytes <= cache.max_bytes


def test_room_is_made_before_loading(three: list[Path], model_bytes: int) -> None:
    loader = RecordingLoader()
    cache = ComponentCache(model_bytes + model_bytes // 2, loader=loader)
    loader.cache = cache
    get(cache, three[0])
    get(cache, three[1])
    assert loader.held_at_load == [0, 0]  # the first was dropped before the second loaded
    assert len(cache) == 1


def test_the_model_in_use_is_kept_even_over_budget(three: list[Path]) -> None:
    cache = ComponentCache(1)
    model = get(cache, three[0])
    assert len(cache) == 1 and get(cache, three[0]) is model
    get(cache, three[1])
    assert [k.checkpoint.path.name for k in cache.cached_keys()] == ["m1.safetensors"]


def test_estimate_is_close_to_the_loaded_size(three: list[Path], model_bytes: int) -> None:
    estimate = estimate_model_bytes(three[0], torch.float32)
    assert 0.95 * model_bytes <= estimate <= 1.05 * model_bytes
    assert estimate_model_bytes(three[0], torch.bfloat16) == estimate // 2


def test_a_changed_file_is_reloaded_and_the_stale_entry_dropped(
    tiny_files: dict[str, Path], tmp_path: Path, model_bytes: int
) -> None:
    path = Path(shutil.copy(tiny_files["sd1"], tmp_path / "edit.safetensors"))
    cache = ComponentCache(10 * model_bytes)
    old = get(cache, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert get(cache, path) is not old
    assert len(cache) == 1 and cache.stats.evictions == 1


def test_another_vae_on_a_hit_is_swapped_in_not_reloaded(
    three: list[Path], model_bytes: int, tmp_path: Path
) -> None:
    vae_file = write_vae_file(build_components("sd1", seed=9), tmp_path / "x.safetensors")
    cache = ComponentCache(10 * model_bytes)
    model = get(cache, three[0])
    assert get(cache, three[0], vae=vae_file) is model
    assert model.vae_source == str(vae_file.absolute())
    assert get(cache, three[0], vae="none") is model and model.vae_source == "baked"
    assert cache.stats == CacheStats(hits=2, misses=1, vae_swaps=2)


def test_same_device_offload_is_plain_eviction(three: list[Path], model_bytes: int) -> None:
    cache = ComponentCache(model_bytes, offload_device="cpu", offload_max_bytes=10 * model_bytes)
    get(cache, three[0])
    get(cache, three[1])
    assert cache.offloaded_keys() == [] and cache.stats.evictions == 1


def test_budgets_cannot_be_negative() -> None:
    with pytest.raises(ConfigError):
        ComponentCache(-1)


def test_clear_forgets_everything(three: list[Path], model_bytes: int) -> None:
    cache = ComponentCache(10 * model_bytes)
    get(cache, three[0])
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


class PretendGpuModel(LoadedModel):
    """A CPU model that says it is on the GPU; moves are recorded, not done."""

    moves: list[str]

    def to(self, device: torch.device | str) -> LoadedModel:
        self.moves = [*getattr(self, "moves", []), str(device)]
        self.device = torch.device(device)
        return self


def pretend_gpu_loader(path: Path, **options: Any) -> LoadedModel:
    model = load_model(path, **(options | {"device": "cpu", "precision": "fp32"}))
    fake = PretendGpuModel(**{f: getattr(model, f) for f in model.__dataclass_fields__})
    fake.device = torch.device("cuda")
    return fake


def test_offloaded_models_come_back_on_their_next_use(
    three: list[Path], model_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cache = ComponentCache(
        model_bytes,
        offload_device="cpu",
        offload_max_bytes=model_bytes,
        loader=pretend_gpu_loader,
    )
    first = cache.get_or_load(three[0], device="cuda", precision="fp16")
    cache.get_or_load(three[1], device="cuda", precision="fp16")
    assert cache.stats.offloads == 1 and first.device.type == "cpu"
    assert [k.checkpoint.path.name for k in cache.offloaded_keys()] == ["m0.safetensors"]
    assert cache.get_or_load(three[0], device="cuda", precision="fp16") is first
    assert first.device.type == "cuda" and first.moves == ["cpu", "cuda"]  # type: ignore[attr-defined]
    assert cache.stats.restores == 1 and cache.stats.misses == 2
    cache.get_or_load(three[2], device="cuda", precision="fp16")  # offload tier holds one
    assert [k.checkpoint.path.name for k in cache.offloaded_keys()] == ["m0.safetensors"]
    assert (cache.stats.offloads, cache.stats.evictions) == (3, 1)  # m1 made room for m0


@pytest.mark.gpu
def test_evicted_gpu_models_wait_on_the_cpu(three: list[Path]) -> None:
    cache = ComponentCache(1, offload_device="cpu", offload_max_bytes=1 << 34)
    first = cache.get_or_load(three[0], device="cuda", precision="fp16")
    cache.get_or_load(three[1], device="cuda", precision="fp16")
    assert cache.stats.offloads == 1
    assert next(first.unet.parameters()).device.type == "cpu"
    assert cache.get_or_load(three[0], device="cuda", precision="fp16") is first
    assert next(first.unet.parameters()).device.type == "cuda"
    assert cache.stats.restores == 1
