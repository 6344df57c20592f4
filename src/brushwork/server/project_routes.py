"""``/brushwork/v1/projects``: training projects (`brushwork.projects`) for the web UI.

Projects live where the CLI keeps them, ``<first library root>/projects``.

* ``GET /projects``: every project, with its pictures and its versions' states;
* ``GET /projects/{name}``: the project (``project show --json``);
* ``GET|POST /projects/{name}/dataset/...``: its dataset's pictures, tags, frequency table,
  bulk edits and undo (as ``/datasets/{name}/...``, see `dataset_routes`);
* ``POST /projects/{name}/versions`` ``{"from": "v1", "options": {...}, "sample_prompts_text":
  "..."}``: the next version (sd-scripts option names; the base model and a VAE by library
  name; no other paths);
* ``GET /projects/{name}/versions/{version}``: its record, with URLs of its preview grids and
  loss curve, and the loss log's rows;
* ``GET /projects/{name}/versions/{version}/files/{path}``: a preview grid, its record, or the
  loss curve (only the files the version's record lists);
* ``POST .../train`` ``{"force": false, "resume": false}`` and ``POST .../preview``
  ``{"prompt": ..., "weights": "0.6,0.8,1.0", "seeds": [1], ...}``: queue a job; watch it with
  ``GET /brushwork/v1/jobs/{id}``, stop it with ``POST /brushwork/v1/jobs/{id}/cancel``.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from brushwork.core.errors import ConfigError
from brushwork.core.kinds import ModelKind
from brushwork.jobs import JobService, refuse_path_like
from brushwork.projects.layout import ProjectNotFoundError, projects_home
from brushwork.projects.project import Project, Version, list_projects, open_project
from brushwork.server import dataset_routes
from brushwork.server.dataset_routes import TagEditBody
from brushwork.server.sdapi import safe_text, service_of

router = APIRouter(prefix="/brushwork/v1", tags=["brushwork projects"])
router.include_router(dataset_routes.router)
PATH_OPTIONS = ("train_data_dir", "reg_data_dir", "dataset_config", "output_dir", "logging_dir",
                "resume", "sample_prompts")  # fmt: skip
FILE_MEDIA = {".png": "image/png", ".json": "application/json", ".csv": "text/csv"}


class NewVersionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    parent: str | None = Field(None, alias="from")
    options: dict[str, Any] = Field(default_factory=dict)
    sample_prompts_text: str | None = None


class TrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False
    resume: bool = False


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str = ""
    weights: str = "0.6,0.8,1.0"
    seeds: list[int] = Field(default_factory=list)
    steps: int | None = None
    cfg_scale: float | None = None
    sampler_name: str | None = None
    width: int | None = None
    height: int | None = None


def _home(service: JobService) -> Path:
    return projects_home(service.library().roots)


def _project(request: Request, name: str) -> Project:
    try:
        return open_project(_home(service_of(request)), name)
    except ProjectNotFoundError as error:
        raise HTTPException(404, error.message) from None


def _version(project: Project, name: str) -> Version:
    try:
        return project.version(name)
    except ProjectNotFoundError as error:
        raise HTTPException(404, error.message) from None


@router.get("/projects")
def projects(request: Request) -> dict[str, Any]:
    from brushwork.projects.summary import list_summary

    home = _home(service_of(request))
    return {
        "projects_dir": safe_text(home),
        "projects": [list_summary(p) for p in list_projects(home)],
    }


@router.get("/projects/{name}")
async def project(request: Request, name: str) -> dict[str, Any]:
    from brushwork.projects.summary import project_summary

    found = _project(request, name)
    summary = await run_in_threadpool(project_summary, found)
    summary["versions"] = [_version_json(found, v) for v in found.versions()]
    return summary


# -- the project's dataset ------------------------------------------------------------------------


def _dataset(request: Request, name: str) -> tuple[Path, str]:
    found = _project(request, name)
    return found.dataset_dir, f"/brushwork/v1/projects/{name}/dataset"


@router.get("/projects/{name}/dataset/images")
async def dataset_images(
    request: Request,
    name: str,
    tag: dataset_routes.TagsQuery = None,
    without: dataset_routes.TagsQuery = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(200, ge=1, le=dataset_routes.MAX_PAGE),
) -> dict[str, Any]:
    folder, base = _dataset(request, name)
    return await run_in_threadpool(
        dataset_routes.list_pictures, folder, base, tag or [], without or [], (offset, limit)
    )


@router.get("/projects/{name}/dataset/thumbnail/{path:path}")
async def dataset_thumbnail(
    request: Request, name: str, path: str, size: int = Query(256, ge=16, le=1024)
) -> Response:
    folder, _base = _dataset(request, name)
    data = await run_in_threadpool(dataset_routes.thumbnail_png, folder, path, size)
    return Response(data, media_type="image/png")


@router.get("/projects/{name}/dataset/tags")
async def dataset_tags(request: Request, name: str) -> dict[str, Any]:
    return await run_in_threadpool(dataset_routes.tag_table, _dataset(request, name)[0])


@router.post("/projects/{name}/dataset/tags")
async def dataset_edit(request: Request, name: str, body: TagEditBody) -> dict[str, Any]:
    return await run_in_threadpool(dataset_routes.edit_tags, _dataset(request, name)[0], body)


@router.post("/projects/{name}/dataset/tags/undo")
async def dataset_undo(request: Request, name: str) -> dict[str, Any]:
    return await run_in_threadpool(dataset_routes.undo_tags, _dataset(request, name)[0])


# -- versions -------------------------------------------------------------------------------------


def _files_url(project: Project, version: Version, relative: str | None) -> str | None:
    if relative is None:
        return None
    return f"/brushwork/v1/projects/{project.name}/versions/{version.name}/files/{relative}"


def _listed_files(version: Version) -> set[str]:
    record = version.record
    listed = {record.files.loss_curve, record.files.loss_csv}
    for info in record.previews:
        listed |= {info.file, info.record, *info.sub_grids}
    return {name for name in listed if name}


def _losses(version: Version) -> list[dict[str, float]]:
    recorded = version.record.files.loss_csv
    path = version.layout.absolute(recorded) if recorded else None
    if path is None or not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            {"step": int(row["step"]), "epoch": int(row["epoch"]), "loss": float(row["loss"]),
             "avr_loss": float(row["avr_loss"])}
            for row in csv.DictReader(handle)
        ]  # fmt: skip


def _version_json(project: Project, version: Version) -> dict[str, Any]:
    from brushwork.projects.summary import version_summary

    summary = version_summary(version)
    summary["loss_curve_url"] = _files_url(project, version, version.record.files.loss_curve)
    summary["preview_urls"] = [
        {**info.model_dump(mode="json"), "url": _files_url(project, version, info.file)}
        for info in version.record.previews
    ]
    return summary


@router.get("/projects/{name}/versions/{version}")
async def version(request: Request, name: str, version: str) -> dict[str, Any]:
    found = _project(request, name)
    chosen = _version(found, version)
    summary = _version_json(found, chosen)
    summary["losses"] = await run_in_threadpool(_losses, chosen)
    return summary


@router.get("/projects/{name}/versions/{version}/files/{path:path}")
def version_file(request: Request, name: str, version: str, path: str) -> FileResponse:
    chosen = _version(_project(request, name), version)
    if path not in _listed_files(chosen):
        raise HTTPException(404, f"{chosen.name} lists no file {path!r}")
    file = chosen.layout.absolute(path)
    if not file.is_file():
        raise HTTPException(404, f"{path!r} of {chosen.name} is gone")
    return FileResponse(
        file, media_type=FILE_MEDIA.get(file.suffix.lower(), "application/octet-stream")
    )


def _client_options(service: JobService, options: dict[str, Any]) -> dict[str, Any]:
    """A client's options: no paths; the base model and VAE by library name."""
    checked = dict(options)
    for option in PATH_OPTIONS:
        if checked.get(option) not in (None, ""):
            raise ConfigError(f"{option}: a project sets its own paths; leave it out")
    for option, kind in (
        ("pretrained_model_name_or_path", ModelKind.CHECKPOINT),
        ("vae", ModelKind.VAE),
    ):
        value = checked.get(option)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{option}: give a model name from the library")
        refuse_path_like(option, value)
        checked[option] = str(service.library().find(value, kind=kind).path)
    return checked


def _create_version(service: JobService, found: Project, body: NewVersionBody) -> dict[str, Any]:
    from brushwork.projects.versions import NewVersion, create_version

    options = _client_options(service, body.options)
    with tempfile.TemporaryDirectory() as scratch:
        if body.sample_prompts_text is not None and body.sample_prompts_text.strip():
            prompts = Path(scratch) / "sample-prompts.txt"
            prompts.write_text(body.sample_prompts_text, encoding="utf-8")
            options["sample_prompts"] = str(prompts)  # copied into the version
        made = create_version(found, NewVersion(None, body.parent, options))
    return _version_json(found, made)


@router.post("/projects/{name}/versions")
async def new_version(request: Request, name: str, body: NewVersionBody) -> dict[str, Any]:
    found = _project(request, name)
    return await run_in_threadpool(_create_version, service_of(request), found, body)


@router.post("/projects/{name}/versions/{version}/train")
async def train(request: Request, name: str, version: str, body: TrainBody) -> dict[str, Any]:
    from brushwork.server.project_jobs import submit_training

    found = _project(request, name)
    chosen = _version(found, version)
    service = service_of(request)
    job = await run_in_threadpool(
        lambda: submit_training(service, found, chosen, force=body.force, resume=body.resume)
    )
    return job.snapshot()


@router.post("/projects/{name}/versions/{version}/preview")
async def preview(request: Request, name: str, version: str, body: PreviewBody) -> dict[str, Any]:
    from brushwork.generation import GenerationRequest
    from brushwork.projects.preview import PreviewRequest
    from brushwork.projects.versions import read_version_config
    from brushwork.server.project_jobs import submit_preview

    found = _project(request, name)
    chosen = _version(found, version)
    config = read_version_config(chosen)
    fields = {key: value for key, value in body.model_dump().items()
              if key not in ("weights", "seeds") and value is not None}  # fmt: skip
    fields.setdefault("width", config.resolution[0])
    fields.setdefault("height", config.resolution[1])
    wanted = PreviewRequest(GenerationRequest(**fields), body.weights, tuple(body.seeds))
    service = service_of(request)
    job = await run_in_threadpool(lambda: submit_preview(service, found, chosen, wanted))
    return job.snapshot()
