"""Drawing an X/Y/Z plot as A1111 draws it (``images.draw_grid_annotations``).

A sub-grid per Z value: the cells in rows (Y) and columns (X), column labels centred above,
row labels centred in a left margin three quarters of a cell wide, a font size of
``(cell width + cell height) // 25`` (shrunk for a line that does not fit), words wrapped to the
column (or margin) width, black text on white, optional gaps between cells. Several Z values:
the sub-grids side by side, each with its Z label above as a title, drawn the same way with the
sub-grid as the "cell". Without labels there is no margin at all.

The font is Pillow's default (``ImageFont.load_default``, scalable with FreeType); A1111 uses
DejaVu Sans, so glyphs differ slightly while the layout rules are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

TEXT_COLOR = (0, 0, 0)
BACKGROUND = (255, 255, 255)
EMPTY_CELL = (0, 0, 0)  # A1111's image_grid background, seen where a cell is missing
FONT_DIVISOR = 25
LEFT_MARGIN_FRACTION = (3, 4)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Box = tuple[int, int, int, int]


def font(size: int) -> Font:
    """Pillow's default font at `size` pixels (never below 1)."""
    return ImageFont.load_default(size=max(size, 1))


@dataclass(frozen=True)
class Line:
    text: str
    width: int
    height: int
    allowed_width: int


@dataclass(frozen=True)
class Legend:
    """The margins a labelled grid gets, and the wrapped label lines."""

    font_size: int
    line_spacing: int
    pad_left: int
    pad_top: int
    columns: tuple[tuple[Line, ...], ...]
    rows: tuple[tuple[Line, ...], ...]


def _measure() -> ImageDraw.ImageDraw:
    return ImageDraw.Draw(Image.new("RGB", (1, 1), BACKGROUND))


def _wrap(draw: ImageDraw.ImageDraw, text: str, size: int, allowed: int) -> list[str]:
    """Words joined into lines no wider than `allowed` (a long word keeps a line of its own)."""
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if draw.textlength(joined, font=font(size)) <= allowed:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def _lines(draw: ImageDraw.ImageDraw, text: str, size: int, allowed: int) -> tuple[Line, ...]:
    lines = []
    for part in _wrap(draw, text, size, allowed):
        left, top, right, bottom = draw.multiline_textbbox((0, 0), part, font=font(size))
        lines.append(Line(part, int(right - left), int(bottom - top), allowed))
    return tuple(lines)


def _block_height(lines: Sequence[Line], spacing: int) -> int:
    return sum(line.height + spacing for line in lines) - spacing


def legend(
    cell_width: int, cell_height: int, column_labels: Sequence[str], row_labels: Sequence[str]
) -> Legend:
    """Where the labels of a grid of such cells go, as A1111 lays them out."""
    size = (cell_width + cell_height) // FONT_DIVISOR
    spacing = size // 2
    pad_left = 0
    if any(label for label in row_labels):
        pad_left = cell_width * LEFT_MARGIN_FRACTION[0] // LEFT_MARGIN_FRACTION[1]
    draw = _measure()
    columns = tuple(_lines(draw, label, size, cell_width) for label in column_labels)
    rows = tuple(_lines(draw, label, size, pad_left) for label in row_labels)
    heights = [_block_height(lines, spacing) for lines in columns]
    pad_top = 0 if not any(heights) else max(heights) + spacing * 2
    return Legend(size, spacing, pad_left, pad_top, columns, rows)


def _draw_lines(
    draw: ImageDraw.ImageDraw, centre_x: float, top: float, lines: Sequence[Line], legend: Legend
) -> None:
    for line in lines:
        size = legend.font_size
        while size > 1 and draw.textlength(line.text, font=font(size)) > line.allowed_width:
            size -= 1  # A1111 shrinks a line that does not fit (one long word)
        position = (centre_x, top + line.height / 2)
        draw.multiline_text(
            position, line.text, font=font(size), fill=TEXT_COLOR, anchor="mm", align="center"
        )
        top += line.height + legend.line_spacing


@dataclass(frozen=True)
class LabelledGrid:
    """A drawn grid and where each cell lies in it (left, top, right, bottom)."""

    image: Image.Image
    boxes: tuple[tuple[Box | None, ...], ...]  # [row][column]; None: no cell there


def labelled_grid(
    cells: Sequence[Sequence[Image.Image | None]],
    column_labels: Sequence[str],
    row_labels: Sequence[str],
    *,
    margin: int = 0,
    draw_legend: bool = True,
    slot: tuple[int, int] | None = None,
) -> LabelledGrid:
    """Cells (``cells[row][column]``; None for a missing one) with their labels around them.

    Every cell gets a slot the size of the largest cell (or `slot`); a smaller one sits in its
    top-left corner (A1111 sizes every slot after the first image)."""
    present = [cell for row in cells for cell in row if cell is not None]
    if slot is None:
        if not present:
            raise ValueError("a grid needs at least one image, or a slot size")
        slot = (max(cell.width for cell in present), max(cell.height for cell in present))
    width, height = slot
    rows, columns = len(cells), len(cells[0])
    if draw_legend:
        layout = legend(width, height, column_labels, row_labels)
    else:
        layout = legend(width, height, [""] * columns, [""] * rows)
    size = (
        layout.pad_left + columns * width + margin * (columns - 1),
        layout.pad_top + rows * height + margin * (rows - 1),
    )
    result = Image.new("RGB", size, BACKGROUND)
    boxes: list[tuple[Box | None, ...]] = []
    for row_index, row in enumerate(cells):
        top = layout.pad_top + (height + margin) * row_index
        result.paste(EMPTY_CELL, (layout.pad_left, top, size[0], top + height))
        row_boxes: list[Box | None] = []
        for column_index, cell in enumerate(row):
            left = layout.pad_left + (width + margin) * column_index
            if margin and column_index < columns - 1:
                result.paste(BACKGROUND, (left + width, top, left + width + margin, top + height))
            if cell is None:
                row_boxes.append(None)
                continue
            result.paste(cell.convert("RGB"), (left, top))
            row_boxes.append((left, top, left + cell.width, top + cell.height))
        boxes.append(tuple(row_boxes))
    _draw_legend(result, layout, width, height, margin)
    return LabelledGrid(result, tuple(boxes))


def _draw_legend(image: Image.Image, layout: Legend, width: int, height: int, margin: int) -> None:
    draw = ImageDraw.Draw(image)
    for index, lines in enumerate(layout.columns):
        centre = layout.pad_left + (width + margin) * index + width / 2
        top = layout.pad_top / 2 - _block_height(lines, layout.line_spacing) / 2
        _draw_lines(draw, centre, top, lines, layout)
    for index, lines in enumerate(layout.rows):
        middle = layout.pad_top + (height + margin) * index + height / 2
        # A1111 centres row labels by a height that leaves the line spacing out entirely
        text_height = sum(line.height for line in lines)
        _draw_lines(draw, layout.pad_left / 2, middle - text_height / 2, lines, layout)


def titled_row(grids: Sequence[Image.Image], titles: Sequence[str]) -> LabelledGrid:
    """Sub-grids side by side with a title above each (A1111's Z axis)."""
    return labelled_grid([list(grids)], titles, [""])
