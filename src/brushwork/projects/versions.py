"""Making a version of a project: its run options, resolved and kept with it.

`create_version(project, NewVersion(config_file=..., parent=..., overrides=...))` makes the next
version (`v1`, `v2`, ...). Its options are, later ones winning:

1. `save_every_n_epochs = 1` when nothing says how often to save (a project compares its
   checkpoints, so every epoch is kept; set `save_every_n_epochs` or `save_every_n_steps` to
   change it);
2. with `parent` (`--from v1`): that version's resolved options, except its paths;
3. the TOML (`--config`, flat sd-scripts keys, as `brushwork train lora --config` reads it);
4. `overrides` (the command line's `--base` and `--set KEY=VALUE`);
5. what the project fills in: `train_data_dir` (the project's dataset), `output_dir`
   (`versions/vN/checkpoints`), `logging_dir` (`versions/vN/logs`) and `output_name` (the
   project's name unless the options name it). A TOML's own `train_data_dir`, `output_dir` or
   `logging_dir` is replaced, with a warning; `dataset_config` is refused (it would train on
   other pictures than the project's).

Paths in the options (`reg_data_dir`, `vae`, `resume`, a base model file) are made absolute
(sd-scripts reads them from the current folder), and the preview prompts file
(`sample_prompts`) is copied into the version, so the version runs the same from anywhere.
Everything is checked (`training.config_file.resolve_config`) before the version is made; the
version folder is built aside and renamed into place when whole.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brushwork.core.errors import ConfigError
from brushwork.projects.layout import VersionLayout
from brushwork.projects.project import Project, Version
from brushwork.projects.records import VersionRecord, now, write_record
from brushwork.training.config import LoraTrainingConfig
from brushwork.training.config_file import (
    ConfigSource,
    read_config_toml,
    resolve_config,
    sort_options,
    write_resolved_config,
)

PROJECT_OPTIONS = ("train_data_dir", "output_dir", "logging_dir")
NOT_INHERITED = (*PROJECT_OPTIONS, "resume")
REFUSED_OPTIONS = ("dataset_config",)
PATH_OPTIONS = ("reg_data_dir", "vae", "resume", "pretrained_model_name_or_path")


@dataclass(frozen=True)
class NewVersion:
    """What `create_version` is asked for."""

    config_file: Path | None = None
    parent: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


def read_version_config(version: Version) -> LoraTrainingConfig:
    """A version's resolved options, read back from its `config.toml`."""
    known = tuple(LoraTrainingConfig.model_fields)
    config, _warnings = resolve_config(read_config_toml(version.layout.config_file, known=known))
    return config


def _known() -> tuple[str, ...]:
    return tuple(LoraTrainingConfig.model_fields)


def _parent_source(project: Project, parent: str) -> ConfigSource:
    version = project.version(parent)
    source = read_config_toml(version.layout.config_file, known=_known())
    values = {k: v for k, v in source.values.items() if k not in NOT_INHERITED}
    return ConfigSource(values, origin=f"version {version.name}")


def _given_source(config_file: Path) -> tuple[ConfigSource, list[str]]:
    source = read_config_toml(config_file, known=_known())
    for option in REFUSED_OPTIONS:
        if source.values.get(option) is not None:
            raise ConfigError(
                f"{config_file}: {option} is set; a project trains on its own dataset",
                hint="remove it; edit the project's dataset folder (or make a new project) instead",
            )
    warnings = list(source.warnings)
    for option in PROJECT_OPTIONS:
        if source.values.get(option) is not None:
            warnings.append(
                f"{config_file}: {option} = {source.values[option]!r} is replaced by the project's"
            )
    values = {k: v for k, v in source.values.items() if k not in PROJECT_OPTIONS}
    return ConfigSource(values, source.notes, (), source.origin), warnings


def _absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """Path options as absolute paths (a library name for the base model stays a name)."""
    fixed = dict(values)
    for option in PATH_OPTIONS:
        value = fixed.get(option)
        if isinstance(value, str | Path) and str(value).strip():
            path = Path(value).expanduser()
            if option != "pretrained_model_name_or_path" or path.is_file():
                fixed[option] = str(path.absolute()) if path.exists() else str(value)
    return fixed


def _last(sources: Sequence[ConfigSource], option: str) -> Any:
    found = None
    for source in sources:
        if source.values.get(option) is not None:
            found = source.values[option]
    return found


def _sources(project: Project, request: NewVersion) -> tuple[list[ConfigSource], list[str]]:
    if request.parent is None and request.config_file is None and not request.overrides:
        raise ConfigError(
            "a version needs its training options",
            hint="give --config FILE.toml (sd-scripts keys), or --from VERSION to start from one",
        )
    sources: list[ConfigSource] = []
    warnings: list[str] = []
    if request.parent is not None:
        sources.append(_parent_source(project, request.parent))
    if request.config_file is not None:
        given, notes = _given_source(request.config_file)
        sources.append(given)
        warnings += notes
    if request.overrides:
        sources.append(sort_options(request.overrides, origin="command line", known=_known()))
    for source in sources:
        warnings += source.warnings
    sources = [ConfigSource(_absolute_paths(s.values), s.notes, (), s.origin) for s in sources]
    if (
        _last(sources, "save_every_n_epochs") is None
        and _last(sources, "save_every_n_steps") is None
    ):
        sources.insert(0, ConfigSource({"save_every_n_epochs": 1}, origin="project default"))
    return sources, warnings


def _prompts_file(sources: Sequence[ConfigSource]) -> Path | None:
    value = _last(sources, "sample_prompts")
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"sample_prompts: {path} is not a file", hint="give a kohya prompts file")
    return path


def _resolve(
    project: Project, sources: list[ConfigSource], final: VersionLayout, prompts: Path | None
) -> LoraTrainingConfig:
    filled: dict[str, Any] = {
        "train_data_dir": str(project.dataset_dir.absolute()),
        "output_dir": str(final.checkpoints_dir.absolute()),
        "logging_dir": str(final.logs_dir.absolute()),
        "output_name": _last(sources, "output_name") or project.name,
    }
    if prompts is not None:  # copied into the version when it is made
        filled["sample_prompts"] = str(final.sample_prompts_file.absolute())
    config, _warnings = resolve_config(*sources, ConfigSource(filled, origin="project"))
    return config


def create_version(project: Project, request: NewVersion) -> Version:
    """Make the project's next version (see the module docstring)."""
    sources, warnings = _sources(project, request)
    name = project.layout.next_version_name()
    final = VersionLayout(project.layout.versions_dir / name)
    prompts = _prompts_file(sources)
    config = _resolve(project, sources, final, prompts)
    project.layout.versions_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".new-{name}-", dir=project.layout.versions_dir))
    try:
        staged = VersionLayout(staging)
        if request.config_file is not None:
            shutil.copyfile(request.config_file, staged.given_config_file)
        if prompts is not None:
            shutil.copyfile(prompts, staged.sample_prompts_file)
        write_resolved_config(config, staged.config_file)
        record = VersionRecord(
            name=name,
            created=now(),
            parent=None if request.parent is None else project.version(request.parent).name,
            config_origin=None
            if request.config_file is None
            else str(request.config_file.absolute()),
            output_name=config.output_name,
            warnings=tuple(warnings),
        )
        write_record(staged.record_file, record)
        if final.folder.exists():
            raise ConfigError(f"{final.folder} appeared while the version was being made")
        staging.rename(final.folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Version(final, record)
