"""Latents cached on disk as `<image stem>.npz` beside the image (kohya's legacy name).

Keys are kohya's: `latents` [C, h, w] float32, `original_size` [w, h], `crop_ltrb`
[l, t, r, b], `latents_flipped` when the subset flips. Two keys of our own make the cache
safe to reuse: `brushwork_image_sha256` (the image bytes the latents came from) and
`brushwork_encoder` (the caller's name for the VAE). kohya ignores extra keys.
A file is reused only when every key matches the image, the bucket and the encoder; otherwise
it is recomputed and replaced (atomically).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from brushwork.core.fsutil import atomic_write_bytes
from brushwork.training.data.buckets import Size

IMAGE_HASH_KEY = "brushwork_image_sha256"
ENCODER_KEY = "brushwork_encoder"


@dataclass(frozen=True)
class CachedLatents:
    latents: torch.Tensor
    latents_flipped: torch.Tensor | None
    original_size: Size
    crop_ltrb: tuple[int, int, int, int]


def npz_path_for(image: Path) -> Path:
    return image.with_suffix(".npz")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_npz(npz: Path) -> tuple[CachedLatents, str, str] | None:
    """(latents, image sha256, encoder name) from a cache file; None when it is unusable."""
    if not npz.is_file():
        return None
    try:
        with np.load(npz, allow_pickle=False) as data:
            if not {"latents", "original_size", "crop_ltrb"}.issubset(data.files):
                return None
            sha = str(data[IMAGE_HASH_KEY]) if IMAGE_HASH_KEY in data.files else ""
            encoder = str(data[ENCODER_KEY]) if ENCODER_KEY in data.files else ""
            latents = np.array(data["latents"], dtype=np.float32)
            flipped = None
            if "latents_flipped" in data.files:
                flipped = np.array(data["latents_flipped"], dtype=np.float32)
            original = [int(v) for v in data["original_size"]]
            crop = [int(v) for v in data["crop_ltrb"]]
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError):
        return None  # unreadable cache files are simply recomputed
    if latents.ndim != 3 or len(original) != 2 or len(crop) != 4:
        return None
    cached = CachedLatents(
        torch.from_numpy(latents),
        None if flipped is None else torch.from_numpy(flipped),
        (original[0], original[1]),
        (crop[0], crop[1], crop[2], crop[3]),
    )
    return cached, sha, encoder


def load_valid_npz(
    npz: Path,
    *,
    bucket: Size,
    image_sha256: str,
    encoder: str,
    need_flipped: bool,
    downscale: int = 8,
) -> CachedLatents | None:
    """The cached latents if `npz` matches this image, bucket and encoder; else None."""
    found = read_npz(npz)
    if found is None:
        return None
    cached, sha, stored_encoder = found
    if sha != image_sha256 or stored_encoder != encoder:
        return None
    if tuple(cached.latents.shape[1:]) != (bucket[1] // downscale, bucket[0] // downscale):
        return None
    flipped = cached.latents_flipped
    if need_flipped and (flipped is None or flipped.shape != cached.latents.shape):
        return None
    return cached


def save_npz(npz: Path, cached: CachedLatents, *, image_sha256: str, encoder: str) -> None:
    arrays: dict[str, np.ndarray] = {
        "latents": cached.latents.detach().float().cpu().numpy(),
        "original_size": np.array(cached.original_size),
        "crop_ltrb": np.array(cached.crop_ltrb),
        IMAGE_HASH_KEY: np.array(image_sha256),
        ENCODER_KEY: np.array(encoder),
    }
    if cached.latents_flipped is not None:
        arrays["latents_flipped"] = cached.latents_flipped.detach().float().cpu().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(npz, buffer.getvalue())
