"""Making, opening and listing training projects (see `layout` for the folder).

`create_project(home, NewProject(name, images, ...))` prepares the source pictures into the
project's dataset (`datasets.prepare_dataset`: sized to multiples of 64, broken and duplicate
pictures skipped and reported, captions carried over; or copied as they are with
`prepare=None`). The source folder is never written.

The dataset is in kohya's layout, which the trainers read: a source whose pictures sit in
`<repeats>_<name>` folders keeps them; a flat folder of pictures goes into
`dataset/<repeats>_<class tokens>/` (repeats 10 and the project's name by default, as kohya
users name their folder). A project is made in a hidden staging folder and renamed into place
when it is whole, so a failed `new` leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from brushwork.core.errors import ConfigError
from brushwork.datasets.captions import walk_files
from brushwork.datasets.images import SOURCE_EXTENSIONS
from brushwork.datasets.prepare import PrepareOptions, PrepareReport, prepare_dataset
from brushwork.projects.concept import detect_concept
from brushwork.projects.layout import (
    ProjectLayout,
    ProjectNotFoundError,
    VersionLayout,
    check_project_name,
    version_name,
)
from brushwork.projects.records import (
    Concept,
    DatasetInfo,
    ProjectRecord,
    SkippedPicture,
    VersionRecord,
    now,
    read_record,
    write_record,
)
from brushwork.training.data.spec import parse_folder_name

logger = logging.getLogger(__name__)

CAPTION_EXTENSIONS = (".txt", ".caption")
DEFAULT_REPEATS = 10


@dataclass(frozen=True)
class Version:
    """One version of a project: its folders and its record."""

    layout: VersionLayout
    record: VersionRecord

    @property
    def name(self) -> str:
        return self.record.name

    def save(self, record: VersionRecord) -> Version:
        write_record(self.layout.record_file, record)
        return Version(self.layout, record)

    def reload(self) -> Version:
        return Version(self.layout, read_record(self.layout.record_file, VersionRecord))


@dataclass(frozen=True)
class Project:
    """One project: its folders and its record."""

    layout: ProjectLayout
    record: ProjectRecord

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def dataset_dir(self) -> Path:
        return self.layout.dataset_dir

    def version(self, name: str) -> Version:
        layout = self.layout.version(name)
        if not layout.record_file.is_file():
            known = ", ".join(self.layout.version_names()) or "none yet"
            raise ProjectNotFoundError(
                f"project {self.name!r} has no version {version_name(name)!r} (versions: {known})",
                hint=f"make one with: brushwork project version {self.name!r} --config FILE.toml",
            )
        return Version(layout, read_record(layout.record_file, VersionRecord))

    def versions(self) -> list[Version]:
        return [self.version(name) for name in self.layout.version_names()]

    def with_concept(self, concept: Concept | None) -> Project:
        record = self.record.model_copy(update={"concept": concept})
        write_record(self.layout.record_file, record)
        return Project(self.layout, record)


@dataclass(frozen=True)
class NewProject:
    """What `create_project` is asked for. `prepare=None` copies the pictures as they are."""

    name: str
    images: Path
    prepare: PrepareOptions | None = field(default_factory=PrepareOptions)
    repeats: int = DEFAULT_REPEATS
    class_tokens: str | None = None  # the flat-folder subset's name; default: the project name
    concept: Concept | None = None
    detect: bool = True  # read the concept of a shapes-world dataset when none is given


def open_project(home: Path, name: str) -> Project:
    layout = ProjectLayout(home / check_project_name(name))
    if not layout.record_file.is_file():
        known = ", ".join(p.name for p in list_projects(home)) or "none yet"
        raise ProjectNotFoundError(
            f"no project {name!r} in {home} (projects: {known})",
            hint="make one with: brushwork project new NAME --images DIR "
            "(or give the folder that holds it with --projects-dir)",
        )
    return Project(layout, read_record(layout.record_file, ProjectRecord))


def list_projects(home: Path) -> list[Project]:
    """The projects in `home`, by name (folders without a record are not projects)."""
    if not home.is_dir():
        return []
    found = []
    for folder in sorted(home.iterdir(), key=lambda p: p.name.casefold()):
        layout = ProjectLayout(folder)
        if folder.is_dir() and not folder.name.startswith(".") and layout.record_file.is_file():
            found.append(Project(layout, read_record(layout.record_file, ProjectRecord)))
    return found


def _source_shape(images: Path) -> str:
    """`kohya` (pictures in `<repeats>_<name>` folders) or `flat` (pictures at the top)."""
    if not images.is_dir():
        raise ConfigError(f"--images {images} is not a folder", hint="give the folder of pictures")
    pictures = walk_files(images, SOURCE_EXTENSIONS)
    if not pictures:
        raise ConfigError(f"--images {images} holds no pictures")
    top = [p for p in pictures if p.parent == images]
    kohya = {p.relative_to(images).parts[0] for p in pictures if p.parent != images}
    kohya = {name for name in kohya if parse_folder_name(name) is not None}
    if top and kohya:
        raise ConfigError(
            f"--images {images} mixes pictures at the top with kohya folders "
            f"({', '.join(sorted(kohya))})",
            hint="move the loose pictures into a '<repeats>_<name>' folder",
        )
    if not top and not kohya:
        raise ConfigError(
            f"--images {images}: the pictures are in sub-folders that are not kohya folders",
            hint="give the folder that holds the pictures, or name the sub-folders "
            "'<repeats>_<name>' (e.g. 10_heart)",
        )
    return "kohya" if kohya else "flat"


def _subset_folder(request: NewProject) -> str:
    if request.repeats < 1:
        raise ConfigError(f"--repeats {request.repeats} must be at least 1")
    tokens = (request.class_tokens or request.name).strip()
    if not tokens or any(c in tokens for c in "/\\"):
        raise ConfigError(f"--class-tokens {tokens!r} cannot name a dataset folder")
    return f"{request.repeats}_{tokens}"


def _copy_pictures(source: Path, target: Path) -> DatasetInfo:
    """Copy pictures (kohya's extensions) and their captions as they are."""
    from brushwork.training.data.spec import IMAGE_EXTENSIONS

    copied = 0
    for picture in walk_files(source, IMAGE_EXTENSIONS):
        folder = target / picture.parent.relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(picture, folder / picture.name)
        copied += 1
        for extension in CAPTION_EXTENSIONS:
            caption = picture.with_suffix(extension)
            if caption.is_file():
                shutil.copy2(caption, folder / caption.name)
    return DatasetInfo(prepared=False, kept=copied, written=copied)


def _dataset_info(report: PrepareReport) -> DatasetInfo:
    options = report.options
    return DatasetInfo(
        prepared=True,
        size=options.size,
        buckets=options.buckets,
        crop=options.crop.value,
        flip=options.flip,
        kept=len(report.kept),
        written=sum(len(item.outputs) for item in report.kept),
        skipped=tuple(
            SkippedPicture(source=str(s.source), reason=s.reason.value, message=s.message)
            for s in report.skipped
        ),
    )


def _make_dataset(request: NewProject, dataset: Path) -> DatasetInfo:
    kohya = _source_shape(request.images) == "kohya"
    target = dataset if kohya else dataset / _subset_folder(request)
    if request.prepare is None:
        info = _copy_pictures(request.images, target)
    else:
        info = _dataset_info(prepare_dataset(request.images, target, request.prepare))
    if info.kept == 0:
        reasons = "; ".join(s.message for s in info.skipped[:5])
        raise ConfigError(f"no usable pictures in {request.images}: {reasons or 'none found'}")
    return info


def create_project(home: Path, request: NewProject) -> Project:
    """Make project `request.name` in `home` (see the module docstring)."""
    name = check_project_name(request.name)
    layout = ProjectLayout(home / name)
    if layout.folder.exists():
        raise ConfigError(
            f"project {name!r} already exists ({layout.folder})",
            hint=f"pick another name, or see it with: brushwork project show {name!r}",
        )
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".new-{name}-", dir=home))
    try:
        staged = ProjectLayout(staging)
        info = _make_dataset(request, staged.dataset_dir)
        concept = request.concept
        if concept is None and request.detect:
            concept = detect_concept(staged.dataset_dir)
        record = ProjectRecord(
            name=name,
            created=now(),
            source_images=str(request.images.absolute()),
            dataset=info,
            concept=concept,
        )
        staged.versions_dir.mkdir()
        write_record(staged.record_file, record)
        staging.rename(layout.folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("project %s: %d pictures in %s", name, info.written, layout.dataset_dir)
    return Project(layout, record)
