"""Workers: one thread per device, each owning its model cache, all fed from one `JobQueue`.

A worker takes the oldest job, runs it with its `ModelHost` (so one job at a time per device,
as A1111), records the outcome in the `JobStore`, and only then resolves the job's future: a
caller sees a result after the images are on disk and the record says ``done``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brushwork.core.errors import BrushworkError
from brushwork.jobs.queue import Job, JobContext, JobQueue
from brushwork.jobs.store import JobStore

if TYPE_CHECKING:
    from brushwork.generation import Generator
    from brushwork.library.catalog import Library
    from brushwork.loading import ComponentCache, LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 8 * 1024**3
MAX_GENERATORS = 2


class ModelHost:
    """The models of one device: a `ComponentCache` and one `Generator` per loaded model."""

    def __init__(self, device: str, precision: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.device = device
        self.precision = precision
        self.cache_bytes = cache_bytes
        self._cache: ComponentCache | None = None
        self._generators: dict[int, tuple[LoadedModel, Generator]] = {}

    @property
    def cache(self) -> ComponentCache:
        if self._cache is None:
            from brushwork.loading import ComponentCache

            self._cache = ComponentCache(self.cache_bytes)
        return self._cache

    def model(
        self, checkpoint: Path, vae: str | Path, vae_folders: tuple[Path, ...]
    ) -> LoadedModel:
        return self.cache.get_or_load(
            checkpoint,
            device=self.device,
            precision=self.precision,
            vae=vae,
            vae_folders=vae_folders,
        )

    def generator(self, model: LoadedModel, library: Library) -> Generator:
        """The generator of a model (kept for the last few models: compiled UNets, hashes)."""
        from brushwork.generation import Generator

        cached = self._generators.pop(id(model), None)
        if cached is not None and cached[0] is model:
            cached[1].library = library
            self._generators[id(model)] = cached
            return cached[1]
        generator = Generator(model, library=library)
        self._generators[id(model)] = (model, generator)
        while len(self._generators) > MAX_GENERATORS:
            del self._generators[next(iter(self._generators))]
        return generator

    def release(self) -> None:
        """Drop every cached model (a training run needs the device's memory)."""
        self._generators.clear()
        if self._cache is not None:
            self._cache.clear()

    def memory(self) -> dict[str, Any]:
        stats = self.cache.stats if self._cache is not None else None
        return {
            "device": self.device,
            "cached_models": len(self._cache) if self._cache is not None else 0,
            "cached_bytes": self._cache.nbytes if self._cache is not None else 0,
            "stats": None if stats is None else vars(stats),
        }


class Worker:
    """A thread that runs jobs from the queue on one device."""

    def __init__(
        self, name: str, host: ModelHost, queue: JobQueue, store: JobStore,
        on_change: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.host = host
        self.queue = queue
        self.store = store
        self._on_change = on_change
        self._thread = threading.Thread(target=self._loop, name=f"brushwork-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self.queue.take(self.name, device=self.host.device)
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        self.store.update(job.id, state="running", started=time.time())
        try:
            result = job.run(JobContext(job, self.host))
        except BrushworkError as error:
            self._fail(job, error, str(error))
            return
        except Exception as error:  # a bug or a device error: the worker must survive it
            logger.exception("job %s (%s) failed", job.id, job.kind)
            self._fail(job, error, f"{type(error).__name__}: {error}")
            return
        state = "interrupted" if getattr(result, "interrupted", False) else "done"
        outputs = tuple(str(p) for p in getattr(result, "saved", ()))
        self.store.update(job.id, state=state, finished=time.time(), outputs=outputs)
        self.queue.finish(job, state)
        job.future.set_result(result)

    def _fail(self, job: Job, error: BaseException, message: str) -> None:
        self.store.update(job.id, state="failed", finished=time.time(), error=message)
        self.queue.finish(job, "failed", message)
        job.future.set_exception(error)
