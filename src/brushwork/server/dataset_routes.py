"""Dataset pages' API: pictures with their tags, a tag filter, the frequency table, bulk edits.

The same operations serve a folder under the server's datasets folder (``/datasets/{name}``)
and a project's dataset (``/projects/{name}/dataset``, in `project_routes`):

* ``GET .../images?tag=A&tag=B&without=C&offset=0&limit=200``: the pictures (path relative to
  the dataset, tags, thumbnail URL) that carry every ``tag`` and no ``without`` tag;
* ``GET .../thumbnail/{path}?size=256``: a picture, scaled to fit ``size`` pixels (PNG);
* ``GET .../tags``: how many pictures carry each tag (``brushwork dataset tags DIR stats``);
* ``POST .../tags`` ``{action, tags, front, pattern, order, keep_tokens, images, dry_run}``:
  one dataset-wide edit (`datasets.edit_dataset_tags`), on the listed ``images`` only when
  given (a filtered selection), undoable;
* ``POST .../tags/undo``: take the last edit back, byte for byte.

Pictures are named by their path inside the dataset as the listing gives it; a name that is not
one of the dataset's pictures is a 404, so nothing outside the dataset can be read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from brushwork.core.errors import ConfigError
from brushwork.datasets.captions import CaptionedImage, read_captions
from brushwork.datasets.journal import undo_last
from brushwork.datasets.tag_edit import (
    EditAction,
    SortOrder,
    TagEditRequest,
    edit_dataset_tags,
    tag_counts,
)
from brushwork.server.sdapi import safe_text, service_of

router = APIRouter(prefix="/datasets", tags=["brushwork datasets"])  # under /brushwork/v1
MAX_THUMBNAIL = 1024
MAX_PAGE = 1000


class TagEditBody(BaseModel):
    """One bulk tag edit (the fields of `brushwork dataset tags DIR ACTION ...`)."""

    model_config = ConfigDict(extra="forbid")

    action: EditAction
    tags: list[str] = Field(default_factory=list)
    front: bool = False
    pattern: bool = False
    order: SortOrder = SortOrder.FREQUENCY
    keep_tokens: int = 0
    images: list[str] | None = None  # only these pictures (paths as the listing gives them)
    dry_run: bool = False


def relative_name(folder: Path, path: Path) -> str:
    return safe_text(path.relative_to(folder).as_posix())


def picture_json(folder: Path, item: CaptionedImage, base_url: str) -> dict[str, Any]:
    caption = item.caption
    name = relative_name(folder, item.image)
    return {
        "path": name,
        "tags": [] if caption is None else [safe_text(t) for t in caption.unique_tags()],
        "caption": None if item.text is None else safe_text(item.text),
        "thumbnail": f"{base_url}/thumbnail/{name}",
    }


def list_pictures(
    folder: Path, base_url: str, tags: Sequence[str], without: Sequence[str], page: tuple[int, int]
) -> dict[str, Any]:
    dataset = list(read_captions(folder))
    wanted, unwanted = set(tags), set(without)
    chosen = []
    for item in dataset:
        present = set() if item.caption is None else set(item.caption.tags)
        if wanted <= present and not unwanted & present:
            chosen.append(item)
    offset, limit = page
    return {
        "total": len(dataset),
        "matching": len(chosen),
        "offset": offset,
        "images": [
            picture_json(folder, item, base_url) for item in chosen[offset : offset + limit]
        ],
    }


def thumbnail_png(folder: Path, name: str, size: int) -> bytes:
    found = {relative_name(folder, item.image): item.image for item in read_captions(folder)}
    path = found.get(name)
    if path is None:
        raise HTTPException(404, f"no picture {name!r} in this dataset")
    with Image.open(path) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def tag_table(folder: Path) -> dict[str, Any]:
    dataset = list(read_captions(folder))
    total = len(dataset)
    return {
        "images": total,
        "captioned": sum(1 for item in dataset if item.text is not None),
        "tags": [
            {"tag": safe_text(tag), "images": count, "share": count / total if total else 0.0}
            for tag, count in tag_counts(dataset).items()
        ],
    }


def edit_tags(folder: Path, body: TagEditBody) -> dict[str, Any]:
    dataset = list(read_captions(folder))
    if body.images is not None:
        by_name = {relative_name(folder, item.image): item for item in dataset}
        unknown = [name for name in body.images if name not in by_name]
        if unknown:
            raise ConfigError(f"images: not pictures of this dataset: {', '.join(unknown[:5])}")
        dataset = [by_name[name] for name in dict.fromkeys(body.images)]
    request = TagEditRequest(
        body.action,
        tuple(body.tags),
        front=body.front,
        pattern=body.pattern,
        order=body.order,
        keep_tokens=body.keep_tokens,
    )
    result = edit_dataset_tags(folder, dataset, request, dry_run=body.dry_run)
    return {
        "action": safe_text(request.label),
        "dry_run": body.dry_run,
        "written": result.written,
        "changes": [
            {
                "image": relative_name(folder, change.image),
                "before": None if change.before is None else safe_text(change.before),
                "after": safe_text(change.after),
                "created": change.created,
            }
            for change in result.changes
        ],
    }


def undo_tags(folder: Path) -> dict[str, Any]:
    result = undo_last(folder)
    return {
        "undone": safe_text(result.label),
        "restored": [relative_name(folder, p) for p in result.restored],
        "deleted": [relative_name(folder, p) for p in result.deleted],
        "remaining_levels": result.remaining_levels,
    }


def _dataset_folder(request: Request, name: str) -> Path:
    root = service_of(request).training_places().datasets
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\x00" in name:
        raise HTTPException(404, f"no dataset {name!r}")
    folder = root / name
    if not folder.is_dir():
        raise HTTPException(404, f"no dataset {name!r} in {safe_text(root)}")
    return folder


TagsQuery = Annotated[list[str] | None, Query()]  # a repeatable query parameter


@router.get("/{name}/images")
async def images(
    request: Request,
    name: str,
    tag: TagsQuery = None,
    without: TagsQuery = None,
    offset: int = Query(0, ge=0),
    limit: int = Query(200, ge=1, le=MAX_PAGE),
) -> dict[str, Any]:
    folder = _dataset_folder(request, name)
    base = f"/brushwork/v1/datasets/{name}"
    return await run_in_threadpool(
        list_pictures, folder, base, tag or [], without or [], (offset, limit)
    )


@router.get("/{name}/thumbnail/{path:path}")
async def thumbnail(
    request: Request, name: str, path: str, size: int = Query(256, ge=16, le=MAX_THUMBNAIL)
) -> Response:
    data = await run_in_threadpool(thumbnail_png, _dataset_folder(request, name), path, size)
    return Response(data, media_type="image/png")


@router.get("/{name}/tags")
async def tags(request: Request, name: str) -> dict[str, Any]:
    return await run_in_threadpool(tag_table, _dataset_folder(request, name))


@router.post("/{name}/tags")
async def edit(request: Request, name: str, body: TagEditBody) -> dict[str, Any]:
    return await run_in_threadpool(edit_tags, _dataset_folder(request, name), body)


@router.post("/{name}/tags/undo")
async def undo(request: Request, name: str) -> dict[str, Any]:
    return await run_in_threadpool(undo_tags, _dataset_folder(request, name))
