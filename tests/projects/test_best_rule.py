"""The rule of `project best` on measurements, and recognising a shapes-world concept."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.demo.dataset import write_dataset
from brushwork.projects.best import Candidate, Measurement, choose_by_quality
from brushwork.projects.concept import caption_noun, check_concept, detect_concept

from .conftest import write_pictures


def _candidate(order: int, strength: float) -> Candidate:
    return Candidate(Path(f"run-{order:06d}.safetensors"), order, strength, order)


def test_the_highest_adoption_that_keeps_adherence_wins() -> None:
    base = Measurement(0.0, 1.0)
    measured = [
        (_candidate(1, 1.0), Measurement(1.0, 0.5)),  # teaches most, forgets the rest
        (_candidate(1, 0.6), Measurement(0.6, 0.95)),
        (_candidate(2, 0.6), Measurement(0.8, 0.9)),
        (_candidate(2, 0.8), Measurement(0.8, 0.92)),  # as good, but a higher weight
    ]
    chosen, measurement, met = choose_by_quality(base, measured)
    assert met and (chosen.epoch, chosen.strength) == (2, 0.6) and measurement.adoption == 0.8


def test_ties_go_to_the_earlier_epoch_at_the_same_weight() -> None:
    measured = [
        (_candidate(3, 0.8), Measurement(0.5, 0.9)),
        (_candidate(2, 0.8), Measurement(0.5, 0.9)),
    ]
    chosen, _m, _met = choose_by_quality(Measurement(0.0, 0.9), measured)
    assert chosen.epoch == 2


def test_when_nothing_keeps_adherence_the_most_preserving_is_named() -> None:
    measured = [
        (_candidate(1, 1.0), Measurement(1.0, 0.3)),
        (_candidate(1, 0.5), Measurement(0.2, 0.6)),
    ]
    chosen, _m, met = choose_by_quality(Measurement(0.0, 0.9), measured)
    assert not met and chosen.strength == 0.5
    with pytest.raises(ConfigError, match="nothing was measured"):
        choose_by_quality(Measurement(0.0, 0.9), [])


def test_a_demo_dataset_with_a_held_out_shape_is_its_own_concept(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", ("heart",), 3, seed=1, repeats=1)
    concept = detect_concept(tmp_path / "data")
    assert concept is not None and (concept.shape, concept.trigger) == ("heart", "heart")
    assert concept.detected


def test_a_trigger_words_shape_is_read_from_the_pictures(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", ("cross",), 4, seed=2, repeats=1, trigger="zxq")
    seen: list[int] = []

    def read_shapes(images: Sequence[Image.Image]) -> list[str]:
        seen.append(len(images))
        return ["cross", "cross", "cross", "star"]

    concept = detect_concept(tmp_path / "data", read_shapes=read_shapes)
    assert seen == [4]
    assert concept is not None and (concept.shape, concept.trigger) == ("cross", "zxq")
    assert "3 of 4 pictures" in concept.evidence
    assert (
        detect_concept(tmp_path / "data", read_shapes=lambda images: ["star", "heart"] * 2) is None
    )


def test_the_real_probe_reads_a_demo_datasets_shape(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", ("heart",), 6, seed=3, repeats=1, trigger="sks")
    concept = detect_concept(tmp_path / "data")
    assert concept is not None and (concept.shape, concept.trigger) == ("heart", "sks")


def test_other_captions_are_not_a_shapes_concept(tmp_path: Path) -> None:
    assert detect_concept(write_pictures(tmp_path / "cats", 2)) is None
    write_dataset(tmp_path / "base", ("circle",), 2, seed=1, repeats=1)
    assert detect_concept(tmp_path / "base") is None  # the demo model knows circles already
    assert caption_noun("a small red striped sks on a white background\n") == "sks"
    assert caption_noun("sks, a red heart on a white background") is None
    with pytest.raises(ConfigError, match="not a shape"):
        check_concept("dragon", "sks")
