"""``/brushwork/v1/train``: LoRA training as a job (see `brushwork.jobs.training`).

* ``POST /train/lora`` with a JSON object of sd-scripts option names (as in a ``--config_file``
  TOML) and optionally ``sample_prompts_text``: the run is queued (503 + Retry-After when the
  queue is full; 422 naming the option when one is wrong); the reply is the job;
* ``POST /train/lora/plan``: the same body checked, with kohya's step arithmetic, not queued;
* ``GET /train/{id}?since=STEP``: state, step/total, loss, average loss, epoch, ETA, the loss
  history after ``since``, the plan, the files written and the sample images;
* ``GET /train/{id}/samples/{file}``: one sample image;
* ``GET /datasets``: the dataset folders a run may use (kohya ``<repeats>_<name>`` subfolders);
* stop a run with ``POST /jobs/{id}/cancel`` (queued: never starts; running: stops after the
  current step and keeps the files saved so far).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from brushwork.jobs import Job
from brushwork.jobs.training import TrainingOutcome, TrainingRun
from brushwork.server.sdapi import safe_text, service_of

router = APIRouter(prefix="/brushwork/v1", tags=["brushwork training"])
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@router.post("/train/lora")
async def train_lora(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Queue a LoRA run (sd-scripts option names; paths relative to the server's folders)."""
    service = service_of(request)
    job = await run_in_threadpool(service.submit_training, body)
    return job.snapshot()


@router.post("/train/lora/plan")
async def plan_lora(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Check a run and compute its steps and epochs the way kohya does; nothing is queued."""
    return await run_in_threadpool(service_of(request).plan_training, body)


def _training_job(request: Request, job_id: str) -> Job:
    job = service_of(request).queue.get(job_id)
    if job is None or not isinstance(job.detail, TrainingRun):
        raise HTTPException(404, f"no training job {job_id!r} on this server since it started")
    return job


@router.get("/train/{job_id}")
def training(request: Request, job_id: str, since: int = 0) -> dict[str, Any]:
    job = _training_job(request, job_id)
    run: TrainingRun = job.detail
    final = None
    if job.future.done() and job.future.exception() is None:
        outcome: TrainingOutcome = job.future.result()
        final = safe_text(outcome.final_file) if outcome.final_file else None
    base = f"/brushwork/v1/train/{job.id}/samples/"
    return {
        **job.snapshot(),
        "plan": run.plan_text,
        "config": run.config_text,
        "warnings": [safe_text(w) for w in run.warnings],
        "losses": run.losses_since(since),
        "saved": [safe_text(p.name) for p in run.saved_files()],
        "final_file": final,
        "output_dir": safe_text(run.output_dir),
        "samples": [{**item, "url": base + item["file"]} for item in run.samples()],
    }


@router.get("/train/{job_id}/samples/{file_name}")
def sample(request: Request, job_id: str, file_name: str) -> FileResponse:
    run: TrainingRun = _training_job(request, job_id).detail
    if file_name not in {item["file"] for item in run.samples()}:
        raise HTTPException(404, f"no sample {file_name!r} in this run")
    return FileResponse(run.output_dir / "sample" / file_name, media_type="image/png")


@router.get("/datasets")
def datasets(request: Request) -> dict[str, Any]:
    """Folders under the datasets folder, each with its kohya image folders and image counts."""
    places = service_of(request).training_places()
    found = []
    if places.datasets.is_dir():
        for folder in sorted(p for p in places.datasets.iterdir() if p.is_dir()):
            found.append({"name": safe_text(folder.name), "subsets": _subsets(folder)})
    return {
        "datasets_dir": safe_text(places.datasets),
        "outputs_dir": safe_text(places.outputs),
        "datasets": found,
    }


def _subsets(folder: Path) -> list[dict[str, Any]]:
    subsets = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        repeats, _, name = sub.name.partition("_")
        images = sum(1 for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        subsets.append({
            "folder": safe_text(sub.name),
            "repeats": int(repeats) if repeats.isdigit() else None,
            "name": safe_text(name if repeats.isdigit() else sub.name),
            "images": images,
        })  # fmt: skip
    return subsets
