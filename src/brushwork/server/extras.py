"""``/brushwork/v1``: what A1111's API has no place for.

* ``GET /jobs``: the live queue (running, waiting, recent) and the job record (every job this
  data folder's servers accepted, with what was lost in a restart);
* ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel`` (a queued job never starts; a running one
  stops at its next step);
* ``GET /gallery``: recent generated images with their infotext (``/jobs/{id}/outputs/{n}``);
* the library (`library_routes`) and training (`training_routes`) have their own modules;
* ``GET /events``: a server-sent event stream of queue snapshots, one per change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from brushwork.server.sdapi import safe_text, service_of

router = APIRouter(prefix="/brushwork/v1", tags=["brushwork"])
EVENT_POLL_S = 0.2
EVENT_KEEPALIVE_S = 15.0
GALLERY_KINDS = ("txt2img", "img2img", "xyz")
IMAGE_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".webp": "image/webp"}  # fmt: skip


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


@router.get("/gallery")
def gallery(request: Request, limit: int = 48) -> list[dict[str, Any]]:
    """The newest generated images (this data folder's job record), each with its infotext."""
    items: list[dict[str, Any]] = []
    for record in service_of(request).store.recent(1000):
        if record.kind not in GALLERY_KINDS:
            continue
        for index, output in enumerate(record.outputs):
            path = Path(output)
            if not path.is_file():
                continue  # deleted since
            items.append({
                "job": record.id, "index": index, "name": safe_text(path.name),
                "url": f"/brushwork/v1/jobs/{record.id}/outputs/{index}",
                "created": record.finished or record.created, "infotext": _infotext(path),
            })  # fmt: skip
            if len(items) >= max(1, min(limit, 500)):
                return items
    return items


def _infotext(path: Path) -> str:
    try:
        with Image.open(path) as image:
            text = image.info.get("parameters")
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""
    return safe_text(text) if isinstance(text, str) else ""


@router.get("/jobs/{job_id}/outputs/{index}")
def output(request: Request, job_id: str, index: int) -> FileResponse:
    """One image a generation job wrote (named by the job record, never by a path)."""
    record = service_of(request).store.get(job_id)
    if record is None or record.kind not in GALLERY_KINDS or not 0 <= index < len(record.outputs):
        raise HTTPException(404, f"no image {index} of job {job_id!r}")
    path = Path(record.outputs[index])
    if path.suffix.lower() not in IMAGE_MEDIA or not path.is_file():
        raise HTTPException(404, f"image {index} of job {job_id!r} is gone")
    return FileResponse(path, media_type=IMAGE_MEDIA[path.suffix.lower()])


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
