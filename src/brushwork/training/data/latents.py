"""Encoding every image once (kohya `cache_latents`), in memory or as `.npz` beside the image."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from brushwork.core.errors import BrushworkError
from brushwork.training.data.buckets import Size, crop_ltrb
from brushwork.training.data.cache import (
    CachedLatents,
    file_sha256,
    load_valid_npz,
    npz_path_for,
    read_npz,
    save_npz,
)
from brushwork.training.data.images import ImageLoadError, load_rgb, resize_and_crop, to_tensor
from brushwork.training.data.scan import DatasetPart, ImageRecord

logger = logging.getLogger(__name__)

Encode = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Pending:
    record: ImageRecord
    flip: bool
    sha256: str


def cache_parts(
    parts: list[DatasetPart],
    encode: Encode,
    *,
    to_disk: bool,
    batch_size: int,
    encoder: str,
    downscale: int = 8,
) -> None:
    """Fill `record.latents` (memory) or `record.npz` (disk) for every used image; latents are
    `downscale` times smaller than the bucket (8 for every SD VAE, less for small models)."""
    if batch_size < 1:
        raise BrushworkError(f"latent caching batch size is {batch_size}; it must be at least 1")
    pending: dict[Size, list[_Pending]] = {}
    reused = 0
    for part in parts:
        for record in part.images:
            flip = part.subsets[record.subset].flip_aug
            record.latents = record.latents_flipped = record.npz = None
            sha = file_sha256(record.path) if to_disk else ""
            if to_disk and _reuse_disk_cache(record, flip, sha, encoder, downscale):
                reused += 1
                continue
            pending.setdefault(record.bucket, []).append(_Pending(record, flip, sha))
    encoded = 0
    for bucket in sorted(pending):
        items = pending[bucket]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            _encode_chunk(
                chunk, bucket, encode, to_disk=to_disk, encoder=encoder, downscale=downscale
            )
            encoded += len(chunk)
    logger.info("latents: %d encoded, %d reused from disk", encoded, reused)


def _reuse_disk_cache(
    record: ImageRecord, flip: bool, sha: str, encoder: str, downscale: int
) -> bool:
    npz = npz_path_for(record.path)
    found = load_valid_npz(
        npz,
        bucket=record.bucket,
        image_sha256=sha,
        encoder=encoder,
        need_flipped=flip,
        downscale=downscale,
    )
    if found is None:
        return False
    record.npz = npz
    return True


def _pixels(record: ImageRecord) -> torch.Tensor:
    try:
        image = load_rgb(record.path)
    except ImageLoadError as exc:
        raise BrushworkError(f"cannot cache latents: {exc}") from exc
    return to_tensor(resize_and_crop(image, record.resized, record.bucket))


def _encode_chunk(
    chunk: list[_Pending],
    bucket: Size,
    encode: Encode,
    *,
    to_disk: bool,
    encoder: str,
    downscale: int,
) -> None:
    images = torch.stack([_pixels(item.record) for item in chunk])
    latents = _checked(encode(images), images, chunk, bucket, downscale)
    flipped = None
    if any(item.flip for item in chunk):
        mirrored = encode(torch.flip(images, dims=[3]))
        flipped = _checked(mirrored, images, chunk, bucket, downscale)
    for i, item in enumerate(chunk):
        record = item.record
        mine = latents[i].detach().to("cpu")
        mine_flipped = flipped[i].detach().to("cpu") if flipped is not None and item.flip else None
        if to_disk:
            cached = CachedLatents(mine, mine_flipped, record.size, crop_ltrb(bucket, record.size))
            npz = npz_path_for(record.path)
            save_npz(npz, cached, image_sha256=item.sha256, encoder=encoder)
            record.npz = npz
        else:
            record.latents, record.latents_flipped = mine, mine_flipped


def _checked(
    latents: torch.Tensor,
    images: torch.Tensor,
    chunk: list[_Pending],
    bucket: Size,
    downscale: int,
) -> torch.Tensor:
    expected_hw = (bucket[1] // downscale, bucket[0] // downscale)
    if (
        latents.ndim != 4
        or latents.shape[0] != images.shape[0]
        or tuple(latents.shape[2:]) != expected_hw
    ):
        raise BrushworkError(
            f"the encode callable returned shape {tuple(latents.shape)} for images "
            f"{tuple(images.shape)}; expected [B, C, {expected_hw[0]}, {expected_hw[1]}]"
        )
    bad = ~torch.isfinite(latents.detach()).flatten(1).all(dim=1)
    if bool(bad.any()):
        names = ", ".join(str(chunk[i].record.path) for i in bad.nonzero().flatten().tolist())
        raise BrushworkError(
            f"NaN or infinite latents for {names}",
            hint="usually a half-precision VAE problem: encode with the VAE in float32",
        )
    return latents


def sample_latents(record: ImageRecord, flip: bool) -> torch.Tensor:
    """The cached latents of one sample (flipped ones when `flip`)."""
    if record.latents is not None:
        chosen = record.latents_flipped if flip else record.latents
    elif record.npz is not None:
        found = read_npz(record.npz)
        if found is None:
            raise ImageLoadError(f"{record.npz}: latent cache file is missing or unreadable")
        chosen = found[0].latents_flipped if flip else found[0].latents
    else:
        raise ImageLoadError(f"{record.path}: latents were not cached")
    if chosen is None:
        raise ImageLoadError(f"{record.path}: flipped latents were not cached")
    return chosen
