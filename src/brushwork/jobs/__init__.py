"""jobs floor (F5): the only long-lived state of a server.

`JobService` owns the job queue (bounded FIFO, `JobQueue`), one `Worker` per device with its own
model cache (`ModelHost`: the component cache's owner), the job record in SQLite (`JobStore`),
the A1111 options (`Options`) and progress. Cancellation: `JobQueue.cancel` (a queued job never
starts; a running one stops at its next step), `interrupt_running`.
"""

from brushwork.jobs.names import checkpoint_title, refuse_path_like
from brushwork.jobs.options import DEFAULT_OPTIONS, Options, check_option, request_overrides
from brushwork.jobs.queue import (
    Job,
    JobCancelledError,
    JobContext,
    JobProgress,
    JobQueue,
    QueueFullError,
)
from brushwork.jobs.service import GenerationOutcome, JobService, ServiceConfig
from brushwork.jobs.store import JobRecord, JobStore
from brushwork.jobs.workers import ModelHost, Worker

__all__ = [
    "DEFAULT_OPTIONS",
    "GenerationOutcome",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobProgress",
    "JobQueue",
    "JobRecord",
    "JobService",
    "JobStore",
    "ModelHost",
    "Options",
    "QueueFullError",
    "ServiceConfig",
    "Worker",
    "check_option",
    "checkpoint_title",
    "refuse_path_like",
    "request_overrides",
]
