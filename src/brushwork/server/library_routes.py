"""``/brushwork/v1/library``: the model library with kinds, families, hashes, trigger words,
previews and problems, and the two things a user does to a file from a browser.

Files are named by an opaque ``id`` (a digest of root and relative path) that the listing
gives; no route takes a path, so nothing outside the library can be read or written.

* ``GET /library``: every file (``models list --json`` fields, plus ``id``, ``preview`` URL,
  the user's preferred weight and description);
* ``GET /library/problems``: the library's health check (invalid, misfiled, duplicates...);
* ``GET /library/{id}/preview``: the preview sidecar image;
* ``POST /library/{id}/hash``: hash the file (cached in the index), returns its entry;
* ``POST /library/{id}/convert`` ``{half, prune}``: a pickled file as ``.safetensors`` beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict

from brushwork.library.entry import ModelEntry
from brushwork.server.sdapi import safe_text, service_of

router = APIRouter(prefix="/brushwork/v1/library", tags=["brushwork library"])
PREVIEW_MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".webp": "image/webp", ".gif": "image/gif"}  # fmt: skip


class ConvertBody(BaseModel):
    """Options of a conversion to safetensors (``brushwork models convert``)."""

    model_config = ConfigDict(extra="forbid")

    half: bool = False
    prune: bool = False


def entry_id(entry: ModelEntry) -> str:
    key = f"{entry.root}\0{entry.relative_path}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:16]


def entry_json(entry: ModelEntry) -> dict[str, Any]:
    """The listing fields of one entry, JSON-safe."""
    item: dict[str, Any] = json.loads(json.dumps(entry.summary(), default=str))
    item = {k: safe_text(v) if isinstance(v, str) else v for k, v in item.items()}
    item["path"] = safe_text(entry.path)
    item["id"] = entry_id(entry)
    item["preview"] = (
        f"/brushwork/v1/library/{item['id']}/preview" if entry.sidecars.preview else None
    )
    user = entry.sidecars.user
    item["preferred_weight"] = user.preferred_weight if user else None
    item["activation_text"] = safe_text(user.activation_text or "") if user else ""
    item["description"] = safe_text(
        (user.description if user and user.description else None)
        or entry.sidecars.description
        or ""
    )
    return item


def _entry(request: Request, wanted: str) -> ModelEntry:
    for entry in service_of(request).library().scan().entries:
        if entry_id(entry) == wanted:
            return entry
    raise HTTPException(404, f"no library file with id {wanted!r}; list /brushwork/v1/library")


@router.get("")
def library(request: Request) -> list[dict[str, Any]]:
    return [entry_json(entry) for entry in service_of(request).library().scan().entries]


@router.get("/problems")
def problems(request: Request) -> dict[str, Any]:
    from brushwork.library.doctor import diagnose

    report = diagnose(service_of(request).library().scan())
    return {
        "checked": report.checked,
        "healthy": report.healthy,
        "findings": [
            {
                "category": f.category,
                "message": safe_text(f.message),
                "paths": [safe_text(p) for p in f.paths],
            }
            for f in report.findings
        ],
    }


@router.get("/{wanted}/preview")
def preview(request: Request, wanted: str) -> FileResponse:
    entry = _entry(request, wanted)
    name = entry.sidecars.preview
    if not name:
        raise HTTPException(404, f"{entry.display_path} has no preview image")
    path = entry.path.parent / name
    return FileResponse(path, media_type=PREVIEW_MEDIA.get(path.suffix.lower(), "image/png"))


@router.post("/{wanted}/hash")
def hash_entry(request: Request, wanted: str) -> dict[str, Any]:
    """Hash one file (sha256, AutoV2, and a LoRA's tensor hash); cached by path, size, mtime."""
    entry = _entry(request, wanted)
    return entry_json(service_of(request).library().hash_entry(entry))


@router.post("/{wanted}/convert")
def convert(request: Request, wanted: str, body: ConvertBody) -> dict[str, Any]:
    """Convert a pickled file (.ckpt/.pt/.bin) to .safetensors beside it (never replacing a
    file); nothing in the pickle runs."""
    from brushwork.library.convert import convert_to_safetensors

    entry = _entry(request, wanted)
    result = convert_to_safetensors(entry.path, half=body.half, prune=body.prune)
    done = dataclasses.asdict(result)
    for key in ("source", "target"):
        done[key] = safe_text(done[key])
    done["kind"] = str(result.kind)
    return done
