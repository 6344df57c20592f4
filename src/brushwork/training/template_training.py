"""What textual-inversion and hypernetwork training share (A1111's Train tab): options, prompt
templates, captions, the image folder, latent sampling, and the engine settings.

Prompt templates (`templates/*.txt`, or any file): one prompt per line, one picked at random for
each image at each step; ``[name]`` becomes the embedding's trigger (hypernetworks: the
hypernetwork's name) and ``[filewords]`` the image's caption: its `.txt` file, or else the file
name without leading numbers and dashes (A1111's rule). Shipped, with A1111's file names and
phrasing: `subject` / `subject_filewords` / `hypernetwork` (the object prompts of the textual
inversion paper's code, Gal et al. 2022: "a photo of a [name]", ...), `style` /
`style_filewords` ("a painting, art by [name]", ...), `none` ("picture"), and `filewords`
(the caption alone).

The image folder is A1111's flat folder of images (+ `.txt` captions), or kohya's
`<repeats>_<name>` sub-folders. Latent sampling (A1111's `latent_sampling_method`): ``once``
encodes each image once with one random sample, ``deterministic`` uses the distribution's mean,
``random`` draws a new sample at every step.

`weights` (sd-scripts' name) continues an existing embedding or hypernetwork file, as picking
one in A1111's Train tab does: training goes on from the file's own step (A1111's
`initial_step = embedding.step or 0`) up to `max_train_steps`, the absolute step to stop at (not
a count of more steps); the schedule string is read at the absolute step, and the saved files'
`step` and the `<name>-<step>` copies carry it. A file already at (or past) the maximum, or past
the schedule's end, is refused before anything is written (A1111: "already trained beyond the
specified max steps"). `resume` (a state folder) still picks up a run where it stopped.

Previews every `sample_every_n_steps`: the prompts of `sample_prompts`, or else (A1111's default,
"Read parameters from txt2img tab" off) the last training prompt at the training size, 20 steps.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from brushwork.core.errors import ConfigError
from brushwork.core.hashing import autov2, sha256_file
from brushwork.core.kinds import BaseFamily
from brushwork.loading import LoadedModel, load_model
from brushwork.training.config_file import (
    ConfigSource,
    _config_error,
    sort_options,
    write_resolved_config,
)
from brushwork.training.data import DatasetSpec, SubsetSpec, TrainingDataset, dreambooth_subsets
from brushwork.training.data.spec import IMAGE_EXTENSIONS, parse_folder_name
from brushwork.training.engine import (
    Hooks,
    LoopSettings,
    Trainer,
    TrainingMethod,
    TrainingResult,
)
from brushwork.training.lr_schedule import (
    LearnRateSchedule,
    parse_learn_schedule,
    schedule_scheduler,
)
from brushwork.training.optim import OptimizerChoice
from brushwork.training.samples import Preview, PreviewRequest, read_prompt_file

logger = logging.getLogger(__name__)

TEMPLATE_NAMES = (
    "subject",
    "subject_filewords",
    "style",
    "style_filewords",
    "hypernetwork",
    "filewords",
    "none",
)
LATENT_SAMPLING = ("once", "deterministic", "random")
_PRECISION = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}
_LEADING_NUMBERS = re.compile(r"^[-\d]+\s*")


class TemplateTrainingConfig(BaseModel):
    """Options shared by embedding and hypernetwork runs: sd-scripts names where sd-scripts has
    the option, A1111's otherwise (`template_filename`, `latent_sampling_method`, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pretrained_model_name_or_path: str
    vae: str | None = None
    weights: Path | None = None  # sd-scripts: an existing file to continue training
    train_data_dir: Path
    output_dir: Path = Path("output")
    output_name: str = "last"
    resolution: tuple[int, int] = (512, 512)
    train_batch_size: int = Field(1, ge=1)
    caption_extension: str | None = None
    shuffle_tags: bool = False  # A1111: shuffle the caption's tags (split by ",")
    tag_drop_out: float = Field(0.0, ge=0, le=1)  # A1111: drop each tag with this probability
    template_filename: str = "style_filewords"
    latent_sampling_method: Literal["once", "deterministic", "random"] = "once"
    clip_skip: int | None = Field(None, ge=1)
    learning_rate: str = "0.005"  # A1111 schedule syntax
    max_train_steps: int = Field(1600, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_grad_norm: float = Field(0.0, ge=0)  # A1111 default: no clipping
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int | None = Field(None, ge=0)
    save_every_n_steps: int | None = Field(500, ge=1)
    save_state: bool = False
    save_state_on_train_end: bool = False
    resume: Path | None = None
    sample_prompts: Path | None = None
    sample_every_n_steps: int | None = Field(None, ge=1)
    sample_sampler: str = "ddim"
    sample_at_first: bool = False
    logging_dir: Path | None = None

    @field_validator("learning_rate", mode="before")
    @classmethod
    def _rate_text(cls, value: Any) -> str:
        return str(value)

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> tuple[int, int]:
        from brushwork.training.data.spec import normalize_resolution

        width, height = normalize_resolution(value)
        if width % 8 or height % 8:
            raise ValueError(f"{value!r}: each side must be a multiple of 8")
        return width, height

    @field_validator("output_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in {".", ".."}:
            raise ValueError(f"{value!r} must be a file name without folders")
        return value

    def schedule(self) -> LearnRateSchedule:
        return parse_learn_schedule(self.learning_rate, self.max_train_steps)


ConfigT = TypeVar("ConfigT", bound=TemplateTrainingConfig)


def resolve_options(
    config_class: type[ConfigT], *sources: ConfigSource | Mapping[str, Any]
) -> tuple[ConfigT, tuple[str, ...]]:
    """Merge option sources (later wins), validate them as `config_class`; warnings back."""
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    known = tuple(config_class.model_fields)
    for source in sources:
        if not isinstance(source, ConfigSource):
            source = sort_options(source, known=known)
        for note in source.notes:
            logger.info(note)
        warnings.extend(source.warnings)
        merged.update({k: v for k, v in source.values.items() if v is not None})
    for required in ("pretrained_model_name_or_path", "train_data_dir"):
        if required not in merged:
            raise ConfigError(f"{required} is not set", hint="set it in the TOML or by a flag")
    try:
        config = config_class(**merged)
    except ValidationError as exc:
        raise _config_error(exc) from None
    config.schedule()  # the schedule syntax is checked before any work
    return config, tuple(warnings)


# ---- templates and captions -------------------------------------------------------------------


def read_template(name_or_path: str | Path) -> tuple[str, ...]:
    """The prompt lines of a shipped template (by name, with or without `.txt`) or a file."""
    text = str(name_or_path)
    stem = text.removesuffix(".txt")
    if stem in TEMPLATE_NAMES:
        resource = importlib.resources.files("brushwork.training") / "templates" / f"{stem}.txt"
        content = resource.read_text(encoding="utf-8")
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"prompt template {text!r} is neither a shipped template nor a file",
                hint=f"use one of {', '.join(TEMPLATE_NAMES)} or a path to a .txt file",
            )
        content = path.read_text(encoding="utf-8")
    lines = tuple(line.strip() for line in content.splitlines() if line.strip())
    if not lines:
        raise ConfigError(f"prompt template {text!r} has no lines")
    return lines


def filewords(caption: str, image: Path) -> str:
    """The caption, or (empty) the file name without leading numbers/dashes (A1111)."""
    if caption.strip():
        return caption
    return _LEADING_NUMBERS.sub("", image.stem)


def fill_template(line: str, name: str, words: str) -> str:
    return line.replace("[name]", name).replace("[filewords]", words)


def batch_prompts(
    batch: Any, lines: Sequence[str], name: str, generator: torch.Generator
) -> list[str]:
    """One filled template line per sample of `batch`, picked with the batch's generator."""
    picks = torch.randint(len(lines), (len(batch.captions),), generator=generator).tolist()
    return [
        fill_template(lines[pick], name, filewords(caption, path))
        for pick, caption, path in zip(picks, batch.captions, batch.paths, strict=True)
    ]


# ---- data -------------------------------------------------------------------------------------


def image_dataset(config: TemplateTrainingConfig, seed: int) -> TrainingDataset:
    """The folder as kohya subsets (`<repeats>_<name>` folders) or one flat subset."""
    root = Path(config.train_data_dir)
    if not root.is_dir():
        raise ConfigError(f"train_data_dir {root} is not a folder")
    options: dict[str, Any] = {
        "caption_extension": config.caption_extension or ".txt",
        "shuffle_caption": config.shuffle_tags,
        "caption_tag_dropout_rate": config.tag_drop_out,
    }
    has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir() if p.is_file())
    kohya = any(p.is_dir() and parse_folder_name(p.name) for p in root.iterdir())
    if kohya and not has_images:
        subsets = dreambooth_subsets(root, **options)
    else:
        subsets = (SubsetSpec(image_dir=root, **options),)
    spec = DatasetSpec(subsets, resolution=config.resolution, batch_size=config.train_batch_size)
    return TrainingDataset(spec, seed=seed, tokenizer_max_length=75)


def sample_latents(
    model: LoadedModel, images: torch.Tensor, generator: torch.Generator, *, mean: bool = False
) -> torch.Tensor:
    """Unscaled VAE latents of images in [-1, 1]: one sample, or the mean."""
    with torch.no_grad():
        pixels = images.to(model.device, model.vae_dtype)
        dist = model.vae.encode(pixels).latent_dist
        latents: torch.Tensor = dist.mean if mean else dist.sample(generator=generator)
    return latents.float()


class LatentSource:
    """Scaled latents of a batch by A1111's latent sampling method: `once` (one sample per
    image, kept; its noise seeded by the image's path, so a resumed run gets the same),
    `deterministic` (the mean, kept) or `random` (a new sample at every step)."""

    def __init__(self, model: LoadedModel, method: str, seed: int) -> None:
        if method not in LATENT_SAMPLING:
            raise ConfigError(f"latent_sampling_method {method!r}: use one of {LATENT_SAMPLING}")
        self.model = model
        self.method = method
        self.seed = seed
        self._kept: dict[tuple[str, bool], torch.Tensor] = {}

    def __call__(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        scale = self.model.vae_scaling_factor
        if self.method == "random":
            return sample_latents(self.model, batch.images, generator) * scale
        flips = batch.flipped or (False,) * len(batch.paths)
        rows = []
        for i, (path, flip) in enumerate(zip(batch.paths, flips, strict=True)):
            key = (str(path), bool(flip))
            if key not in self._kept:
                digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
                own = torch.Generator().manual_seed(int.from_bytes(digest[:7], "big"))
                mean = self.method == "deterministic"
                image = batch.images[i : i + 1]
                self._kept[key] = sample_latents(self.model, image, own, mean=mean).cpu()
            rows.append(self._kept[key])
        return torch.cat(rows).to(self.model.device) * scale


# ---- previews ---------------------------------------------------------------------------------


class LastPromptPreviews(Sequence[PreviewRequest]):
    """A1111's preview without a prompt file: one image of the last training prompt, at the
    training size, 20 steps (a sequence the engine reads when a preview is due)."""

    def __init__(self, config: TemplateTrainingConfig, last_prompt: Callable[[], str | None]):
        width, height = config.resolution
        self.template = PreviewRequest(
            prompt="", width=width, height=height, steps=20, sampler_name="Euler a"
        )
        self.last_prompt = last_prompt

    def _requests(self) -> tuple[PreviewRequest, ...]:
        prompt = self.last_prompt()
        return () if prompt is None else (replace(self.template, prompt=prompt),)

    def __len__(self) -> int:
        return len(self._requests())

    @overload
    def __getitem__(self, index: int) -> PreviewRequest: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PreviewRequest]: ...

    def __getitem__(self, index: int | slice) -> PreviewRequest | Sequence[PreviewRequest]:
        return self._requests()[index]


def preview_requests(
    config: TemplateTrainingConfig, last_prompt: Callable[[], str | None]
) -> tuple[Sequence[PreviewRequest], tuple[str, ...]] | None:
    """The requests previews use (and the prompt file's warnings); None without previews."""
    if config.sample_prompts is not None:
        prompts = read_prompt_file(config.sample_prompts, sampler=config.sample_sampler)
        return prompts.requests, prompts.warnings
    if config.sample_every_n_steps or config.sample_at_first:
        return LastPromptPreviews(config, last_prompt), ()
    return None


# ---- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepCount:
    total_steps: int  # the absolute step to stop at
    epochs: int  # this run's epochs
    start_step: int = 0  # the absolute step this run starts from


def step_count(
    dataset: TrainingDataset,
    schedule: LearnRateSchedule,
    accumulation: int,
    processes: int,
    start_step: int = 0,
) -> StepCount:
    """Steps = where the schedule ends (A1111 stops there), counted from `start_step` (a
    continued file's step); epochs enough to train the steps left."""
    per_process = -(-dataset.total_batches // processes)
    per_epoch = max(1, -(-per_process // accumulation))
    total = schedule.end_step
    return StepCount(total, -(-(total - start_step) // per_epoch), start_step)


def make_accelerator(mixed_precision: str) -> Accelerator:
    """A fresh Accelerator (accelerate keeps process-wide state; a second run in one process
    must not inherit the first one's precision)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def load_frozen_model(config: TemplateTrainingConfig, base: Path, device: Any) -> LoadedModel:
    vae_precision = "fp32" if config.mixed_precision == "no" else "auto"
    model = load_model(
        base,
        device=device,
        precision=_PRECISION[config.mixed_precision],
        vae=config.vae or "none",
        vae_precision=vae_precision,
    )
    if model.family is BaseFamily.SDXL:
        raise ConfigError(f"{base.name} is an SDXL model; SDXL is not supported by this trainer")
    for module in model.modules().values():
        module.requires_grad_(False)
    return model


def checkpoint_facts(base: Path) -> tuple[str, str]:
    """(A1111's short hash, the checkpoint's name) as stamped into saved files."""
    return autov2(sha256_file(base)), base.stem


@dataclass(frozen=True)
class TemplateRun:
    """A run's checked inputs: the options (seed filled in), templates, schedule and data."""

    config: TemplateTrainingConfig
    templates: tuple[str, ...]
    schedule: LearnRateSchedule
    dataset: TrainingDataset
    config_file: Path
    start_step: int = 0  # a continued file's own step; the run trains on from there


def check_inputs(config: TemplateTrainingConfig, accelerator: Accelerator) -> None:
    """The options against the machine, and the files they name exist (nothing is read)."""
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("mixed_precision fp16 needs a GPU", hint="use bf16 or no")
    for name in ("weights", "sample_prompts", "resume"):
        path = getattr(config, name)
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{name}: {path} does not exist")


def file_step(step: int | None) -> int:
    """A continued file's own step, where training goes on from (A1111: `step or 0`)."""
    return max(0, int(step or 0))


def check_start_step(config: TemplateTrainingConfig, start_step: int, what: str) -> None:
    """Refuse to continue `what` (e.g. "embedding kitty.pt") when its `start_step` leaves
    nothing to train: it is at or past max_train_steps, or past where the schedule ends."""
    if start_step <= 0:
        return
    most = config.max_train_steps
    if start_step >= most:
        raise ConfigError(
            f"{what} is already trained to step {start_step}, at or beyond max_train_steps "
            f"({most}); nothing was trained and nothing was written",
            hint="max_train_steps is the step to stop at, not a count of more steps: "
            f"set it above {start_step} to train further",
        )
    end = config.schedule().end_step
    if start_step >= end:
        raise ConfigError(
            f"{what} is already trained to step {start_step}, at or beyond the end of the "
            f"learning-rate schedule {config.learning_rate!r} (step {end}); nothing was "
            "trained and nothing was written",
            hint=f"the schedule's steps are absolute; end it after step {start_step} "
            "(e.g. with a last bare rate)",
        )


def prepare_run(
    config: ConfigT, accelerator: Accelerator, *, start_step: int = 0, what: str = "the file"
) -> tuple[ConfigT, TemplateRun]:
    """Check a continued file's `start_step` (called `what` in the error), fix the seed, read
    the templates and the image folder, and write the resolved options beside the outputs.
    The caller has run `check_inputs` first (before reading a file that `weights` names)."""
    check_start_step(config, start_step, what)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    config = config.model_copy(update={"seed": seed})
    templates = read_template(config.template_filename)
    schedule = config.schedule()
    set_seed(seed)
    dataset = image_dataset(config, seed)
    config_file = config.output_dir / f"{config.output_name}-config.toml"
    if accelerator.is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(config, config_file)
    if start_step:
        logger.info("continuing %s from step %d up to step %d", what, start_step, schedule.end_step)
    return config, TemplateRun(config, templates, schedule, dataset, config_file, start_step)


def attach_previews(
    hooks: Hooks | None,
    config: TemplateTrainingConfig,
    last_prompt: Callable[[], str | None],
    make_preview: Callable[[], Preview | None] | None,
) -> tuple[Hooks, tuple[str, ...]]:
    """The run's hooks with its preview requests and (built now) its preview callable."""
    hooks = hooks or Hooks()
    found = preview_requests(config, last_prompt)
    if found is None:
        return hooks, ()
    hooks.preview_requests, warnings = found
    if hooks.preview is None and make_preview is not None:
        hooks.preview = make_preview()
    return hooks, warnings


def run_method(
    run: TemplateRun,
    method: TrainingMethod,
    accelerator: Accelerator,
    *,
    optimizer: OptimizerChoice,
    suffix: str,
    fingerprint: dict[str, Any],
    hooks: Hooks,
) -> TrainingResult:
    """Train `method` on the run's data with `optimizer` (A1111: AdamW, weight decay 0 for
    embeddings, torch's default for hypernetworks) following the schedule from the run's start
    step (a continued file's own step) on; the resume fingerprint gains what every template
    run shares, and the start step when there is one."""
    config, processes, start = run.config, accelerator.num_processes, run.start_step
    steps = step_count(
        run.dataset, run.schedule, config.gradient_accumulation_steps, processes, start
    )
    fingerprint = {
        "seed": config.seed,
        "train_batch_size": config.train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_processes": processes,
        "learning_rate": config.learning_rate,
        "max_train_steps": steps.total_steps,
    } | fingerprint
    if start:  # only then, so states saved before start steps existed still resume
        fingerprint["start_step"] = start
    trainer = Trainer(
        method,
        run.dataset,
        loop_settings(config, steps, suffix, fingerprint),
        accelerator,
        optimizer,
        lambda torch_optimizer, _total: schedule_scheduler(
            torch_optimizer, run.schedule, processes, start
        ),
        hooks,
    )
    return trainer.run()


def loop_settings(
    config: TemplateTrainingConfig,
    steps: StepCount,
    suffix: str,
    fingerprint: dict[str, Any],
) -> LoopSettings:
    return LoopSettings(
        output_dir=config.output_dir,
        output_name=config.output_name,
        file_suffix=suffix,
        total_steps=steps.total_steps,
        total_epochs=steps.epochs,
        seed=config.seed or 0,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        save_every_n_steps=config.save_every_n_steps,
        save_state=config.save_state,
        save_state_on_train_end=config.save_state_on_train_end,
        sample_every_n_steps=config.sample_every_n_steps,
        sample_at_first=config.sample_at_first,
        resume=config.resume,
        tensorboard_dir=None,
        fingerprint=fingerprint,
        divergence_hints=("lower the learning rate (schedule)",),
        step_save_stem="{name}-{step}",
        start_step=steps.start_step,
    )
