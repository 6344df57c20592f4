"""Where to crop: a focal point from edges and entropy (A1111's "auto focal point crop" without
the face detector).

A1111 combines three points of interest, each weighted: faces (0.9), entropy (0.15) and
edges/corners (0.5). brushwork downloads no face model, so it combines the other two with
A1111's default weights:

- edges: the centroid of the strongest 5% of gradient magnitudes (central differences on a
  greyscale copy), weighted by magnitude; the busy, detailed part of the picture;
- entropy: the centre of the crop-sized window, slid along the axis that has room, whose
  greyscale histogram has the highest Shannon entropy (the most varied content).

A plain picture (no edges, one window) falls back to the centre. The crop window is then
centred on the focal point and clamped to the picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

EDGE_WEIGHT = 0.5
ENTROPY_WEIGHT = 0.15
ANALYSIS_SIDE = 256  # the analysis runs on a copy at most this large
EDGE_TOP_SHARE = 0.05
ENTROPY_WINDOWS = 24

Point = tuple[float, float]


def _grey(image: Image.Image) -> tuple[np.ndarray, float]:
    scale = min(1.0, ANALYSIS_SIDE / max(image.size))
    small = image.convert("L")
    if scale < 1.0:
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        small = small.resize(size, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64), scale


def edge_point(grey: np.ndarray) -> Point | None:
    """Magnitude-weighted centroid (x, y) of the strongest edges, or None for a flat picture."""
    if min(grey.shape) < 3:
        return None
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    if float(magnitude.max()) <= 1.0:
        return None
    cutoff = np.quantile(magnitude, 1.0 - EDGE_TOP_SHARE)
    weights = np.where(magnitude >= cutoff, magnitude, 0.0)
    total = float(weights.sum())
    rows, cols = np.indices(grey.shape)
    return float((weights * cols).sum() / total), float((weights * rows).sum() / total)


def _entropy(window: np.ndarray) -> float:
    counts = np.bincount(window.astype(np.int64).ravel(), minlength=256).astype(np.float64)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def entropy_point(grey: np.ndarray, window: tuple[int, int]) -> Point | None:
    """Centre (x, y) of the highest-entropy `window` (width, height), or None when the window
    fills the picture."""
    height, width = grey.shape
    win_w, win_h = min(window[0], width), min(window[1], height)
    room_x, room_y = width - win_w, height - win_h
    if room_x <= 0 and room_y <= 0:
        return None
    steps = np.linspace(0.0, 1.0, ENTROPY_WINDOWS)
    best: tuple[float, Point] | None = None
    for step in steps:
        left, top = round(room_x * step), round(room_y * step)
        score = _entropy(grey[top : top + win_h, left : left + win_w])
        if best is None or score > best[0] + 1e-9:
            best = (score, (left + win_w / 2, top + win_h / 2))
    return None if best is None else best[1]


def focal_point(image: Image.Image, crop: tuple[int, int]) -> Point:
    """The point (x, y, in `image` pixels) a `crop`-sized window should be centred on."""
    grey, scale = _grey(image)
    window = (max(1, round(crop[0] * scale)), max(1, round(crop[1] * scale)))
    weighted = [
        (EDGE_WEIGHT, edge_point(grey)),
        (ENTROPY_WEIGHT, entropy_point(grey, window)),
    ]
    found = [(weight, point) for weight, point in weighted if point is not None]
    if not found:
        return image.size[0] / 2, image.size[1] / 2
    total = sum(weight for weight, _ in found)
    x = sum(weight * point[0] for weight, point in found) / total
    y = sum(weight * point[1] for weight, point in found) / total
    return x / scale, y / scale


def crop_box(
    image_size: tuple[int, int], crop: tuple[int, int], centre: Point
) -> tuple[int, int, int, int]:
    """The `crop`-sized box centred on `centre`, moved inside the picture."""
    left = min(max(round(centre[0] - crop[0] / 2), 0), image_size[0] - crop[0])
    top = min(max(round(centre[1] - crop[1] / 2), 0), image_size[1] - crop[1])
    return left, top, left + crop[0], top + crop[1]
