"""A cache of loaded checkpoints, so that switching back to a recent one is instant.

Entries are whole `LoadedModel`s, keyed by the checkpoint file's identity (absolute path, size,
mtime; symlinks not resolved), the device, the dtype and what changes the weights (prediction
type, EMA, VAE precision). The VAE is not part of the key: a hit with another VAE choice swaps the VAE in place
(`loading.vae.swap_vae`), as A1111 does, rather than holding a second copy of the model.

Memory: the cache counts the bytes of every entry's weights and evicts the least recently used
entries to stay under `max_bytes`. Before a load it makes room for the new model's estimated size,
so peak memory stays near the budget. The model just returned is always kept, even when it alone
is over the budget. An evicted model is only dropped from the cache: a caller still holding it
keeps its memory alive.

With `offload_device="cpu"` (A1111's `sd_checkpoints_keep_in_cpu`), a model evicted from a GPU is
moved to the CPU and kept there, within `offload_max_bytes`, and moved back on its next use:
slower than a hit, much faster than a reload.

The cache holds no module-level state; whoever owns an instance (the jobs floor) decides its
lifetime. It is safe to share between threads: loads are serialised by a lock.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from brushwork.core.errors import ConfigError, ModelFileError
from brushwork.core.kinds import FileFormat
from brushwork.formats.safeio import read_header, sniff_format
from brushwork.loading.loader import load_model
from brushwork.loading.model import BAKED, FileStamp, LoadedModel
from brushwork.loading.precision import (
    check_precision,
    choose_dtype,
    dtype_name,
    dtype_of,
    resolve_device,
)
from brushwork.loading.vae import VaeSpec, resolve_vae_choice, swap_vae

logger = logging.getLogger(__name__)

Loader = Callable[..., LoadedModel]


@dataclass(frozen=True)
class CacheKey:
    """What makes two loads of a checkpoint interchangeable."""

    checkpoint: FileStamp
    device: str
    dtype: str
    prediction_type: str | None
    use_ema: bool
    vae_precision: str


@dataclass(frozen=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0  # models dropped from the cache
    offloads: int = 0  # models moved to the offload device instead of dropped
    restores: int = 0  # offloaded models moved back for use
    vae_swaps: int = 0  # hits served with another VAE swapped in


def estimate_model_bytes(path: Path, dtype: torch.dtype) -> int:
    """About how many bytes a checkpoint takes once loaded in `dtype` (EMA copies left out)."""
    try:
        if sniff_format(path) is not FileFormat.SAFETENSORS:
            return path.stat().st_size
        header = read_header(path)
    except (ModelFileError, OSError):
        return 0  # the load will say what is wrong
    size = torch.empty(0, dtype=dtype).element_size()
    return sum(
        info.numel * size
        for name, info in header.tensors.items()
        if not name.startswith("model_ema.") and info.dtype.startswith(("F", "BF"))
    )


class ComponentCache:
    """LRU cache of `LoadedModel`s under a memory budget (see the module docstring)."""

    def __init__(
        self,
        max_bytes: int,
        *,
        offload_device: str | None = None,
        offload_max_bytes: int = 0,
        loader: Loader = load_model,
    ) -> None:
        if max_bytes < 0 or offload_max_bytes < 0:
            raise ConfigError("cache budgets cannot be negative")
        self.max_bytes = max_bytes
        self.offload_device = None if offload_device is None else torch.device(offload_device)
        self.offload_max_bytes = offload_max_bytes
        self._loader = loader
        self._entries: OrderedDict[CacheKey, LoadedModel] = OrderedDict()
        self._offloaded: OrderedDict[CacheKey, LoadedModel] = OrderedDict()
        self._stats = CacheStats()
        self._lock = threading.Lock()

    # -- inspection ---------------------------------------------------------------------------

    @property
    def stats(self) -> CacheStats:
        return self._stats

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached models (not counting offloaded ones)."""
        return sum(model.nbytes() for model in self._entries.values())

    @property
    def offloaded_nbytes(self) -> int:
        return sum(model.nbytes() for model in self._offloaded.values())

    def cached_keys(self) -> list[CacheKey]:
        """Cached keys, least recently used first."""
        return list(self._entries)

    def offloaded_keys(self) -> list[CacheKey]:
        return list(self._offloaded)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._offloaded.clear()

    def _count(self, **increments: int) -> None:
        current = self._stats
        self._stats = replace(
            current, **{k: getattr(current, k) + v for k, v in increments.items()}
        )

    # -- lookup -------------------------------------------------------------------------------

    def key_for(
        self,
        checkpoint: Path | str,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        use_ema: bool = False,
        prediction_type: str | None = None,
        vae_precision: str = "auto",
    ) -> CacheKey:
        """The key a load with these options is cached under (the device and dtype resolved)."""
        target = resolve_device(device)
        dtype = choose_dtype(target, precision)
        return CacheKey(
            FileStamp.of(checkpoint),
            str(target),
            dtype_name(dtype),
            prediction_type,
            use_ema,
            check_precision(vae_precision),
        )

    def get_or_load(
        self,
        checkpoint: Path | str,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        vae: VaeSpec = "auto",
        use_ema: bool = False,
        prediction_type: str | None = None,
        vae_precision: str = "auto",
        vae_folders: Sequence[Path] = (),
    ) -> LoadedModel:
        """The cached model for these options, loading it (and evicting others) on a miss."""
        key = self.key_for(
            checkpoint,
            device=device,
            precision=precision,
            use_ema=use_ema,
            prediction_type=prediction_type,
            vae_precision=vae_precision,
        )
        vae_file = resolve_vae_choice(key.checkpoint.path, vae, vae_folders)
        with self._lock:
            model = self._cached(key)
            if model is None:
                model = self._load(key, vae_file, vae_folders)
            elif model.vae_source != (BAKED if vae_file is None else str(vae_file)):
                swap_vae(model, vae_file)
                self._count(vae_swaps=1)
            self._entries.move_to_end(key)
            self._shrink(self.max_bytes, keep=key)
            return model

    def _cached(self, key: CacheKey) -> LoadedModel | None:
        if key in self._entries:
            self._count(hits=1)
            return self._entries[key]
        if key in self._offloaded:
            model = self._offloaded.pop(key).to(key.device)
            self._entries[key] = model
            self._count(hits=1, restores=1)
            return model
        return None

    def _load(
        self, key: CacheKey, vae_file: Path | None, vae_folders: Sequence[Path]
    ) -> LoadedModel:
        self._count(misses=1)
        self._drop_stale(key.checkpoint)
        wanted = estimate_model_bytes(key.checkpoint.path, dtype_of(key.dtype))
        self._shrink(max(self.max_bytes - wanted, 0), keep=None)
        options: dict[str, Any] = {
            "device": key.device,
            "precision": key.dtype,
            "vae": "none" if vae_file is None else vae_file,
            "use_ema": key.use_ema,
            "prediction_type": key.prediction_type,
            "vae_precision": key.vae_precision,
            "vae_folders": vae_folders,
        }
        model = self._loader(key.checkpoint.path, **options)
        self._entries[key] = model
        return model

    # -- eviction -----------------------------------------------------------------------------

    def _drop_stale(self, stamp: FileStamp) -> None:
        """Forget entries of the same file in an older state (it changed on disk)."""
        for tier in (self._entries, self._offloaded):
            for key in [
                k for k in tier if k.checkpoint.path == stamp.path and k.checkpoint != stamp
            ]:
                del tier[key]
                self._count(evictions=1)

    def _shrink(self, budget: int, keep: CacheKey | None) -> None:
        total = self.nbytes
        for key in list(self._entries):
            if total <= budget:
                break
            if key == keep:
                continue
            model = self._entries.pop(key)
            total -= model.nbytes()
            self._evict(key, model)
        if keep is not None and total > budget:
            logger.warning(
                "the model in use alone (%.2f GB) is over the cache budget (%.2f GB)",
                total / 1e9,
                budget / 1e9,
            )

    def _evict(self, key: CacheKey, model: LoadedModel) -> None:
        offload = self.offload_device
        if offload is None or model.device.type == offload.type:
            self._count(evictions=1)
            return
        size = model.nbytes()
        if size > self.offload_max_bytes:
            self._count(evictions=1)
            return
        while self._offloaded and self.offloaded_nbytes + size > self.offload_max_bytes:
            self._offloaded.popitem(last=False)
            self._count(evictions=1)
        self._offloaded[key] = model.to(offload)
        self._count(offloads=1)
