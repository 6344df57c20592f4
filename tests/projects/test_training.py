"""A project with two versions trained (tiny model, 2 epochs each), its preview grid, `best`."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.settings import Settings
from brushwork.datasets.prepare import PrepareOptions
from brushwork.generation import GenerationRequest
from brushwork.generation.xyz_output import read_xyz_record
from brushwork.library.catalog import Library
from brushwork.loading import load_model
from brushwork.projects.best import (
    LOSS,
    QUALITY,
    Candidate,
    Measurement,
    best_by_loss,
    best_by_quality,
)
from brushwork.projects.preview import PreviewRequest, PreviewRun, preview_version
from brushwork.projects.project import NewProject, Project, Version, create_project, open_project
from brushwork.projects.records import Concept, VersionStatus
from brushwork.projects.train import TrainOptions, train_version
from brushwork.projects.versions import NewVersion, create_version

from .conftest import write_options, write_pictures


@dataclass(frozen=True)
class Trained:
    home: Path
    project: Project
    v1: Version
    v2: Version


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Trained:
    work = tmp_path_factory.mktemp("trained")
    source = write_pictures(work / "pictures", 4)
    home = work / "projects"
    project = create_project(
        home, NewProject("cat", source, PrepareOptions(size=(64, 64)), repeats=1)
    )
    first = create_version(project, NewVersion(write_options(work / "v1.toml", checkpoint)))
    override = work / "v2.toml"
    override.write_text("network_dim = 4\nlearning_rate = 5e-4\n")
    second = create_version(project, NewVersion(override, parent="v1"))
    v1 = train_version(project, first, checkpoint)
    v2 = train_version(project, second, checkpoint)
    return Trained(home, open_project(home, "cat"), v1, v2)


def test_each_version_keeps_its_own_checkpoints(trained: Trained) -> None:
    for version, dim in ((trained.v1, 2), (trained.v2, 4)):
        record = version.record
        assert record.status is VersionStatus.DONE and record.epochs == 2 and record.steps == 4
        assert record.files.checkpoints == (
            "checkpoints/cat-000001.safetensors",
            "checkpoints/cat.safetensors",
        )
        folder = version.layout.checkpoints_dir
        assert folder == trained.project.layout.folder / "versions" / version.name / "checkpoints"
        assert all(version.layout.absolute(path).is_file() for path in record.files.checkpoints)
        assert version.layout.absolute(record.files.loss_curve or "").is_file()
        assert "saved" in version.layout.log_file.read_text()
        from brushwork.formats.safeio import read_header

        assert read_header(folder / "cat.safetensors").metadata["ss_network_dim"] == str(dim)
        on_disk = json.loads(version.layout.record_file.read_text())
        assert on_disk["status"] == "done" and on_disk["seconds"] > 0 and on_disk["pid"] is None
    v1_files = {p.read_bytes() for p in trained.v1.layout.checkpoints_dir.glob("*.safetensors")}
    v2_files = {p.read_bytes() for p in trained.v2.layout.checkpoints_dir.glob("*.safetensors")}
    assert not v1_files & v2_files


def test_a_finished_version_is_not_trained_again_without_force(
    trained: Trained, checkpoint: Path
) -> None:
    with pytest.raises(ConfigError, match=r"already trained.*--force"):
        train_version(trained.project, trained.v1, checkpoint)
    with pytest.raises(ConfigError, match="no saved training state"):
        train_version(
            trained.project, trained.v1, checkpoint, TrainOptions(force=True, resume=True)
        )


def test_the_preview_grid_has_one_labelled_cell_per_checkpoint_and_weight(
    trained: Trained, library_root: Path, tmp_path: Path
) -> None:
    library = Library.open(Settings(roots=(library_root,), data_dir=tmp_path / "data"))
    run = PreviewRun(
        checkpoint=library_root / "models" / "Stable-diffusion" / "tiny.safetensors",
        library=library,
        load=lambda path, vae: load_model(path, device="cpu", precision="fp32", vae=vae),
    )
    request = GenerationRequest(
        prompt="sks cat", width=64, height=64, steps=2, sampler_name="Euler"
    )
    version, info, _result = preview_version(
        trained.project, trained.v1, PreviewRequest(request, "0.5,1.0", (7,)), run
    )
    grid = version.layout.absolute(info.file)
    assert grid.parent == trained.v1.layout.previews_dir and grid.name == "preview-0001.png"
    record = read_xyz_record(grid.read_bytes())
    assert record is not None and record == json.loads(grid.with_suffix(".json").read_text())
    x_axis, y_axis = record["axes"]
    assert x_axis["type"] == "lora-strength" and x_axis["values"] == [0.5, 1.0]
    assert y_axis["labels"] == ["LoRA: cat-000001", "LoRA: cat"]
    assert x_axis["labels"] == ["LoRA strength: 0.5", "LoRA strength: 1.0"]
    cells = {(cell["x"], cell["y"]) for cell in record["cells"] if cell.get("box")}
    assert cells == {(0, 0), (1, 0), (0, 1), (1, 1)}
    seeds = {seed for cell in record["cells"] for seed in cell["seeds"]}
    assert seeds == {7}
    for cell in record["cells"]:  # each cell applied its row's file at its column's weight
        stem = ("cat-000001", "cat")[cell["y"]]
        assert f'Extra LoRAs: "{stem}:{("0.5", "1")[cell["x"]]}"' in cell["infotext"]
    assert info.cells == 4 and info.weights == (0.5, 1.0) and info.seeds == (7,)
    listed = json.loads(trained.v1.layout.record_file.read_text())["previews"]
    assert listed[-1]["file"] == "previews/preview-0001.png"


def test_best_by_an_injected_scorer_follows_the_rule(trained: Trained) -> None:
    table = {  # (file stem, strength) -> (adoption, preservation); base preservation 0.8
        ("cat-000001", 0.5): (0.50, 0.80),
        ("cat-000001", 1.0): (0.75, 0.72),  # keeps exactly 90%: allowed
        ("cat", 0.5): (0.75, 0.78),  # as much adoption, same weight class: the lower weight wins
        ("cat", 1.0): (1.00, 0.50),  # best adoption but loses adherence
    }
    asked: list[Candidate | None] = []

    def scorer(candidate: Candidate | None) -> Measurement:
        asked.append(candidate)
        if candidate is None:
            return Measurement(0.0, 0.8)
        adoption, preservation = table[(candidate.label, candidate.strength)]
        return Measurement(adoption, preservation)

    concept = Concept(shape="heart", trigger="sks")
    report = best_by_quality(trained.project, trained.v1, scorer, (0.5, 1.0), concept)
    assert asked[0] is None and len(asked) == 5
    assert report.method == QUALITY and report.meets_rule
    assert (report.file.name if report.file else None, report.strength, report.epoch) == (
        "cat.safetensors",
        0.5,
        2,
    )
    assert "highest adoption" in report.reason
    rows = {(row["file"], row["strength"]): row["keeps_preservation"] for row in report.rows}
    assert rows[("cat.safetensors", 1.0)] is False and rows[("cat-000001.safetensors", 1.0)] is True


def test_best_without_a_concept_names_the_lowest_smoothed_loss(trained: Trained) -> None:
    report = best_by_loss(trained.project, trained.v2)
    csv_path = trained.v2.layout.checkpoints_dir / "cat-loss.csv"
    with csv_path.open() as handle:
        last = {int(row["epoch"]): float(row["avr_loss"]) for row in csv.DictReader(handle)}
    expected = min(last, key=lambda epoch: (last[epoch], epoch))
    assert report.method == LOSS and report.epoch == expected and report.strength is None
    assert "weight grid" in report.reason and len(report.rows) == 2
    assert report.to_json()["file"].endswith(
        "cat-000001.safetensors" if expected == 1 else "cat.safetensors"
    )


def test_a_failed_run_is_recorded(tmp_path: Path, checkpoint: Path) -> None:
    source = write_pictures(tmp_path / "pictures", 2)
    project = create_project(
        tmp_path / "p", NewProject("dog", source, PrepareOptions(size=(64, 64)), repeats=1)
    )
    made = create_version(project, NewVersion(write_options(tmp_path / "v.toml", checkpoint)))
    not_a_model = tmp_path / "broken.safetensors"
    not_a_model.write_bytes(b"nothing here")
    with pytest.raises(BrushworkError, match=r"broken\.safetensors"):
        train_version(project, made, not_a_model)
    record = project.version("v1").record
    assert (
        record.status is VersionStatus.FAILED
        and record.error
        and "broken.safetensors" in record.error
    )
    assert record.finished is not None and record.pid is None


def test_the_shapes_scorer_measures_a_weight_of_zero_as_the_base_model(
    trained: Trained, library_root: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from brushwork.demo.shapes import ShapeSpec
    from brushwork.evaluation.quality import DrawSettings
    from brushwork.projects.shapes_quality import ShapesScoring, shapes_scorer

    library = Library.open(Settings(roots=(library_root,), data_dir=tmp_path / "data"))
    files = [trained.v1.layout.absolute(p) for p in trained.v1.record.files.checkpoints]
    scoring = ShapesScoring(
        seeds=(0,),
        draw=DrawSettings(steps=2, sampler_name="Euler", size=64),
        specs=(ShapeSpec("circle", "red", "white"), ShapeSpec("star", "blue", "yellow")),
        colors=("red",),
    )
    model = load_model(checkpoint, device="cpu", precision="fp32")
    scorer = shapes_scorer(model, library, files, Concept(shape="heart", trigger="sks"), scoring)
    base = scorer(None)
    at_zero = scorer(Candidate(files[-1], 2, 0.0, 1))
    at_one = scorer(Candidate(files[-1], 2, 1.0, 1))
    assert at_zero.detail == base.detail  # weight 0 draws exactly the base pictures
    assert base.detail["preservation"]["images"] == 2 and base.detail["adoption"]["images"] == 1
    assert 0.0 <= at_one.adoption <= 1.0 and 0.0 <= at_one.preservation <= 1.0


class _StoppedError(Exception):
    """Stands for a run killed part-way (Ctrl-C, a crash)."""


def test_an_interrupted_version_resumes_from_its_saved_state(
    tmp_path: Path, checkpoint: Path
) -> None:
    from brushwork.training.engine import Hooks

    source = write_pictures(tmp_path / "pictures", 4)
    project = create_project(
        tmp_path / "p", NewProject("cat", source, PrepareOptions(size=(64, 64)), repeats=1)
    )
    options = write_options(tmp_path / "v.toml", checkpoint, save_state=True)
    made = create_version(project, NewVersion(options))

    def stop_at_three(step: int) -> None:
        if step == 3:
            raise _StoppedError()

    with pytest.raises(_StoppedError):
        train_version(
            project, made, checkpoint, TrainOptions(hooks=Hooks(after_step=stop_at_three))
        )
    stopped = project.version("v1")
    assert stopped.record.status is VersionStatus.FAILED
    assert (stopped.layout.checkpoints_dir / "cat-000001-state").is_dir()
    with pytest.raises(ConfigError, match=r"--resume to continue"):
        train_version(project, stopped, checkpoint)
    resumed = train_version(project, stopped, checkpoint, TrainOptions(resume=True))
    assert resumed.record.status is VersionStatus.DONE and resumed.record.steps == 4
    log = (resumed.layout.checkpoints_dir / "cat-loss.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4"]
