"""``/brushwork/v1``: what A1111's API has no place for.

* ``GET /jobs``: the live queue (running, waiting, recent) and the job record (every job this
  data folder's servers accepted, with what was lost in a restart);
* ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel`` (a queued job never starts; a running one
  stops at its next step);
* ``GET /library``: every model file with its kind, family, hashes and metadata;
* ``GET /events``: a server-sent event stream of queue snapshots, one per change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from brushwork.server.sdapi import safe_text, service_of

router = APIRouter(prefix="/brushwork/v1", tags=["brushwork"])
EVENT_POLL_S = 0.2
EVENT_KEEPALIVE_S = 15.0


@router.get("/jobs")
def jobs(request: Request, limit: int = 100) -> dict[str, Any]:
    service = service_of(request)
    return {
        "live": [job.snapshot() for job in service.queue.jobs()],
        "record": [record.as_json() for record in service.store.recent(max(1, min(limit, 1000)))],
        "lost_at_start": service.lost_jobs,
        "queue_capacity": service.queue.capacity,
    }


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str) -> dict[str, Any]:
    service = service_of(request)
    live = service.queue.get(job_id)
    if live is not None:
        return live.snapshot()
    record = service.store.get(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return record.as_json()


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str) -> dict[str, Any]:
    found = service_of(request).cancel(job_id)
    if found is None:
        raise HTTPException(404, f"no queued or running job {job_id!r}")
    return found.snapshot()


@router.get("/library")
def library(request: Request) -> list[dict[str, Any]]:
    scan = service_of(request).library().scan()
    items = []
    for entry in scan.entries:
        summary = json.loads(json.dumps(entry.summary(), default=str))
        summary["path"] = safe_text(entry.path)
        items.append(summary)
    return items


async def _events(request: Request) -> AsyncIterator[str]:
    service = service_of(request)
    seen = -1
    idle = 0.0
    while not await request.is_disconnected():
        version = service.queue.version
        running = service.queue.running()
        if version != seen or running:
            seen = version
            idle = 0.0
            snapshot = await run_in_threadpool(
                lambda: [job.snapshot() for job in service.queue.jobs()[:50]]
            )
            yield f"data: {json.dumps({'jobs': snapshot, **service.progress()})}\n\n"
        elif idle >= EVENT_KEEPALIVE_S:
            idle = 0.0
            yield ": keepalive\n\n"
        await asyncio.sleep(EVENT_POLL_S)
        idle += EVENT_POLL_S


@router.get("/events")
async def events(request: Request) -> StreamingResponse:
    return StreamingResponse(_events(request), media_type="text/event-stream")
