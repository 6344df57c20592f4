"""A bounded FIFO of jobs, their state and progress, and how to stop them.

A `Job` is a callable run by a worker with a `JobContext` (the worker's model host, a progress
reporter, the cancel and skip flags). Its `future` (a `concurrent.futures.Future`) carries the
result to whoever waits: an HTTP handler awaits it without holding a thread. A job with a
``device`` runs only on a worker of that device or device type (`device_matches`).

Stopping: ``cancel`` ends a job at its next step (A1111's Interrupt); ``skip`` ends only the
batch being drawn and goes on with the next (A1111's Skip; jobs other than generation ignore it).

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``interrupted``; a queued job can
be ``cancelled`` before it starts. A full queue refuses new jobs at once (`QueueFullError`),
never blocks.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from brushwork.core.errors import BrushworkError

FINISHED_STATES = ("done", "failed", "interrupted", "cancelled")


class QueueFullError(BrushworkError):
    """The queue holds as many jobs as it may; try again later."""

    def __init__(self, capacity: int, retry_after_s: int) -> None:
        super().__init__(f"the job queue is full ({capacity} jobs waiting); try again later")
        self.capacity = capacity
        self.retry_after_s = retry_after_s


def device_matches(wanted: str | None, device: str | None) -> bool:
    """Whether a worker on ``device`` may run a job that wants ``wanted``: None is any device,
    a type (``cuda``) any device of that type, ``cuda:1`` only that one."""
    if wanted is None:
        return True
    if device is None:
        return False
    return device == wanted or device.split(":", 1)[0] == wanted


class JobCancelledError(BrushworkError):
    """The job was cancelled before it started."""


class ModelHostLike(Protocol):
    device: str


class PreviewSource(Protocol):
    """A running job's live preview (a PNG made when asked; None when there is none yet)."""

    def png(self) -> bytes | None: ...


@dataclass
class JobProgress:
    """What a running job reports: steps of the whole job, and for training the loss and the
    engine's own ETA (``metrics``: loss, average_loss, epoch, epochs, eta_s)."""

    step: int = 0
    total: int = 0
    phase: str = ""
    iteration: int = 0
    iterations: int = 0
    started: float | None = None
    metrics: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(self.step / self.total, 1.0) if self.total else 0.0

    @property
    def eta_s(self) -> float:
        """Seconds left: the job's own estimate, else from the time per step so far (0 before
        the first step)."""
        reported = self.metrics.get("eta_s")
        if reported is not None:
            return max(float(reported), 0.0)
        if self.started is None or not self.step or not self.total:
            return 0.0
        elapsed = time.monotonic() - self.started
        return max(elapsed / self.step * (self.total - self.step), 0.0)


@dataclass
class JobContext:
    """What a running job gets from its worker."""

    job: Job
    host: Any  # the worker's ModelHost (typed loosely to keep this module torch-free)

    @property
    def cancel(self) -> threading.Event:
        return self.job.cancel

    @property
    def skip(self) -> threading.Event:
        return self.job.skip

    def report(self, step: int, total: int, *, phase: str = "", iteration: int = 0,
               iterations: int = 0, **metrics: float | int | None) -> None:  # fmt: skip
        progress = self.job.progress
        progress.step, progress.total, progress.phase = step, total, phase
        progress.iteration, progress.iterations = iteration, iterations
        if metrics:
            progress.metrics = {**progress.metrics, **metrics}


JobFunction = Callable[[JobContext], Any]


@dataclass(eq=False)
class Job:
    """One unit of work for a worker."""

    kind: str
    run: JobFunction
    summary: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    created: float = field(default_factory=time.time)
    error: str | None = None
    worker: str | None = None
    device: str | None = None  # None: any worker; else only a worker of this device
    progress: JobProgress = field(default_factory=JobProgress)
    cancel: threading.Event = field(default_factory=threading.Event)
    skip: threading.Event = field(default_factory=threading.Event)
    future: Future[Any] = field(default_factory=Future)
    preview: PreviewSource | None = None  # set by a running generation job
    detail: Any = None  # what the job keeps for its own views (a training run's loss history)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view (no preview bytes)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "created": self.created,
            "worker": self.worker,
            "error": self.error,
            "progress": {
                "step": self.progress.step,
                "total": self.progress.total,
                "fraction": self.progress.fraction,
                "eta_s": self.progress.eta_s,
                "phase": self.progress.phase,
                "iteration": self.progress.iteration,
                "iterations": self.progress.iterations,
                **{k: v for k, v in self.progress.metrics.items() if k != "eta_s"},
            },
            "summary": self.summary,
        }


class JobQueue:
    """Bounded FIFO shared by the workers; remembers running and recently finished jobs."""

    def __init__(self, capacity: int, *, history: int = 200, retry_after_s: int = 5) -> None:
        if capacity < 1:
            raise BrushworkError(f"the queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: dict[str, Job] = {}
        self._finished: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._history = history
        self._cond = threading.Condition()
        self._closed = False
        self.version = 0  # bumped on every change: event streams poll it

    # -- producers ------------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._closed:
                raise BrushworkError("the server is shutting down")
            if len(self._waiting) >= self.capacity:
                raise QueueFullError(self.capacity, self.retry_after_s)
            self._waiting.append(job)
            self._touch()
            self._cond.notify_all()  # a job for one device must reach a worker of that device
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job (it never starts) or interrupt a running one."""
        with self._cond:
            for job in self._waiting:
                if job.id == job_id:
                    self._waiting.remove(job)
                    self._finish_locked(job, "cancelled", None)
                    job.future.set_exception(JobCancelledError(f"job {job_id} was cancelled"))
                    return job
            running = self._running.get(job_id)
        if running is not None:
            running.cancel.set()
        return running

    def interrupt_running(self, *, skip: bool = False) -> int:
        """A1111's ``interrupt`` (every running job stops at its next step) or ``skip`` (each
        ends the batch it is drawing and goes on with the next)."""
        with self._cond:
            jobs = list(self._running.values())
        for job in jobs:
            (job.skip if skip else job.cancel).set()
        return len(jobs)

    # -- workers --------------------------------------------------------------------------------

    def take(
        self, worker: str, timeout: float | None = None, *, device: str | None = None
    ) -> Job | None:
        """The oldest waiting job this worker may run (any, or one for its ``device``), marked
        running; None when closed or on timeout."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while (job := self._first_for(device)) is None and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if job is None:
                return None
            self._waiting.remove(job)
            job.state, job.worker = "running", worker
            job.progress.started = time.monotonic()
            self._running[job.id] = job
            self._touch()
            return job

    def _first_for(self, device: str | None) -> Job | None:
        return next((job for job in self._waiting if device_matches(job.device, device)), None)

    def finish(self, job: Job, state: str, error: str | None = None) -> None:
        with self._cond:
            self._running.pop(job.id, None)
            self._finish_locked(job, state, error)

    def _finish_locked(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error = state, error
        job.preview = None  # live previews are for running jobs only
        self._finished[job.id] = job
        while len(self._finished) > self._history:
            self._finished.popitem(last=False)
        self._touch()

    def close(self) -> list[Job]:
        """Refuse new jobs, wake the workers; returns the jobs that never ran."""
        with self._cond:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for job in left:
            self.finish(job, "cancelled", "the server stopped")
            job.future.set_exception(JobCancelledError("the server stopped"))
        return left

    # -- views ----------------------------------------------------------------------------------

    def _touch(self) -> None:
        self.version += 1

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            found = self._running.get(job_id) or self._finished.get(job_id)
            if found is None:
                found = next((job for job in self._waiting if job.id == job_id), None)
            return found

    def running(self) -> list[Job]:
        with self._cond:
            return list(self._running.values())

    def waiting(self) -> list[Job]:
        with self._cond:
            return list(self._waiting)

    def jobs(self) -> list[Job]:
        """Running, then waiting, then recently finished (newest first)."""
        with self._cond:
            return [
                *self._running.values(),
                *self._waiting,
                *reversed(self._finished.values()),
            ]
