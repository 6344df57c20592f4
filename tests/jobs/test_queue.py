"""The job queue: FIFO, bounded (refuses at once), cancellation, workers, the job record."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from brushwork.jobs import (
    Job,
    JobCancelledError,
    JobContext,
    JobQueue,
    JobStore,
    ModelHost,
    QueueFullError,
    Worker,
)


def _job(kind: str = "test", result: object = None) -> Job:
    return Job(kind, lambda _ctx: result)


def test_jobs_come_out_in_the_order_they_went_in() -> None:
    queue = JobQueue(capacity=4)
    jobs = [queue.submit(_job()) for _ in range(3)]
    taken = [queue.take("w", timeout=0.1) for _ in range(3)]
    assert taken == jobs
    assert all(job.state == "running" for job in jobs)


def test_a_full_queue_refuses_at_once_with_a_retry_time() -> None:
    queue = JobQueue(capacity=2, retry_after_s=7)
    queue.submit(_job())
    queue.submit(_job())
    started = time.monotonic()
    with pytest.raises(QueueFullError) as caught:
        queue.submit(_job())
    assert time.monotonic() - started < 0.5
    assert caught.value.retry_after_s == 7


def test_a_cancelled_queued_job_never_runs_and_its_waiter_is_told() -> None:
    queue = JobQueue(capacity=4)
    first, second = queue.submit(_job()), queue.submit(_job())
    queue.cancel(first.id)
    assert first.state == "cancelled"
    with pytest.raises(JobCancelledError):
        first.future.result(timeout=1)
    assert queue.take("w", timeout=0.1) is second


def test_cancelling_a_running_job_sets_its_stop_flag() -> None:
    queue = JobQueue(capacity=4)
    job = queue.submit(_job())
    queue.take("w", timeout=0.1)
    queue.cancel(job.id)
    assert job.cancel.is_set()


def test_the_record_marks_unfinished_jobs_of_an_earlier_run_as_lost(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3", owner="a:1")
    store.add("done-job", "txt2img", {}, 1.0)
    store.update("done-job", state="done", finished=2.0, outputs=("x.png",))
    store.add("queued-job", "txt2img", {}, 3.0)
    other = JobStore(tmp_path / "jobs.sqlite3", owner="b:2")
    other.add("other-job", "txt2img", {}, 4.0)
    store.close()

    restarted = JobStore(tmp_path / "jobs.sqlite3", owner="a:1")
    assert restarted.mark_lost() == 1
    states = {record.id: record.state for record in restarted.recent()}
    assert states == {"done-job": "done", "queued-job": "lost", "other-job": "queued"}
    assert restarted.get("done-job").outputs == ("x.png",)  # type: ignore[union-attr]


def test_a_worker_records_the_outcome_before_the_waiter_sees_it(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3", owner="t")
    queue = JobQueue(capacity=4)
    worker = Worker("w0", ModelHost("cpu", "fp32"), queue, store)
    worker.start()

    def boom(_ctx: JobContext) -> None:
        raise RuntimeError("device fell over")

    good = queue.submit(_job(result=42))
    store.add(good.id, "test", {}, good.created)
    bad = queue.submit(Job("test", boom))
    store.add(bad.id, "test", {}, bad.created)
    assert good.future.result(timeout=5) == 42
    assert store.get(good.id).state == "done"  # type: ignore[union-attr]
    with pytest.raises(RuntimeError):
        bad.future.result(timeout=5)
    assert store.get(bad.id).state == "failed"  # type: ignore[union-attr]
    assert "device fell over" in (store.get(bad.id).error or "")  # type: ignore[union-attr]
    after = queue.submit(_job(result="still alive"))
    assert after.future.result(timeout=5) == "still alive"
    queue.close()
    worker.join(5)


def test_two_workers_share_one_queue() -> None:
    store_path = Path(__import__("tempfile").mkdtemp()) / "jobs.sqlite3"
    store = JobStore(store_path, owner="t")
    queue = JobQueue(capacity=16)
    barrier = threading.Barrier(2, timeout=5)

    def meet(ctx: JobContext) -> str:
        barrier.wait()  # only passes when both workers run a job at the same time
        return ctx.job.worker or ""

    workers = [Worker(f"w{i}", ModelHost("cpu", "fp32"), queue, store) for i in range(2)]
    for worker in workers:
        worker.start()
    jobs = [queue.submit(Job("test", meet)) for _ in range(2)]
    names = {job.future.result(timeout=10) for job in jobs}
    assert names == {"w0", "w1"}
    queue.close()
