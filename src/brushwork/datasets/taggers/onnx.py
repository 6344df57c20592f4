"""ONNX taggers run with onnxruntime: WD14 (SmilingWolf's `wd-*-tagger` folders) and DeepDanbooru
exports.

WD14, as users download it: a folder with `model.onnx` and `selected_tags.csv` (columns
`tag_id,name,category,count`; category 9 rating, 4 character, 0 general). The model takes NHWC
float32 **BGR** pixels in 0..255: the picture (transparency flattened on white) is padded to a
centred white square, then resized to the model's side (read from the ONNX input shape; area
averaging when shrinking, Lanczos when growing), as kohya's `tag_images_by_wd14_tagger.py`
does. Its output is one score per tag row.

DeepDanbooru exported to ONNX: a folder with one `.onnx` file and `tags.txt` (one tag per line;
`tags-character.txt` marks character tags; `rating:*` tags are ratings). Input NHWC float32
**RGB** in 0..1 at the model's side (512 for the published model), the picture fitted inside
the square keeping its aspect ratio and padded with black, as DeepDanbooru's own
`load_image_for_evaluate` does. A1111's DeepBooru `.pt` file is a pickled PyTorch module and
is not loaded (nothing is unpickled here); export it to ONNX first.

Scores: WD14 and DeepDanbooru graphs end in a sigmoid, so their outputs are probabilities and
are used as they are. An export whose graph stops at the logits is recognised by values outside
[0, 1] and passed through a sigmoid.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from brushwork.core.errors import CorruptModelError, ModelFileError
from brushwork.datasets.taggers.base import Prediction, ScoredTag, TagCategory
from brushwork.training.data.images import to_rgb

logger = logging.getLogger(__name__)

WD14_DEFAULT_SIDE = 448
DEEPDANBOORU_DEFAULT_SIDE = 512
Preprocess = Callable[[Image.Image, int], np.ndarray]


@dataclass(frozen=True)
class TagTable:
    """The tag of each model output, in output order."""

    names: tuple[str, ...]
    categories: tuple[TagCategory, ...]


def _category(raw: str, path: Path, line: int) -> TagCategory:
    try:
        number = int(raw)
    except ValueError as exc:
        raise CorruptModelError(path, f"line {line}: category {raw!r} is not a number") from exc
    try:
        return TagCategory(number)
    except ValueError:
        return TagCategory.GENERAL  # unknown booru categories use the general threshold


def read_selected_tags(path: Path) -> TagTable:
    """WD14's `selected_tags.csv`: a header row with at least `name` and `category`."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptModelError(path, f"cannot be read as CSV ({exc})") from exc
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise CorruptModelError(
            path,
            "is not a WD14 tag list",
            hint="expected a header `tag_id,name,category,count` and one row per tag",
        )
    names = tuple(row["name"] or "" for row in rows)
    categories = tuple(_category(row["category"], path, i + 2) for i, row in enumerate(rows))
    return TagTable(names, categories)


def read_deepdanbooru_tags(folder: Path) -> TagTable:
    """`tags.txt` (+ optional `tags-character.txt`) of a DeepDanbooru project folder."""

    def lines(name: str) -> list[str]:
        path = folder / name
        if not path.is_file():
            return []
        return [
            line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]

    names = tuple(lines("tags.txt"))
    characters = set(lines("tags-character.txt"))
    categories = tuple(
        TagCategory.RATING
        if name.startswith("rating:")
        else TagCategory.CHARACTER
        if name in characters
        else TagCategory.GENERAL
        for name in names
    )
    return TagTable(names, categories)


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    shrinking = size[0] < image.size[0] or size[1] < image.size[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS
    return image if image.size == size else image.resize(size, method)


def wd14_pixels(image: Image.Image, side: int) -> np.ndarray:
    """[side, side, 3] float32 BGR 0..255: padded to a white square, then resized."""
    rgb = to_rgb(image)
    square = max(rgb.size)
    canvas = Image.new("RGB", (square, square), (255, 255, 255))
    canvas.paste(rgb, ((square - rgb.size[0]) // 2, (square - rgb.size[1]) // 2))
    pixels = np.asarray(_resize(canvas, (side, side)), dtype=np.float32)
    return np.ascontiguousarray(pixels[:, :, ::-1])


def deepdanbooru_pixels(image: Image.Image, side: int) -> np.ndarray:
    """[side, side, 3] float32 RGB 0..1: fitted inside the square, padded with black."""
    rgb = to_rgb(image)
    scale = side / max(rgb.size)
    fitted = _resize(rgb, (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale))))
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(fitted, ((side - fitted.size[0]) // 2, (side - fitted.size[1]) // 2))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Model outputs as probabilities: as they are when already in [0, 1] (a sigmoid ends the
    graph, as in every WD14 and DeepDanbooru release), else through a sigmoid (logits)."""
    values = scores.astype(np.float64)
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        logger.debug("tagger outputs leave [0, 1]: treated as logits")
        return np.asarray(1.0 / (1.0 + np.exp(-values)))
    return values


_ORT_ERROR_NAMES = (
    "Fail",
    "InvalidArgument",
    "NoSuchFile",
    "NoModel",
    "EngineError",
    "RuntimeException",
    "InvalidProtobuf",
    "ModelLoaded",
    "NotImplemented",
    "InvalidGraph",
    "EPFail",
)


def _ort_errors(module: Any) -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception classes (they derive from Exception directly)."""
    state = module.capi.onnxruntime_pybind11_state
    found = [getattr(state, name, None) for name in _ORT_ERROR_NAMES]
    return (RuntimeError, OSError, *(c for c in found if isinstance(c, type)))


def _providers(module: Any) -> list[str]:
    available = set(module.get_available_providers())
    preferred = ("CUDAExecutionProvider", "CPUExecutionProvider")
    return [name for name in preferred if name in available] or sorted(available)


class OnnxTagger:
    """A booru tagger in one ONNX file: pictures in, one probability per tag-table row out."""

    def __init__(
        self, name: str, model: Path, table: TagTable, preprocess: Preprocess, default_side: int
    ) -> None:
        import onnxruntime  # heavy; only when a tagger is used

        self._errors = _ort_errors(onnxruntime)
        try:
            self._session = onnxruntime.InferenceSession(
                str(model), providers=_providers(onnxruntime)
            )
        except self._errors as exc:
            raise CorruptModelError(model, f"onnxruntime cannot load it ({exc})") from exc
        self._name = name
        self._model = model
        self._table = table
        self._preprocess = preprocess
        self._input = self._session.get_inputs()[0]
        self._channels_first, self.side = self._layout(default_side)
        self._check_output()

    @property
    def name(self) -> str:
        return self._name

    def _layout(self, default_side: int) -> tuple[bool, int]:
        shape = list(self._input.shape)
        if self._input.type != "tensor(float)" or len(shape) != 4:
            raise ModelFileError(
                self._model,
                f"input {self._input.name} is {self._input.type} {shape}, not a float image batch",
            )
        channels_first = shape[1] == 3 and shape[3] != 3
        side = shape[2] if channels_first else shape[1]
        return channels_first, side if isinstance(side, int) and side > 0 else default_side

    def _check_output(self) -> None:
        shape = self._session.get_outputs()[0].shape
        count = shape[-1] if shape else None
        if isinstance(count, int) and count != len(self._table.names):
            raise ModelFileError(
                self._model,
                f"outputs {count} scores but the tag list has {len(self._table.names)} tags",
                hint="the model and its tag file come from different taggers",
            )

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        """[len(images), tags] probabilities."""
        batch = np.stack([self._preprocess(image, self.side) for image in images])
        if self._channels_first:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        try:
            raw = np.asarray(self._session.run(None, {self._input.name: batch})[0])
        except self._errors as exc:
            raise ModelFileError(self._model, f"the tagger failed on a batch ({exc})") from exc
        if raw.ndim != 2 or raw.shape[1] != len(self._table.names):
            raise ModelFileError(
                self._model,
                f"returned scores of shape {list(raw.shape)} for {len(self._table.names)} tags",
            )
        return as_probabilities(raw)

    def predict(self, images: Sequence[Image.Image], floor: float) -> list[Prediction]:
        results = []
        ratings = [i for i, c in enumerate(self._table.categories) if c is TagCategory.RATING]
        for row in self.scores(images):
            keep = np.flatnonzero(row >= floor)
            indices = sorted(set(keep.tolist()) | set(ratings))
            tags = tuple(
                ScoredTag(self._table.names[i], self._table.categories[i], float(row[i]))
                for i in indices
            )
            results.append(Prediction(tags))
        return results


def wd14_tagger(folder: Path, model: Path, tags_file: Path) -> OnnxTagger:
    return OnnxTagger(
        folder.name, model, read_selected_tags(tags_file), wd14_pixels, WD14_DEFAULT_SIDE
    )


def deepdanbooru_tagger(folder: Path, model: Path) -> OnnxTagger:
    table = read_deepdanbooru_tags(folder)
    return OnnxTagger(folder.name, model, table, deepdanbooru_pixels, DEEPDANBOORU_DEFAULT_SIDE)
