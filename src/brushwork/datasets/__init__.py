"""Datasets: preprocess pictures into a training set, tag them, and edit their captions.

- `prepare.prepare_dataset(source, output, PrepareOptions(...))`: sized, cropped, deduplicated
  PNGs with their captions (A1111's preprocess, kohya's buckets).
- `taggers.load_tagger(name_or_folder, roots)` + `taggers.tag_folder(folder, tagger, ...)`:
  WD14 / DeepDanbooru ONNX taggers, BLIP, and the built-in `shapes` tagger.
- `tag_edit.edit_dataset_tags(folder, dataset, TagEditRequest(...))`, `tag_counts`,
  `feature_tags`, and `journal.undo_last(folder)`: dataset-wide caption edits, undoable.
"""

from brushwork.datasets.captions import CaptionedImage, CaptionText, read_captions
from brushwork.datasets.journal import UndoResult, undo_last
from brushwork.datasets.prepare import (
    CropMode,
    PrepareOptions,
    PrepareReport,
    prepare_dataset,
)
from brushwork.datasets.tag_edit import (
    EditAction,
    SortOrder,
    TagEditRequest,
    TagEditResult,
    edit_dataset_tags,
    feature_tags,
    tag_counts,
)

__all__ = [
    "CaptionText",
    "CaptionedImage",
    "CropMode",
    "EditAction",
    "PrepareOptions",
    "PrepareReport",
    "SortOrder",
    "TagEditRequest",
    "TagEditResult",
    "UndoResult",
    "edit_dataset_tags",
    "feature_tags",
    "prepare_dataset",
    "read_captions",
    "tag_counts",
    "undo_last",
]
