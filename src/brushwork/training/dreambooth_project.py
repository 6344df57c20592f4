"""The "create model" step of the WebUI's DreamBooth extension: a training project made from a
source checkpoint, which `brushwork train dreambooth --config <project>/config.toml` trains.

    <projects>/<name>/
        model/<name>-base.safetensors  working copy of the source (+ its .yaml sidecar);
                                       a hard link when the file system allows, a converted
                                       .safetensors when the source is a pickle (.ckpt)
        img/<repeats>_<token> <class>/ put the instance pictures here (+ optional .txt captions)
        reg/1_<class>/                 class pictures; missing ones are generated up to
                                       num_class_images before the first step
        output/                        checkpoints, state folders, logs, samples
        sample_prompts.txt             preview prompts (kohya syntax)
        config.toml                    the run's options (flat sd-scripts keys), absolute paths

With `reference=True` no copy is made: the config points at the source file itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from brushwork.core.arch import family_facts
from brushwork.core.errors import ConfigError
from brushwork.core.fsutil import atomic_write_bytes, atomic_writer
from brushwork.core.kinds import FileFormat
from brushwork.formats.checkpoint import (
    read_checkpoint,
    read_checkpoint_architecture,
    write_checkpoint,
)
from brushwork.formats.safeio import sniff_format
from brushwork.training.dreambooth_data import folder_name

logger = logging.getLogger(__name__)

_NAME_CHARACTERS = frozenset("._- ")


@dataclass(frozen=True)
class ProjectLayout:
    """The folders and files of one DreamBooth project."""

    folder: Path

    @property
    def config_file(self) -> Path:
        return self.folder / "config.toml"

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def instance_root(self) -> Path:
        return self.folder / "img"

    @property
    def class_root(self) -> Path:
        return self.folder / "reg"

    @property
    def output_dir(self) -> Path:
        return self.folder / "output"

    @property
    def sample_prompts(self) -> Path:
        return self.folder / "sample_prompts.txt"


@dataclass(frozen=True)
class ProjectRequest:
    """What `create_project` is asked for (the CLI's options)."""

    name: str
    source: Path
    projects_dir: Path
    token: str = "sks"
    class_word: str = "person"
    repeats: int = 10
    num_class_images: int = 100
    resolution: int | None = None  # None: the family's native size
    reference: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class CreatedProject:
    layout: ProjectLayout
    model_file: Path
    instance_dir: Path
    class_dir: Path


def check_project_name(name: str) -> str:
    if not name.strip() or any(not (c.isalnum() or c in _NAME_CHARACTERS) for c in name):
        raise ConfigError(
            f"project name {name!r} may hold only letters, digits and '._- '",
            hint="e.g. my-dog",
        )
    if name.strip(". ") != name or name in {".", ".."}:
        raise ConfigError(f"project name {name!r} may not start or end with '.' or a space")
    return name


def create_project(request: ProjectRequest) -> CreatedProject:
    """Make the project folder (see the module docstring); the source is checked first."""
    name = check_project_name(request.name)
    if not request.token.strip() or not request.class_word.strip():
        raise ConfigError("the instance token and the class word must not be empty")
    if request.repeats < 1:
        raise ConfigError(f"repeats is {request.repeats}; it must be at least 1")
    source = request.source
    architecture = read_checkpoint_architecture(source)  # a checkpoint, or a clear error
    layout = ProjectLayout(request.projects_dir / name)
    if layout.config_file.exists() and not request.overwrite:
        raise ConfigError(
            f"a project {name!r} already exists in {layout.folder}",
            hint="choose another name, or pass --overwrite to start it again",
        )
    instance_dir = layout.instance_root / f"{request.repeats}_{request.token} {request.class_word}"
    class_dir = layout.class_root / folder_name(request.class_word)
    for folder in (layout.model_dir, instance_dir, class_dir, layout.output_dir):
        folder.mkdir(parents=True, exist_ok=True)
    model_file = source.resolve() if request.reference else _working_copy(source, layout, name)
    resolution = request.resolution or family_facts(architecture.family).default_resolution
    prompt = f"{request.token} {request.class_word}"
    atomic_write_bytes(
        layout.sample_prompts,
        (
            f"a photo of {prompt} --w {resolution} --h {resolution} --d 1 --s 20\n"
            f"a photo of {request.class_word} --w {resolution} --h {resolution} --d 1 --s 20\n"
        ).encode(),
    )
    atomic_write_bytes(
        layout.config_file,
        starter_config(request, layout, model_file, instance_dir, resolution).encode("utf-8"),
    )
    logger.info("created DreamBooth project %s from %s", layout.folder, source)
    return CreatedProject(layout, model_file, instance_dir, class_dir)


def _working_copy(source: Path, layout: ProjectLayout, name: str) -> Path:
    """The source as `model/<name>-base.safetensors` (+ sidecar): a hard link or a copy of a
    .safetensors file; a pickle is read (weights only) and written as .safetensors."""
    target = layout.model_dir / f"{name}-base.safetensors"
    sidecar = source.with_suffix(".yaml")
    for old in (target, target.with_suffix(".yaml")):
        old.unlink(missing_ok=True)
    if sniff_format(source) is FileFormat.SAFETENSORS:
        _link_or_copy(source, target)
        if sidecar.is_file():
            shutil.copyfile(sidecar, target.with_suffix(".yaml"))
    else:
        logger.info("converting %s to %s (no pickle in the project)", source.name, target.name)
        write_checkpoint(target, read_checkpoint(source), overwrite=True)
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # saves the space; every later write replaces files atomically
        return
    except OSError:
        pass
    with source.open("rb") as reader, atomic_writer(target) as writer:
        shutil.copyfileobj(reader, writer, length=16 * 1024 * 1024)


def starter_config(
    request: ProjectRequest,
    layout: ProjectLayout,
    model_file: Path,
    instance_dir: Path,
    resolution: int,
) -> str:
    """The project's config.toml: flat sd-scripts keys with DreamBooth defaults."""

    def text(value: object) -> str:
        return json.dumps(str(value))

    return "\n".join(
        [
            f"# DreamBooth project {request.name!r}, created from {request.source}",
            f"# 1. put 5-20 pictures of the subject in {instance_dir}",
            f"#    (the prompt is '{request.token} {request.class_word}', or a .txt caption)",
            f"# 2. class pictures go to {layout.class_root}; missing ones are generated from",
            "#    class_prompt with the base model, up to num_class_images",
            f"# 3. brushwork train dreambooth --config {layout.config_file}",
            f"pretrained_model_name_or_path = {text(model_file)}",
            f"train_data_dir = {text(layout.instance_root)}",
            f"reg_data_dir = {text(layout.class_root)}",
            f"output_dir = {text(layout.output_dir)}",
            f"output_name = {text(request.name)}",
            f"class_prompt = {text(request.class_word)}",
            f"num_class_images = {request.num_class_images}",
            "prior_loss_weight = 1.0",
            f"resolution = {resolution}",
            "train_batch_size = 1",
            "max_train_steps = 1600",
            "learning_rate = 2e-6",
            "train_text_encoder = true",
            "stop_text_encoder_training = 800",
            'optimizer_type = "AdamW"',
            'lr_scheduler = "constant"',
            'mixed_precision = "no"  # "bf16" or "fp16" on a GPU: less memory, faster',
            'save_precision = "fp16"',
            "save_every_n_steps = 400",
            "gradient_checkpointing = false",
            "cache_latents = true",
            f"sample_prompts = {text(layout.sample_prompts)}",
            "sample_every_n_steps = 400",
            "seed = 1234",
            "",
        ]
    )
