"""The shared training loop (accelerate): setup -> steps -> saves, for any training method.

A *method* (LoRA first; DreamBooth, textual inversion and hypernetworks later) supplies what is
trained and how: the modules to hand to accelerate, parameter groups with their learning rates,
the loss of one batch, its trainable tensors (for state saves and NaN checks) and how to write
its model file. The engine owns everything else:

* data parallel batches: process r of n takes batches r, r+n, ... of each epoch (the tail wraps
  to the start so every process makes the same number of steps, as accelerate's `even_batches`);
  noise and timesteps come from a generator seeded by (seed, epoch, batch), so a batch trains the
  same on any process, and n processes equal one process accumulating n batches;
* gradient accumulation windows that close at each epoch's end (kohya's steps per epoch =
  ceil(batches / accumulation)), with `accelerator.no_sync` inside a window;
* a NaN/inf watchdog: a non-finite loss or gradient norm stops the run before the optimiser
  steps, so the last save stays the last good one, and the error says what to change;
* saves every N epochs/steps (atomic files; state folders published whole), resume, previews,
  CSV/TensorBoard logs and a loss-curve PNG;
* a start step (`LoopSettings.start_step`): a run that continues a file trained before (A1111's
  textual inversion and hypernetworks) counts its steps from the file's own step up to
  `total_steps`, the absolute step to stop at, so saves, their names, logs, previews and
  progress all carry the absolute step; epochs still count this run's passes over the data.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from brushwork.core.errors import BrushworkError
from brushwork.training.logs import TrainingLog, TrainingProgress, draw_loss_curve
from brushwork.training.optim import OptimizerChoice, ParamGroup, build_optimizer
from brushwork.training.samples import Preview, PreviewRequest, run_previews
from brushwork.training.state import (
    RngSnapshot,
    TrainPosition,
    check_fingerprint,
    clear_staging,
    publish_staging,
    read_state,
    staging_folder,
    state_folder_for,
    write_state_files,
)

logger = logging.getLogger(__name__)


class TrainingDivergedError(BrushworkError):
    """The loss (or a gradient) stopped being a finite number."""


class BatchLike(Protocol):
    epoch: int
    index: int


class BatchSource(Protocol):
    """What the engine needs from `training.data.TrainingDataset`."""

    @property
    def total_batches(self) -> int: ...

    def batch_at(self, epoch: int, index: int) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class SaveInfo:
    epoch: int  # 1-based epochs completed (or in progress)
    step: int
    final: bool


class TrainingMethod(Protocol):
    """What a training method supplies to the engine (see the module docstring)."""

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def use_prepared(self, prepared: dict[str, torch.nn.Module]) -> None: ...

    def param_groups(self) -> list[ParamGroup]: ...

    def set_training(self, training: bool) -> None: ...

    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor: ...

    def trainable_state(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def save(self, path: Path, info: SaveInfo) -> None: ...

    # Optional: `begin_step(step)` before and `end_step(step)` after each optimiser step
    # (the steps done before it: 0-based, absolute when the run has a start step), e.g. to stop
    # training the text encoder after N steps or to update an EMA.


SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


@dataclass(frozen=True)
class LoopSettings:
    output_dir: Path
    output_name: str
    file_suffix: str
    total_steps: int
    total_epochs: int
    seed: int
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    save_every_n_epochs: int | None = None
    save_every_n_steps: int | None = None
    save_state: bool = False
    save_state_on_train_end: bool = False
    sample_every_n_epochs: int | None = None
    sample_every_n_steps: int | None = None
    sample_at_first: bool = False
    resume: Path | None = None
    tensorboard_dir: Path | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    divergence_hints: tuple[str, ...] = ()
    step_save_stem: str = "{name}-step{step:08d}"  # A1111's TI/hypernetwork: "{name}-{step}"
    # Steps already done before this run (a continued file's own step): a fresh run counts from
    # here to `total_steps` (absolute), and `total_epochs` covers only the steps left.
    start_step: int = 0

    def __post_init__(self) -> None:
        if self.start_step < 0 or (self.start_step and self.start_step >= self.total_steps):
            raise ValueError(
                f"start_step {self.start_step} must be below total_steps {self.total_steps}"
            )


@dataclass(frozen=True)
class TrainingResult:
    final_file: Path
    saved_files: tuple[Path, ...]
    steps: int  # the absolute step reached
    log_csv: Path
    loss_curve: Path | None
    start_step: int = 0  # the step this run started from (a continued file's own step)


@dataclass
class Hooks:
    """Optional callables: previews (main process), progress, and an after-step hook (tests use
    it to interrupt a run)."""

    preview: Preview | None = None
    preview_requests: Sequence[PreviewRequest] = ()
    on_progress: Callable[[TrainingProgress], None] | None = None
    after_step: Callable[[int], None] | None = None


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The noise seed of one batch: the same on every process and in every run."""
    return (seed * 1_000_003 + epoch * 100_003 + index) % (2**63)


class Trainer:
    """One run of `method` on `data`. `run()` trains and returns what it wrote."""

    def __init__(
        self,
        method: TrainingMethod,
        data: BatchSource,
        settings: LoopSettings,
        accelerator: Accelerator,
        optimizer_choice: OptimizerChoice,
        scheduler_factory: SchedulerFactory,
        hooks: Hooks | None = None,
    ) -> None:
        self.method = method
        self.data = data
        self.settings = settings
        self.accelerator = accelerator
        self.hooks = hooks or Hooks()
        self.saved: list[Path] = []
        self.last_good_save: Path | None = None
        self.step = settings.start_step  # a resume replaces it with the saved step
        self.epoch = 0
        self.batches_done = 0
        self._resume_rng: RngSnapshot | None = None
        self._setup(optimizer_choice, scheduler_factory)

    # ---- setup ---------------------------------------------------------------------------
    def _setup(self, choice: OptimizerChoice, scheduler_factory: SchedulerFactory) -> None:
        acc = self.accelerator
        groups = self.method.param_groups()
        self.group_names = [g.name for g in groups if g.params]
        optimizer = build_optimizer(choice, groups)
        # a prepared scheduler steps once per process per optimiser step (accelerate's rule);
        # it counts this run's steps only (from start_step)
        steps = self.settings.total_steps - self.settings.start_step
        scheduler = scheduler_factory(optimizer, steps * acc.num_processes)
        names = list(self.method.modules())
        prepared = acc.prepare(*self.method.modules().values(), optimizer, scheduler)
        self.method.use_prepared(dict(zip(names, prepared[: len(names)], strict=True)))
        self.prepared_modules = list(prepared[: len(names)])
        self.optimizer, self.scheduler = prepared[len(names)], prepared[len(names) + 1]
        acc.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
        acc.register_load_state_pre_hook(lambda models, folder: models.clear())
        settings = self.settings
        self.log = TrainingLog(
            settings.output_dir / f"{settings.output_name}-loss.csv",
            self.group_names,
            window=max(1, self._updates_per_epoch()),
        )
        if settings.resume is not None:
            self._resume(settings.resume)
        elif acc.is_main_process and self.log.csv_path.exists():
            self.log.csv_path.unlink()  # a fresh run starts a fresh log
        if settings.tensorboard_dir is not None and acc.is_main_process:
            self.log.enable_tensorboard(settings.tensorboard_dir)

    def _per_process_batches(self) -> int:
        return math.ceil(int(self.data.total_batches) / int(self.accelerator.num_processes))

    def _updates_per_epoch(self) -> int:
        return math.ceil(self._per_process_batches() / self.settings.gradient_accumulation_steps)

    def _resume(self, folder: Path) -> None:
        state = read_state(folder)
        check_fingerprint(state.position.fingerprint, self.settings.fingerprint, folder)
        self.accelerator.load_state(str(folder))
        self.method.load_trainable_state(state.trainable)
        self.data.load_state_dict(state.data)
        if self.accelerator.is_main_process:
            self.log.restore(state.log_csv)
        else:
            self.log.records = []
        self.step = state.position.step
        self.epoch = state.position.epoch
        self.batches_done = state.position.batches_done
        self._resume_rng = RngSnapshot.capture()
        logger.info("resumed from %s at step %d (epoch %d)", folder, self.step, self.epoch + 1)

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> TrainingResult:
        settings = self.settings
        self._started = time.perf_counter()
        self._start_step = self.step
        self.method.set_training(True)
        if settings.sample_at_first and self.step == settings.start_step:
            self._preview(f"e{0:06d}" if self.step == 0 else f"{self.step:06d}")
        while self.step < settings.total_steps and self.epoch < settings.total_epochs:
            if self._train_epoch():
                self._end_of_epoch()
        final = self._final_save()
        self.log.close()
        curve = None
        if self.accelerator.is_main_process and self.log.records:
            curve = draw_loss_curve(
                self.log.records,
                settings.output_dir / f"{settings.output_name}-loss.png",
                title=f"{settings.output_name} loss",
            )
        self.accelerator.wait_for_everyone()
        return TrainingResult(
            final, tuple(self.saved), self.step, self.log.csv_path, curve, settings.start_step
        )

    def _windows(self, epoch: int) -> Iterator[tuple[int, list[tuple[int, Any]]]]:
        """This process's batches of `epoch` in accumulation windows, after `batches_done`;
        each with the count of this epoch's batches used once the window is done."""
        acc = self.accelerator
        total = self.data.total_batches
        count = self._per_process_batches()
        indices = [acc.process_index + acc.num_processes * i for i in range(count)]
        accumulation = self.settings.gradient_accumulation_steps
        for start in range(0, count, accumulation):
            if start < self.batches_done:
                continue  # done before the resume: not even built
            window = []
            for index in indices[start : start + accumulation]:
                batch = self.data.batch_at(epoch, index % total)
                if batch is not None:
                    window.append((index, batch))
            self._restore_resume_rng()
            yield min(start + accumulation, count), window

    def _restore_resume_rng(self) -> None:
        if self._resume_rng is not None:
            self._resume_rng.restore()  # building batches must not move the restored RNG
            self._resume_rng = None

    def _train_epoch(self) -> bool:
        """Train until the epoch ends (True) or the last step is done mid-epoch (False)."""
        count = self._per_process_batches()
        for done, window in self._windows(self.epoch):
            if window:
                self._optimizer_step(window)
            self.batches_done = done
            self._after_step()
            if self.step >= self.settings.total_steps and done < count:
                return False
            if self.step >= self.settings.total_steps:
                break
        self.epoch += 1
        self.batches_done = 0
        return True

    def _optimizer_step(self, window: list[tuple[int, Any]]) -> None:
        acc = self.accelerator
        losses = []
        begin, end = (getattr(self.method, name, None) for name in ("begin_step", "end_step"))
        if begin is not None:
            begin(self.step)
        for position, (index, batch) in enumerate(window):
            generator = torch.Generator().manual_seed(
                batch_seed(self.settings.seed, self.epoch, index)
            )
            last = position == len(window) - 1
            with self._sync_context(last), acc.autocast():
                loss = self.method.loss(batch, generator)
            losses.append(loss.detach().float())
            acc.backward(loss / len(window))
        mean_loss = torch.stack(losses).mean() if losses else torch.zeros(())
        step_loss = float(acc.reduce(mean_loss.to(acc.device), reduction="mean"))
        if not math.isfinite(step_loss):
            self._diverged(f"the loss became {step_loss}")
        self._clip_gradients()
        rates = self._learning_rates()  # the rates this step uses
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if end is not None:
            end(self.step)
        self.step += 1
        self._record(step_loss, rates)

    def _sync_context(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        if last:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for module in self.prepared_modules:
            stack.enter_context(self.accelerator.no_sync(module))
        return stack

    def _clip_gradients(self) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.settings.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(params, self.settings.max_grad_norm)
            if (
                self.accelerator.scaler is None
                and norm is not None
                and not math.isfinite(float(norm))
            ):
                self._diverged(f"the gradient norm became {float(norm)}")

    def _learning_rates(self) -> dict[str, float]:
        rates = self.scheduler.get_last_lr()
        out = {}
        for name, rate, group in zip(
            self.group_names, rates, self.optimizer.param_groups, strict=False
        ):
            out[name] = float(rate) * float(group.get("d", 1.0))  # Prodigy: effective d*lr
        return out

    def _record(self, loss: float, rates: dict[str, float]) -> None:
        record = (
            self.log.add(self.step, self.epoch + 1, loss, rates)
            if (self.accelerator.is_main_process)
            else None
        )
        if self.hooks.on_progress is None or record is None:
            return
        elapsed = time.perf_counter() - self._started
        done = self.step - self._start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = self.settings.total_steps - self.step
        self.hooks.on_progress(
            TrainingProgress(
                step=self.step,
                total_steps=self.settings.total_steps,
                epoch=self.epoch + 1,
                total_epochs=self.settings.total_epochs,
                loss=loss,
                average_loss=record.average_loss,
                steps_per_second=rate,
                eta_seconds=remaining / rate if rate > 0 else None,
            )
        )

    def _after_step(self) -> None:
        settings = self.settings
        every = settings.save_every_n_steps
        if every and self.step % every == 0 and self.step < settings.total_steps:
            stem = settings.step_save_stem.format(name=settings.output_name, step=self.step)
            self._save(stem, self.epoch + 1)
        every = settings.sample_every_n_steps
        if every and self.step % every == 0:
            self._preview(f"{self.step:06d}")
        if self.hooks.after_step is not None:
            self.hooks.after_step(self.step)

    def _end_of_epoch(self) -> None:
        settings, done = self.settings, self.epoch  # self.epoch already counts the finished one
        every = settings.save_every_n_epochs
        if every and done % every == 0 and self.step < settings.total_steps:
            self._save(f"{settings.output_name}-{done:06d}", done)
        every = settings.sample_every_n_epochs
        if every and done % every == 0:
            self._preview(f"e{done:06d}")

    # ---- saving --------------------------------------------------------------------------
    def _check_finite_weights(self) -> None:
        for name, tensor in self.method.trainable_state().items():
            if not torch.isfinite(tensor).all():
                self._diverged(f"the weights of {name} are no longer finite numbers")

    def _save(self, stem: str, epoch: int, *, final: bool = False) -> Path:
        self._check_finite_weights()
        settings, acc = self.settings, self.accelerator
        path = settings.output_dir / f"{stem}{settings.file_suffix}"
        info = SaveInfo(epoch=epoch, step=self.step, final=final)
        if acc.is_main_process:
            settings.output_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.method.save(path, info)
            except OSError as exc:
                raise _save_failed(path, exc) from exc
        acc.wait_for_everyone()
        self.saved.append(path)
        self.last_good_save = path
        if settings.save_state or (final and settings.save_state_on_train_end):
            self.save_state(state_folder_for(path))
        logger.info("saved %s", path)
        return path

    def _final_save(self) -> Path:
        epoch = min(self.epoch + 1, self.settings.total_epochs)
        return self._save(self.settings.output_name, epoch, final=True)

    def save_state(self, folder: Path) -> None:
        """Write a resumable state folder (all processes take part)."""
        acc = self.accelerator
        if acc.is_main_process:
            clear_staging(folder)
        acc.wait_for_everyone()
        target = staging_folder(folder)
        acc.save_state(str(target))
        acc.wait_for_everyone()  # every process's RNG file is in before the folder moves
        if acc.is_main_process:
            epoch, done = self.epoch, self.batches_done
            if done >= self._per_process_batches():
                epoch, done = epoch + 1, 0
            position = TrainPosition(
                epoch, done, self.step, self.settings.total_steps, self.settings.fingerprint
            )
            try:
                write_state_files(
                    target,
                    position,
                    self.method.trainable_state(),
                    self.log.csv_text(),
                    self.data.state_dict(),
                )
                publish_staging(folder)
            except OSError as exc:
                raise _save_failed(folder, exc) from exc
        acc.wait_for_everyone()

    # ---- previews and failures -----------------------------------------------------------
    def _preview(self, label: str) -> None:
        hooks = self.hooks
        if hooks.preview is None or not hooks.preview_requests:
            return
        if self.accelerator.is_main_process:
            self.method.set_training(False)
            try:
                run_previews(
                    hooks.preview,
                    hooks.preview_requests,
                    self.settings.output_dir / "sample",
                    self.settings.output_name,
                    label,
                    {"Training step": self.step, "Training epoch": self.epoch},
                )
            finally:
                self.method.set_training(True)
        self.accelerator.wait_for_everyone()

    def _diverged(self, what: str) -> None:
        last = self.last_good_save
        saved = f"the last good save is {last}" if last else "nothing was saved yet"
        hints = "; ".join(self.settings.divergence_hints) or "lower the learning rate"
        raise TrainingDivergedError(
            f"{what} at step {self.step + 1} (epoch {self.epoch + 1}); training stopped and "
            f"{saved}",
            hint=hints,
        )


def _save_failed(path: Path, exc: OSError) -> BrushworkError:
    return BrushworkError(
        f"could not save {path}: {exc.strerror or exc}; the files saved before are intact",
        hint="free disk space or fix the folder's permissions, then resume from the last state",
    )
