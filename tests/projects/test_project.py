"""Making projects and versions: the dataset, the resolved options, `--from`, and clear errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from brushwork.core.errors import ConfigError
from brushwork.datasets.prepare import PrepareOptions
from brushwork.projects.layout import ProjectNotFoundError, version_name
from brushwork.projects.project import NewProject, create_project, list_projects, open_project
from brushwork.projects.records import VersionStatus
from brushwork.projects.versions import NewVersion, create_version, read_version_config

from .conftest import write_options, write_pictures

SMALL = PrepareOptions(size=(64, 64))


def test_a_flat_folder_becomes_a_kohya_folder_and_the_source_is_kept(tmp_path: Path) -> None:
    source = write_pictures(tmp_path / "pictures", 3)
    (source / "broken.png").write_bytes(b"not a picture")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    home = tmp_path / "projects"
    project = create_project(home, NewProject("cat", source, SMALL, repeats=5))
    subset = project.dataset_dir / "5_cat"
    assert sorted(p.name for p in subset.glob("*.png")) == ["00.png", "01.png", "02.png"]
    assert (subset / "00.txt").read_text() == "sks, cat, sitting"
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    record = json.loads((home / "cat" / "project.json").read_text())
    assert record["format"] == "brushwork.project" and record["dataset"]["kept"] == 3
    assert [s["reason"] for s in record["dataset"]["skipped"]] == ["broken"]
    assert record["concept"] is None  # not a shapes-world dataset
    assert [p.name for p in list_projects(home)] == ["cat"]
    assert not [p for p in home.iterdir() if p.name.startswith(".")]  # no staging left


def test_kohya_folders_are_kept_and_pictures_copied_unprepared(tmp_path: Path) -> None:
    source = tmp_path / "pictures"
    write_pictures(source / "3_sks cat", 2)
    write_pictures(source / "1_cat", 1, seed=5)
    project = create_project(tmp_path / "p", NewProject("cats", source, prepare=None))
    assert sorted(p.name for p in project.dataset_dir.iterdir()) == ["1_cat", "3_sks cat"]
    assert not project.record.dataset.prepared


def test_duplicate_names_and_bad_sources_are_refused(tmp_path: Path) -> None:
    source = write_pictures(tmp_path / "pictures", 2)
    home = tmp_path / "projects"
    create_project(home, NewProject("cat", source, SMALL))
    with pytest.raises(ConfigError, match="already exists"):
        create_project(home, NewProject("cat", source, SMALL))
    with pytest.raises(ConfigError, match="letters, digits"):
        create_project(home, NewProject("a/b", source, SMALL))
    mixed = write_pictures(tmp_path / "mixed", 1)
    write_pictures(mixed / "2_x", 1, seed=3)
    with pytest.raises(ConfigError, match="mixes pictures"):
        create_project(home, NewProject("mixed", mixed, SMALL))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no pictures"):
        create_project(home, NewProject("empty", empty, SMALL))
    assert [p.name for p in list_projects(home)] == ["cat"]


def test_unknown_projects_and_versions_name_what_exists(tmp_path: Path) -> None:
    home = tmp_path / "projects"
    create_project(home, NewProject("cat", write_pictures(tmp_path / "pictures", 2), SMALL))
    with pytest.raises(ProjectNotFoundError, match=r"no project 'dog'.*projects: cat"):
        open_project(home, "dog")
    with pytest.raises(ProjectNotFoundError, match=r"no version 'v3' \(versions: none yet\)"):
        open_project(home, "cat").version("3")
    with pytest.raises(ConfigError, match="not a version name"):
        version_name("latest")


def test_a_version_gets_the_projects_paths_and_keeps_its_options(
    tmp_path: Path, checkpoint: Path
) -> None:
    project = create_project(
        tmp_path / "p", NewProject("cat", write_pictures(tmp_path / "in", 2), SMALL)
    )
    given = write_options(
        tmp_path / "run.toml", checkpoint, output_dir="elsewhere", noise_offset=0.05
    )
    made = create_version(project, NewVersion(given))
    assert made.name == "v1" and made.record.status is VersionStatus.CREATED
    config = read_version_config(made)
    folder = project.layout.folder / "versions" / "v1"
    assert config.train_data_dir == project.dataset_dir.absolute()
    assert config.output_dir == (folder / "checkpoints").absolute()
    assert config.logging_dir == (folder / "logs").absolute()
    assert config.output_name == "cat" and config.noise_offset == 0.05
    assert config.save_every_n_epochs == 1  # a project keeps every epoch unless told otherwise
    assert (folder / "given-config.toml").read_bytes() == given.read_bytes()
    assert any("output_dir = 'elsewhere' is replaced" in w for w in made.record.warnings)
    on_disk = json.loads((folder / "version.json").read_text())
    assert on_disk["status"] == "created" and on_disk["config_origin"] == str(given.absolute())


def test_from_copies_a_versions_options_and_the_toml_overrides_them(
    tmp_path: Path, checkpoint: Path
) -> None:
    project = create_project(
        tmp_path / "p", NewProject("cat", write_pictures(tmp_path / "in", 2), SMALL)
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sks cat --w 64 --h 64 --s 2\n")
    create_version(
        project,
        NewVersion(write_options(tmp_path / "v1.toml", checkpoint, noise_offset=0.1,
                                 sample_prompts=str(prompts), save_every_n_epochs=2)),
    )  # fmt: skip
    override = tmp_path / "v2.toml"
    override.write_text("network_dim = 8\nlearning_rate = 5e-4\n")
    second = create_version(project, NewVersion(override, parent="v1"))
    assert second.name == "v2" and second.record.parent == "v1"
    config = read_version_config(second)
    assert config.network_dim == 8 and config.learning_rate == 5e-4  # from the TOML
    assert config.noise_offset == 0.1 and config.save_every_n_epochs == 2  # from v1
    assert config.pretrained_model_name_or_path == str(checkpoint)
    folder = project.layout.folder / "versions" / "v2"
    assert config.output_dir == (folder / "checkpoints").absolute()  # its own, not v1's
    assert config.sample_prompts == (folder / "sample-prompts.txt").absolute()
    assert (folder / "sample-prompts.txt").read_text() == prompts.read_text()
    with open(project.layout.folder / "versions" / "v1" / "config.toml", "rb") as handle:
        assert tomllib.load(handle)["network_dim"] == 2  # v1 unchanged


def test_version_errors_are_clear_and_leave_nothing(tmp_path: Path, checkpoint: Path) -> None:
    project = create_project(
        tmp_path / "p", NewProject("cat", write_pictures(tmp_path / "in", 2), SMALL)
    )
    with pytest.raises(ConfigError, match="needs its training options"):
        create_version(project, NewVersion())
    other = write_options(tmp_path / "bad.toml", checkpoint, dataset_config="data.toml")
    with pytest.raises(ConfigError, match="dataset_config is set"):
        create_version(project, NewVersion(other))
    bad = write_options(tmp_path / "bad2.toml", checkpoint, lr_scheduler="sideways")
    with pytest.raises(ConfigError, match="lr_scheduler"):
        create_version(project, NewVersion(bad))
    with pytest.raises(ProjectNotFoundError, match="no version 'v7'"):
        create_version(project, NewVersion(parent="v7"))
    assert list(project.layout.versions_dir.iterdir()) == []
