"""An X/Y/Z plot's grids: drawn, described (infotext and the ``brushwork.xyz`` record), saved.

`draw_xyz` gives the main grid (the sub-grids side by side under their Z titles, or the one
grid when there is no Z axis) and, with several Z values, each sub-grid. `save_xyz` saves them
as A1111 names its X/Y/Z grids (``<out>/txt2img-grids/<date>/xyz_grid-NNNN.png``) with:

* ``parameters``: the infotext of the grid's first cell plus A1111's script fields
  (``Script: X/Y/Z plot, X Type: Steps, X Values: "10,20"``, ``Fixed X Values`` for seeds),
  so A1111's PNG Info restores the cell and the plot;
* ``brushwork.xyz``: JSON (also saved beside the PNG as ``xyz_grid-NNNN.json``)::

    {"format": "brushwork.xyz", "version": 1, "z": null, "size": [w, h], "interrupted": false,
     "axes": [{"axis": "x", "type": "steps", "label": "Steps", "text": "10,20",
               "values": [10, 20], "labels": ["Steps: 10", "Steps: 20"]}, ...],
     "cells": [{"x": 0, "y": 0, "z": 0, "box": [left, top, right, bottom],
                "checkpoint": "/path/model.safetensors", "vae": "auto",
                "infotext": "...", "infotexts": ["...", ...], "seeds": [1, ...]}, ...]}

  ``z`` is null for the main grid and the Z index for a sub-grid; ``box`` is where the cell
  lies in that image (absent for a cell not drawn); ``infotexts`` has one entry per image of
  the cell's batch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.core.fsutil import atomic_write_bytes
from brushwork.generation.outputs import (
    MAX_NAME_TRIES,
    PARAMETERS_KEY,
    image_grid,
    images_folder,
    next_sequence_number,
)
from brushwork.generation.xyz import XYZCellResult, XYZResult
from brushwork.generation.xyz_axes import Axis
from brushwork.generation.xyz_draw import Box, labelled_grid, titled_row
from brushwork.prompt import format_infotext

RECORD_KEY = "brushwork.xyz"
RECORD_FORMAT_VERSION = 1
GRID_BASENAME = "xyz_grid"  # A1111's X/Y/Z plot grids: xyz_grid-0000.png
SCRIPT_TITLE = "X/Y/Z plot"


@dataclass(frozen=True, eq=False)
class XYZGrid:
    """One grid image with its infotext and record."""

    image: Image.Image
    infotext: str
    record: dict[str, Any]

    def png_bytes(self) -> bytes:
        info = PngInfo()
        info.add_text(PARAMETERS_KEY, self.infotext)
        info.add_text(RECORD_KEY, json.dumps(self.record), zip=True)
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()


def cell_image(cell: XYZCellResult) -> Image.Image:
    """A cell's picture: its image, or a grid of its batch (as A1111 shows a batch)."""
    images = [item.image for item in cell.generated]
    return images[0] if len(images) == 1 else image_grid(images)


def xyz_infotext(infotext: str, axes: Sequence[Axis | None]) -> str:
    """A cell's infotext with A1111's X/Y/Z plot fields, before ``Version`` as A1111 puts them."""
    fields: dict[str, object] = {"Script": SCRIPT_TITLE}
    for name, axis in zip("XYZ", axes, strict=False):
        if axis is None:
            continue
        fields[f"{name} Type"] = axis.type.label
        fields[f"{name} Values"] = axis.text
        fields[f"Fixed {name} Values"] = axis.fixed_values
    extra = format_infotext("", "", fields)
    head, newline, last = infotext.rpartition("\n")
    marker = ", Version: "
    if marker in last:
        at = last.rindex(marker)
        last = f"{last[:at]}, {extra}{last[at:]}"
    else:
        last = f"{last}, {extra}"
    return f"{head}{newline}{last}"


def _axes_record(axes: Sequence[Axis | None]) -> list[dict[str, Any]]:
    return [
        {
            "axis": name,
            "type": axis.type.key,
            "label": axis.type.label,
            "text": axis.text,
            "values": list(axis.values),
            "labels": list(axis.labels),
        }
        for name, axis in zip("xyz", axes, strict=False)
        if axis is not None
    ]


def _cell_record(
    result: XYZCellResult | None, place: tuple[int, int, int], box: Box | None
) -> dict[str, Any]:
    x, y, z = place
    record: dict[str, Any] = {"x": x, "y": y, "z": z}
    if result is None:
        return record
    record.update(
        box=list(box) if box is not None else None,
        checkpoint=str(result.cell.checkpoint),
        vae=str(result.cell.vae),
        infotext=result.infotext,
        infotexts=[item.infotext for item in result.generated],
        seeds=[item.seed for item in result.generated],
    )
    return record


def _shift(box: Box | None, left: int, top: int) -> Box | None:
    if box is None:
        return None
    return (box[0] + left, box[1] + top, box[2] + left, box[3] + top)


def draw_xyz(result: XYZResult) -> tuple[XYZGrid, ...]:
    """The main grid, then (with several Z values) each sub-grid."""
    plan = result.plan
    columns, rows, depth = plan.shape
    done = [cell for cell in result.cells if cell is not None]
    if not done:
        raise ConfigError("no cell of the plot was drawn, so there is no grid to make")
    pictures = {(c.cell.x, c.cell.y, c.cell.z): cell_image(c) for c in done}
    slot = (max(p.width for p in pictures.values()), max(p.height for p in pictures.values()))
    subs = []
    for z in range(depth):
        cells = [[pictures.get((x, y, z)) for x in range(columns)] for y in range(rows)]
        subs.append(
            labelled_grid(
                cells,
                plan.labels(0),
                plan.labels(1),
                margin=plan.margin,
                draw_legend=plan.draw_legend,
                slot=slot,
            )
        )
    titles = plan.labels(2) if plan.axes[2] is not None and plan.draw_legend else ("",) * depth
    main = titled_row([sub.image for sub in subs], titles)
    offsets = [box[:2] if box is not None else (0, 0) for box in main.boxes[0]]
    places = [(x, y, z) for z in range(depth) for y in range(rows) for x in range(columns)]
    main_boxes = {(x, y, z): _shift(subs[z].boxes[y][x], *offsets[z]) for x, y, z in places}
    grids = [_grid(result, main.image, None, main_boxes)]
    if depth > 1:
        for index, sub in enumerate(subs):
            boxes = {(x, y, z): sub.boxes[y][x] for x, y, z in places if z == index}
            grids.append(_grid(result, sub.image, index, boxes))
    return tuple(grids)


def _grid(
    result: XYZResult,
    image: Image.Image,
    z: int | None,
    boxes: dict[tuple[int, int, int], Box | None],
) -> XYZGrid:
    plan = result.plan
    records = []
    first: XYZCellResult | None = None
    for cell, drawn in zip(plan.cells, result.cells, strict=True):
        if z is not None and cell.z != z:
            continue
        first = first or drawn
        place = (cell.x, cell.y, cell.z)
        records.append(_cell_record(drawn, place, boxes.get(place)))
    record = {
        "format": RECORD_KEY,
        "version": RECORD_FORMAT_VERSION,
        "z": z,
        "size": [image.width, image.height],
        "interrupted": result.interrupted,
        "axes": _axes_record(plan.axes),
        "cells": records,
    }
    infotext = xyz_infotext(first.infotext, plan.axes) if first is not None else ""
    return XYZGrid(image, infotext, record)


def save_xyz(
    result: XYZResult, out: Path, grids: Sequence[XYZGrid] | None = None
) -> tuple[Path, ...]:
    """Save the grids (main first) in A1111's grids folder, each with its ``.json`` record."""
    grids = draw_xyz(result) if grids is None else grids
    folder = images_folder(out, result.plan.cells[0].request.mode, grid=True)
    return tuple(_save_new(folder, grid) for grid in grids)


def _save_new(folder: Path, grid: XYZGrid) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = grid.png_bytes()
    start = next_sequence_number(folder, GRID_BASENAME)
    for number in range(start, start + MAX_NAME_TRIES):
        path = folder / f"{GRID_BASENAME}-{number:04}.png"
        if path.exists():
            continue
        try:
            atomic_write_bytes(path, data, overwrite=False)
        except BrushworkError:  # the name was taken meanwhile
            continue
        record = json.dumps(grid.record, indent=1).encode()
        atomic_write_bytes(path.with_suffix(".json"), record)
        return path
    raise ConfigError(f"no free file name in {folder} after {MAX_NAME_TRIES} tries")


def read_xyz_record(png: bytes) -> dict[str, Any] | None:
    """The ``brushwork.xyz`` record of a grid PNG (None when it has none)."""
    with Image.open(io.BytesIO(png)) as image:
        text = getattr(image, "text", {}).get(RECORD_KEY)
    if text is None:
        return None
    record: dict[str, Any] = json.loads(text)
    return record
