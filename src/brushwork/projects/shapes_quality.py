"""The shapes-world scorer of `project best`: adoption and preservation, read by the demo probe.

For a candidate (a checkpoint at a weight) the LoRA is applied outside the prompt, as A1111's
extra networks are (`GenerationRequest.loras`), and `evaluation.quality` draws and judges:

* adoption: `a red <trigger> on a purple background` and three more colours, at every seed;
  the share the probe reads as the concept's shape;
* preservation: the base prompt set (every base shape in every colour) at every seed; the share
  whose probed shape and colour match the prompt.

The base model (no LoRA) is measured the same way; `best.choose_by_quality` compares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brushwork.demo.probe import Probe
from brushwork.demo.shapes import ShapeSpec
from brushwork.evaluation.quality import DrawSettings, adherence, adoption
from brushwork.generation import GenerationRequest, Generator
from brushwork.generation.request import LoraChoice
from brushwork.generation.xyz_epochs import LibraryWithLoraFiles, lora_query
from brushwork.library.catalog import Library
from brushwork.loading import LoadedModel
from brushwork.projects.best import BestReport, Candidate, Measurement, Scorer, best_by_quality
from brushwork.projects.preview import checkpoint_files
from brushwork.projects.project import Project, Version
from brushwork.projects.records import Concept

DEFAULT_SEEDS = (0, 1)
ADOPTION_COLORS = ("red", "blue", "yellow", "green")


@dataclass(frozen=True)
class ShapesScoring:
    """How many pictures are drawn: seeds, sampler settings, and (to measure less) the base
    prompts (`specs`, default every base shape in every colour) and adoption colours."""

    seeds: tuple[int, ...] = DEFAULT_SEEDS
    draw: DrawSettings = field(default_factory=DrawSettings)
    specs: tuple[ShapeSpec, ...] | None = None
    colors: tuple[str, ...] = ADOPTION_COLORS


def shapes_scorer(
    model: LoadedModel,
    library: Library,
    files: Sequence[Path],
    concept: Concept,
    scoring: ShapesScoring | None = None,
    *,
    probe: Probe | None = None,
) -> Scorer:
    """A scorer that draws with `model`, the LoRA `files` applied from beside `library`."""
    scoring = scoring or ShapesScoring()
    with_files = LibraryWithLoraFiles(library, files)
    scan = with_files.scan()
    names = {path.absolute(): lora_query(with_files, path, scan) for path in files}
    generator = Generator(model, library=with_files)
    judge = probe or Probe.load()

    def draw(request: GenerationRequest) -> list[Any]:
        return list(generator.generate(request).images)

    def score(candidate: Candidate | None) -> Measurement:
        extra: dict[str, Any] = {}
        if candidate is not None:
            name = names[candidate.file.absolute()]
            extra = {"loras": (LoraChoice(name, candidate.strength),)}
        taught = adoption(
            draw, judge, concept.shape, concept.trigger, scoring.seeds, scoring.draw,
            colors=scoring.colors, request_extra=extra,
        )  # fmt: skip
        kept = adherence(
            draw, judge, scoring.seeds, scoring.draw, specs=scoring.specs, request_extra=extra
        )
        return Measurement(
            adoption=taught.adoption,
            preservation=kept.shape_and_color,
            detail={"adoption": taught.as_dict(), "preservation": kept.as_dict()},
        )

    return score


MeasuredCallback = Callable[[Candidate | None, Measurement, int, int], None]


def best_in_shapes_world(
    project: Project,
    version: Version,
    concept: Concept,
    strengths: Sequence[float],
    *,
    model: LoadedModel,
    library: Library,
    scoring: ShapesScoring | None = None,
    measured: MeasuredCallback | None = None,
) -> BestReport:
    """`best.best_by_quality` with the shapes scorer; `measured(candidate, measurement, done,
    total)` hears after each measurement (the base model's first, as candidate None)."""
    files = [item.path for item in checkpoint_files(project, version)]
    scorer = shapes_scorer(model, library, files, concept, scoring)
    total = len(files) * len(strengths) + 1
    done: list[Candidate | None] = []

    def score(candidate: Candidate | None) -> Measurement:
        result = scorer(candidate)
        done.append(candidate)
        if measured is not None:
            measured(candidate, result, len(done), total)
        return result

    return best_by_quality(project, version, score, strengths, concept)
