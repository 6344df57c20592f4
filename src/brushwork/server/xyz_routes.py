"""``/brushwork/v1/xyz``: A1111's X/Y/Z plot as a job, and the epoch x strength grid of a run.

* ``GET /xyz/axes``: the axis types (our keys and A1111's labels);
* ``POST /xyz``: a txt2img body (A1111's fields) plus ``x_type``/``x_values``, ``y_...``,
  ``z_...`` (values as A1111 writes them: ``10,20,30``, ``1-10 (+2)``, ``5-9 [3]``), ``margin``
  and ``draw_legend``; the reply comes when the grid is saved: ``images`` (base64 PNG, the main
  grid first, then one per Z value) and ``info`` (a JSON string: the grid's infotext, its
  record with every cell's infotext, the files written, whether it was interrupted);
* ``POST /train/{job_id}/grid``: the same for a training run's epoch files (rows) x LoRA
  ``strengths`` (columns, default ``0.4,0.6,0.8,1.0``).

Models on axes are library names; progress, interrupt and the queue work as for txt2img.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from brushwork.jobs.grids import AxisSpec, GridOutcome, submit_epoch_grid, submit_grid
from brushwork.server.models import Txt2ImgBody, warn_ignored
from brushwork.server.sdapi import build_request, safe_text, service_of

router = APIRouter(prefix="/brushwork/v1", tags=["brushwork grids"])
DEFAULT_STRENGTHS = "0.4,0.6,0.8,1.0"


class XyzBody(Txt2ImgBody):
    """``POST /brushwork/v1/xyz``: txt2img's fields and the three axes."""

    x_type: str | None = None
    x_values: str | None = None
    y_type: str | None = None
    y_values: str | None = None
    z_type: str | None = None
    z_values: str | None = None
    margin: int = Field(0, ge=0, le=256)
    draw_legend: bool = True


class EpochGridBody(Txt2ImgBody):
    """``POST /brushwork/v1/train/{job_id}/grid``: txt2img's fields and the strengths."""

    strengths: str = DEFAULT_STRENGTHS


@router.get("/xyz/axes")
def axes() -> list[dict[str, Any]]:
    from brushwork.generation.xyz_axes import AXIS_TYPES

    return [
        {"key": t.key, "label": t.label, "aliases": list(t.aliases), "type": t.value_type.__name__}
        for t in AXIS_TYPES
    ]


def _spec(kind: str | None, values: str | None) -> AxisSpec | None:
    return AxisSpec(kind, values or "") if kind else None


def _reply(outcome: GridOutcome) -> dict[str, Any]:
    result = outcome.result
    info = {
        "cells": len(result.cells),
        "drawn": sum(cell is not None for cell in result.cells),
        "interrupted": result.interrupted,
        "saved": [safe_text(path) for path in outcome.saved],
        "infotexts": [cell.infotext if cell is not None else None for cell in result.cells],
    }
    if outcome.pngs:
        from brushwork.generation.xyz_output import read_xyz_record

        info["record"] = read_xyz_record(outcome.pngs[0])
    return {
        "images": [base64.b64encode(png).decode("ascii") for png in outcome.pngs],
        "info": json.dumps(info),
    }


@router.post("/xyz")
async def xyz(request: Request, body: XyzBody) -> dict[str, Any]:
    """Draw an X/Y/Z plot (see the module docstring)."""
    service = service_of(request)

    def submit() -> Any:
        warn_ignored(body)
        specs = (_spec(body.x_type, body.x_values), _spec(body.y_type, body.y_values),
                 _spec(body.z_type, body.z_values))  # fmt: skip
        return submit_grid(
            service, build_request(body), specs, override_settings=body.override_settings,
            margin=body.margin, draw_legend=body.draw_legend,
        )  # fmt: skip

    job = await run_in_threadpool(submit)
    outcome: GridOutcome = await asyncio.wrap_future(job.future)
    return await run_in_threadpool(_reply, outcome)


@router.post("/train/{job_id}/grid")
async def epoch_grid(request: Request, job_id: str, body: EpochGridBody) -> dict[str, Any]:
    """A training run's epochs (rows) x LoRA strengths (columns), one seed throughout."""
    service = service_of(request)

    def submit() -> Any:
        return submit_epoch_grid(
            service, job_id, build_request(body), body.strengths,
            override_settings=body.override_settings,
        )  # fmt: skip

    job = await run_in_threadpool(submit)
    outcome: GridOutcome = await asyncio.wrap_future(job.future)
    return await run_in_threadpool(_reply, outcome)
