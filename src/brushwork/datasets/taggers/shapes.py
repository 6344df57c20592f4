"""The built-in `shapes` tagger: the demo probe reads shapes-world pictures into tags.

Tags are the ones a LoRA trainer would write for the demo world, booru style: the coloured
shape (`red circle`), the background (`white background`) and `striped` for a striped fill.
Each tag's score is the probe's confidence (the lower of shape and colour for the coloured
shape), so a picture that shows no shape falls under the threshold and gets no shape tag.
Runs offline from the weights shipped with the package.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from brushwork.datasets.taggers.base import Prediction, ScoredTag, TagCategory

SHAPES_TAGGER = "shapes"


class ShapesTagger:
    def __init__(self) -> None:
        from brushwork.demo.probe import Probe

        self._probe = Probe.load()

    @property
    def name(self) -> str:
        return SHAPES_TAGGER

    def predict(self, images: Sequence[Image.Image], floor: float) -> list[Prediction]:
        predictions = []
        for result in self._probe.predict(list(images)):
            confidence = result.confidences
            tags = [
                ScoredTag(
                    f"{result.color} {result.shape}",
                    TagCategory.GENERAL,
                    min(confidence["shape"], confidence["color"]),
                ),
                ScoredTag(
                    f"{result.background} background",
                    TagCategory.GENERAL,
                    confidence["background"],
                ),
            ]
            if result.fill == "striped":
                tags.append(ScoredTag("striped", TagCategory.GENERAL, confidence["fill"]))
            predictions.append(Prediction(tuple(t for t in tags if t.score >= floor)))
        return predictions
