"""Aspect-ratio buckets, computed the way kohya-ss sd-scripts does.

- Predefined buckets (`make_bucket_resolutions`): with `max_area = width * height` of the
  training resolution, the square `floor(sqrt(max_area) / step) * step`, then for each width
  `w = min..max` in `step`s, `h = min(max, floor(floor(max_area / w) / step) * step)`, adding
  `(w, h)` and `(h, w)` when `h >= min`.
- An image goes to its exact size when that is a bucket, else to the bucket with the nearest
  aspect ratio (first such bucket in sorted order on ties); it is scaled so that it covers the
  bucket and then cropped.
- `bucket_no_upscale`: images above `max_area` shrink keeping their aspect ratio (the width- or
  height-rounded variant with the smaller ratio error), nothing grows, and the bucket is the
  (resized) size floored to `step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Size = tuple[int, int]  # (width, height)


def make_bucket_resolutions(
    max_reso: Size, min_size: int = 256, max_size: int = 1024, step: int = 64
) -> list[Size]:
    """kohya's predefined bucket list, sorted by (width, height)."""
    max_area = max_reso[0] * max_reso[1]
    square = int(math.sqrt(max_area) // step) * step
    resos: set[Size] = {(square, square)}
    width = min_size
    while width <= max_size:
        height = min(max_size, (max_area // width) // step * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


@dataclass(frozen=True)
class BucketChoice:
    """Where one image goes: its bucket, the size it is resized to first, and the AR error."""

    bucket: Size
    resized: Size
    ar_error: float


class BucketSelector:
    """Chooses buckets for images (kohya `BucketManager.select_bucket`)."""

    def __init__(
        self,
        resolution: Size,
        *,
        enable_bucket: bool,
        min_size: int = 256,
        max_size: int = 1024,
        step: int = 64,
        no_upscale: bool = False,
    ) -> None:
        self.max_area = resolution[0] * resolution[1]
        self.step = step
        self.no_upscale = enable_bucket and no_upscale
        if not enable_bucket:
            self.predefined: list[Size] = [resolution]
        elif no_upscale:
            self.predefined = []
        else:
            self.predefined = make_bucket_resolutions(resolution, min_size, max_size, step)
        self._predefined_set = set(self.predefined)

    def select(self, width: int, height: int) -> BucketChoice:
        aspect = width / height
        if self.no_upscale:
            bucket, resized = self._no_upscale(width, height, aspect)
        else:
            bucket = (width, height)
            if bucket not in self._predefined_set:
                bucket = min(self.predefined, key=lambda r: abs(r[0] / r[1] - aspect))
            resized = cover_size((width, height), bucket)
        return BucketChoice(bucket, resized, bucket[0] / bucket[1] - aspect)

    def _round(self, value: float) -> int:
        rounded = int(value + 0.5)
        return rounded - rounded % self.step

    def _no_upscale(self, width: int, height: int, aspect: float) -> tuple[Size, Size]:
        if width * height > self.max_area:
            new_w = math.sqrt(self.max_area * aspect)
            new_h = self.max_area / new_w
            w_rounded = self._round(new_w)
            h_in_wr = self._round(w_rounded / aspect)
            ar_w = w_rounded / h_in_wr if h_in_wr else math.inf
            h_rounded = self._round(new_h)
            w_in_hr = self._round(h_rounded * aspect)
            ar_h = w_in_hr / h_rounded if h_rounded else math.inf
            if abs(ar_w - aspect) < abs(ar_h - aspect):
                resized = (w_rounded, int(w_rounded / aspect + 0.5))
            else:
                resized = (int(h_rounded * aspect + 0.5), h_rounded)
        else:
            resized = (width, height)
        bucket = (resized[0] - resized[0] % self.step, resized[1] - resized[1] % self.step)
        return bucket, resized


def cover_size(image: Size, bucket: Size) -> Size:
    """Scale `image` so that it covers `bucket` (the side with the larger ratio decides)."""
    width, height = image
    wider = width / height > bucket[0] / bucket[1]
    scale = bucket[1] / height if wider else bucket[0] / width
    return int(width * scale + 0.5), int(height * scale + 0.5)


def crop_ltrb(bucket: Size, image: Size) -> tuple[int, int, int, int]:
    """kohya's `get_crop_ltrb`: the centre-crop box of the scaled image, in bucket pixels."""
    bucket_ar = bucket[0] / bucket[1]
    image_ar = image[0] / image[1]
    if bucket_ar > image_ar:
        resized_w, resized_h = bucket[1] * image_ar, float(bucket[1])
    else:
        resized_w, resized_h = float(bucket[0]), bucket[0] / image_ar
    left = (bucket[0] - resized_w) // 2
    top = (bucket[1] - resized_h) // 2
    return int(left), int(top), int(left + resized_w), int(top + resized_h)
