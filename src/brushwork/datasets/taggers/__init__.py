"""Taggers and captioners: WD14 and DeepDanbooru (ONNX), BLIP (transformers), and the built-in
shapes-world tagger; `tag_folder` writes their tags into caption files."""

from brushwork.datasets.taggers.base import (
    Prediction,
    RatingPlacement,
    ScoredTag,
    TagCategory,
    Tagger,
    TaggingOptions,
    Underscores,
    select_tags,
)
from brushwork.datasets.taggers.resolve import available_taggers, load_tagger, open_tagger_folder
from brushwork.datasets.taggers.run import (
    ExistingCaptions,
    TaggedImage,
    TaggingReport,
    TagStatus,
    tag_folder,
)

__all__ = [
    "ExistingCaptions",
    "Prediction",
    "RatingPlacement",
    "ScoredTag",
    "TagCategory",
    "TagStatus",
    "TaggedImage",
    "Tagger",
    "TaggingOptions",
    "TaggingReport",
    "Underscores",
    "available_taggers",
    "load_tagger",
    "open_tagger_folder",
    "select_tags",
    "tag_folder",
]
