"""Where a training project keeps its things, and the names of projects and versions.

    <projects>/<NAME>/
        project.json                 the project's record (`records.ProjectRecord`)
        dataset/<repeats>_<name>/    the prepared pictures and their caption files (kohya
                                     folders), with the tag editor's undo journal in
                                     dataset/.brushwork-tags/
        versions/v1/
            version.json             the version's record: status, timings, files, previews
            config.toml              the resolved run options (flat sd-scripts keys)
            given-config.toml        the TOML the version was made from, as given
            sample-prompts.txt       a copy of the preview prompts file, when the config has one
            checkpoints/             NAME-000001.safetensors ... NAME.safetensors, NAME-loss.csv,
                                     NAME-loss.png, NAME-config.toml, state folders
            logs/                    train.log (the run's log) and TensorBoard logs
            previews/                preview-0001.png (+ .json): checkpoint x weight grids

`<projects>` is `<first library root>/projects` unless a folder is given (`--projects-dir`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.errors import BrushworkError, ConfigError

PROJECTS_FOLDER = "projects"
PROJECT_RECORD = "project.json"
VERSION_RECORD = "version.json"
VERSION_NAME = re.compile(r"^v(?P<number>[1-9]\d{0,5})$")
_NAME_CHARACTERS = frozenset("._- ")


class ProjectNotFoundError(BrushworkError):
    """No project, or no version of a project, by that name."""


def check_project_name(name: str) -> str:
    """A project name: letters, digits and `._- `, not starting or ending with `.` or a space."""
    if not name.strip() or any(not (c.isalnum() or c in _NAME_CHARACTERS) for c in name):
        raise ConfigError(
            f"project name {name!r} may hold only letters, digits and '._- '",
            hint="e.g. red-heart",
        )
    if name.strip(". ") != name or len(name) > 100:
        raise ConfigError(
            f"project name {name!r} may not start or end with '.' or a space, "
            "nor be longer than 100 characters"
        )
    return name


def version_name(text: str) -> str:
    """`v2` or `2` -> `v2`; anything else is refused."""
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        cleaned = f"v{int(cleaned)}"
    if VERSION_NAME.match(cleaned) is None:
        raise ConfigError(f"{text!r} is not a version name", hint="versions are v1, v2, ...")
    return cleaned


def version_number(name: str) -> int:
    match = VERSION_NAME.match(name)
    return int(match["number"]) if match is not None else 0


def projects_home(library_roots: tuple[Path, ...], override: Path | None = None) -> Path:
    """Where projects live: `override`, else `<first library root>/projects`."""
    if override is not None:
        return override.expanduser().absolute()
    if not library_roots:
        raise ConfigError("no library root to keep projects in", hint="give --projects-dir")
    return library_roots[0] / PROJECTS_FOLDER


@dataclass(frozen=True)
class VersionLayout:
    """The files and folders of one version."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def record_file(self) -> Path:
        return self.folder / VERSION_RECORD

    @property
    def config_file(self) -> Path:
        return self.folder / "config.toml"

    @property
    def given_config_file(self) -> Path:
        return self.folder / "given-config.toml"

    @property
    def sample_prompts_file(self) -> Path:
        return self.folder / "sample-prompts.txt"

    @property
    def checkpoints_dir(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "train.log"

    @property
    def previews_dir(self) -> Path:
        return self.folder / "previews"

    def relative(self, path: Path) -> str:
        """`path` relative to the version folder (POSIX), as records keep it."""
        try:
            return path.absolute().relative_to(self.folder.absolute()).as_posix()
        except ValueError:
            return str(path)

    def absolute(self, recorded: str) -> Path:
        """A recorded path back as a path (relative ones are inside the version folder)."""
        path = Path(recorded)
        return path if path.is_absolute() else self.folder / path


@dataclass(frozen=True)
class ProjectLayout:
    """The files and folders of one project."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def record_file(self) -> Path:
        return self.folder / PROJECT_RECORD

    @property
    def dataset_dir(self) -> Path:
        return self.folder / "dataset"

    @property
    def versions_dir(self) -> Path:
        return self.folder / "versions"

    def version(self, name: str) -> VersionLayout:
        return VersionLayout(self.versions_dir / version_name(name))

    def version_names(self) -> list[str]:
        """The versions that exist (with a record), in number order."""
        if not self.versions_dir.is_dir():
            return []
        names = [
            path.name
            for path in self.versions_dir.iterdir()
            if VERSION_NAME.match(path.name) and (path / VERSION_RECORD).is_file()
        ]
        return sorted(names, key=version_number)

    def next_version_name(self) -> str:
        taken = [version_number(p.name) for p in self._version_folders()]
        return f"v{max(taken, default=0) + 1}"

    def _version_folders(self) -> list[Path]:
        if not self.versions_dir.is_dir():
            return []
        return [p for p in self.versions_dir.iterdir() if VERSION_NAME.match(p.name)]
