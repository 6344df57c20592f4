"""The job service: the only long-lived state of a server (floor F5).

It owns the job record (`JobStore`), the bounded queue, one worker per device (each with its own
model cache), the options, and a library handle per thread (SQLite connections are per thread).
The HTTP layer turns requests into calls here and never keeps state of its own.

    service = JobService(ServiceConfig(settings, roots=(root,), devices=("cpu",)))
    service.start()
    job = service.submit_generation(request)      # QueueFullError when the queue is full
    outcome = job.future.result()                 # GenerationOutcome: images written first
    service.close()
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.jobs.options import EFFECTIVE, Options, check_option, request_overrides
from brushwork.jobs.queue import Job, JobContext, JobFunction, JobQueue
from brushwork.jobs.store import JobStore
from brushwork.jobs.workers import DEFAULT_CACHE_BYTES, ModelHost, Worker

if TYPE_CHECKING:
    from brushwork.generation import GenerationRequest, GenerationResult
    from brushwork.library.catalog import Library
    from brushwork.library.entry import ModelEntry

logger = logging.getLogger(__name__)

JOBS_DB = "jobs.sqlite3"
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ServiceConfig:
    """How to run the job service."""

    settings: Settings = field(default_factory=Settings)
    roots: tuple[Path, ...] = ()
    devices: tuple[str, ...] = ()  # empty: settings.device
    queue_size: int = 64
    outputs: Path | None = None  # default <data_dir>/outputs
    owner: str = "local"  # names this server's rows in the shared job record
    cache_bytes: int = DEFAULT_CACHE_BYTES

    @property
    def outputs_dir(self) -> Path:
        return self.outputs or self.settings.data_dir / "outputs"


@dataclass(frozen=True, eq=False)
class GenerationOutcome:
    """A finished generation job: the result, the files written, the model used."""

    result: GenerationResult
    saved: tuple[Path, ...]
    checkpoint_title: str

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted


def refuse_path_like(field_name: str, name: str) -> None:
    """A model name must name a library entry, never a place on disk: refuse traversal."""
    parts = name.replace("\\", "/").split("/")
    if "\x00" in name or ".." in parts or name.startswith(("/", "~")) or _DRIVE.match(name):
        raise ConfigError(
            f"{field_name}: {name!r} looks like a file path; give a model name from the library"
        )


def checkpoint_title(entry: ModelEntry) -> str:
    """A1111's title: the path in the checkpoint folder, and ``[short hash]`` once hashed."""
    inside = entry.relative_path
    if entry.folder and inside.startswith(entry.folder + "/"):
        inside = inside[len(entry.folder) + 1 :]
    return f"{inside} [{entry.autov2}]" if entry.autov2 else inside


class JobService:
    """Queue, workers, job record, options and library (see the module docstring)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.settings = config.settings
        self.store = JobStore(self.settings.data_dir / JOBS_DB, config.owner)
        self.queue = JobQueue(config.queue_size)
        self.options = Options()
        devices = config.devices or (self.settings.device,)
        self.workers = [
            Worker(
                f"worker-{index}-{device}",
                ModelHost(device, self.settings.precision, config.cache_bytes),
                self.queue,
                self.store,
            )
            for index, device in enumerate(devices)
        ]
        self._local = threading.local()
        self._libraries: list[Library] = []
        self._libraries_lock = threading.Lock()
        self.lost_jobs = 0

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.lost_jobs = self.store.mark_lost()
        if self.lost_jobs:
            logger.warning("%d jobs of an earlier run were lost", self.lost_jobs)
        for worker in self.workers:
            worker.start()

    def close(self, timeout: float = 10.0) -> None:
        self.queue.interrupt_running()
        for job in self.queue.close():
            self.store.update(job.id, state="cancelled", finished=time.time(), error=job.error)
        for worker in self.workers:
            worker.join(timeout)
        with self._libraries_lock:
            for library in self._libraries:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    library.close()  # only the opening thread may; the others close when freed
            self._libraries.clear()
        self.store.close()

    def library(self) -> Library:
        """This thread's library handle (opened on first use)."""
        library: Library | None = getattr(self._local, "library", None)
        if library is None:
            from brushwork.library.catalog import Library

            library = Library.open(self.settings, self.config.roots)
            self._local.library = library
            with self._libraries_lock:
                self._libraries.append(library)
        return library

    # -- jobs -----------------------------------------------------------------------------------

    def submit(self, kind: str, run: JobFunction, summary: Mapping[str, Any]) -> Job:
        """Queue a job (QueueFullError when full) and record it."""
        job = Job(kind, run, dict(summary))
        self.queue.submit(job)
        self.store.add(job.id, kind, job.summary, job.created)
        return job

    def submit_generation(
        self,
        request: GenerationRequest,
        *,
        override_settings: Mapping[str, Any] | None = None,
        save: bool = True,
    ) -> Job:
        """Queue a txt2img/img2img job with the current options (and per-request overrides)."""
        options = self.effective_options(override_settings or {})
        entry = self.checkpoint_entry(options["sd_model_checkpoint"])
        vae = self._vae_choice(options["sd_vae"])
        request = request.with_changes(**request_overrides(options))
        title = checkpoint_title(entry)
        folder = self.config.outputs_dir if save else None

        def run(context: JobContext) -> GenerationOutcome:
            return _generate(context, self.library(), request, entry.path, vae, folder, title)

        summary = _summary(request, title)
        return self.submit(request.mode, run, summary)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job (recorded) or stop a running one at its next step."""
        job = self.queue.cancel(job_id)
        if job is not None and job.state == "cancelled":
            self.store.update(job_id, state="cancelled", finished=time.time())
        return job

    def effective_options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The options with a request's ``override_settings`` applied (checked)."""
        options = self.options.snapshot()
        for key, value in overrides.items():
            if key in EFFECTIVE:
                options[key] = check_option(key, value)
        return options

    # -- models ---------------------------------------------------------------------------------

    def checkpoints(self) -> list[ModelEntry]:
        scan = self.library().scan()
        found = [e for e in scan.entries if e.kind is ModelKind.CHECKPOINT]
        return sorted(found, key=lambda e: e.relative_path.casefold())

    def entries(self, kind: ModelKind) -> list[ModelEntry]:
        scan = self.library().scan()
        found = [e for e in scan.entries if e.kind is kind]
        return sorted(found, key=lambda e: e.relative_path.casefold())

    def checkpoint_entry(self, name: str | None) -> ModelEntry:
        """The checkpoint an option names (a library name, title or hash), else the first one."""
        if name:
            refuse_path_like("sd_model_checkpoint", name)
            return self.library().find(name, kind=ModelKind.CHECKPOINT)
        found = self.checkpoints()
        if not found:
            roots = ", ".join(str(r) for r in self.library().roots)
            raise ConfigError(
                f"no checkpoint in the library ({roots})",
                hint="put a .safetensors checkpoint in models/Stable-diffusion under a root",
            )
        return found[0]

    def current_checkpoint(self) -> ModelEntry | None:
        """The checkpoint jobs use now, hashed (its title carries the hash)."""
        try:
            entry = self.checkpoint_entry(self.options.get("sd_model_checkpoint"))
        except ConfigError:
            return None
        return self.library().hash_entry(entry)

    def _vae_choice(self, name: str) -> str | Path:
        lowered = name.lower()
        if lowered in ("automatic", "auto", ""):
            return "auto"
        if lowered in ("none", "baked"):
            return "none"
        refuse_path_like("sd_vae", name)
        return self.library().find(name, kind=ModelKind.VAE).path

    def vae_folders(self) -> tuple[Path, ...]:
        return tuple(sorted({e.path.parent for e in self.entries(ModelKind.VAE)}))

    def set_options(self, values: Mapping[str, Any]) -> Job | None:
        """Check and store options; a new checkpoint is loaded by a queued job (returned)."""
        checked = {key: check_option(key, value) for key, value in values.items()}
        load: Job | None = None
        name = checked.get("sd_model_checkpoint")
        if name is not None:
            entry = self.library().hash_entry(self.checkpoint_entry(name))
            checked["sd_model_checkpoint"] = checkpoint_title(entry)
            checked["sd_checkpoint_hash"] = entry.sha256
        if "sd_vae" in checked:
            self._vae_choice(checked["sd_vae"])
        if name is not None:
            vae = self._vae_choice(checked.get("sd_vae", self.options.get("sd_vae")))
            path = entry.path

            def run(context: JobContext) -> None:
                context.host.model(path, vae, self.vae_folders())

            load = self.submit("load", run, {"checkpoint": checked["sd_model_checkpoint"]})
        self.options.update(checked)
        return load

    # -- views ----------------------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        """A1111's ``/sdapi/v1/progress`` body (the oldest running job, if any)."""
        running = self.queue.running()
        waiting = self.queue.waiting()
        job = min(running, key=lambda j: j.created) if running else None
        state = {
            "skipped": bool(job and job.skip.is_set()),
            "interrupted": bool(job and job.cancel.is_set()),
            "stopping_generation": False,
            "job": job.id if job else "",
            "job_count": len(running) + len(waiting),
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.created))
            if job
            else "0",
            "job_no": job.progress.iteration if job else 0,
            "sampling_step": job.progress.step if job else 0,
            "sampling_steps": job.progress.total if job else 0,
        }
        return {
            "progress": job.progress.fraction if job else 0.0,
            "eta_relative": job.progress.eta_s if job else 0.0,
            "state": state,
            "current_image": None,
            "textinfo": None,
        }


def _summary(request: GenerationRequest, title: str) -> dict[str, Any]:
    return {
        "prompt": request.prompt[:500],
        "negative_prompt": request.negative_prompt[:500],
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "sampler_name": request.sampler_name,
        "seed": request.seed,
        "images": request.image_count,
        "checkpoint": title,
    }


def _generate(
    context: JobContext,
    library: Library,
    request: GenerationRequest,
    checkpoint: Path,
    vae: str | Path,
    folder: Path | None,
    title: str,
) -> GenerationOutcome:
    """Run one generation job on the worker's model host, saving each image when finished."""
    from brushwork.generation import GenerationProgress, images_folder, save_image

    vae_folders = tuple(
        sorted({e.path.parent for e in library.scan().entries if e.kind is ModelKind.VAE})
    )
    model = context.host.model(checkpoint, vae, vae_folders)
    generator = context.host.generator(model, library)
    saved: list[Path] = []
    out = images_folder(folder, request.mode) if folder is not None else None

    def keep(item: Any) -> None:
        if out is not None:
            saved.append(save_image(item.image, out, seed=item.seed, infotext=item.infotext))

    def advance(event: GenerationProgress) -> None:
        context.report(
            event.done, event.total, phase=event.phase, iteration=event.iteration,
            iterations=event.iterations,
        )  # fmt: skip

    result = generator.generate(request, progress=advance, cancel=context.cancel, on_image=keep)
    return GenerationOutcome(result, tuple(saved), title)
