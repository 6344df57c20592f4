"""What a run records: one CSV row per optimiser step, TensorBoard when installed, a loss-curve
PNG at the end, and progress events for whoever shows a progress bar.

The CSV holds only values that a resumed run reproduces exactly (no wall-clock times), so an
interrupted-and-resumed run writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from brushwork.core.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepRecord:
    step: int  # optimiser steps done (1-based)
    epoch: int  # 1-based
    loss: float
    average_loss: (
        float  # moving average over the last epoch's worth of steps (sd-scripts' avr_loss)
    )
    learning_rates: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TrainingProgress:
    """One step done; for progress bars (it/s and ETA are wall-clock, so not in the CSV)."""

    step: int
    total_steps: int
    epoch: int
    total_epochs: int
    loss: float
    average_loss: float
    steps_per_second: float
    eta_seconds: float | None


def _format(value: float) -> str:
    return repr(float(value))


class TrainingLog:
    """Step records in memory and in `csv_path` (rewritten whole on restore)."""

    def __init__(self, csv_path: Path, group_names: Sequence[str], *, window: int = 1) -> None:
        self.csv_path = csv_path
        self.group_names = tuple(group_names)
        self.window = max(1, window)
        self.records: list[StepRecord] = []
        self._tensorboard: Any = None

    @property
    def header(self) -> list[str]:
        return ["step", "epoch", "loss", "avr_loss", *(f"lr/{g}" for g in self.group_names)]

    def enable_tensorboard(self, folder: Path) -> bool:
        """TensorBoard scalars too, if the package is installed (it is optional)."""
        if importlib.util.find_spec("tensorboard") is None:
            logger.info("tensorboard is not installed; logging to CSV only")
            return False
        from torch.utils.tensorboard import SummaryWriter

        self._tensorboard = SummaryWriter(log_dir=str(folder))
        return True

    def add(self, step: int, epoch: int, loss: float, rates: dict[str, float]) -> StepRecord:
        recent = [r.loss for r in self.records[-(self.window - 1) :]] if self.window > 1 else []
        average = (sum(recent) + loss) / (len(recent) + 1)
        record = StepRecord(step, epoch, loss, average, tuple(rates.items()))
        self.records.append(record)
        self._append_csv(record)
        if self._tensorboard is not None:
            self._tensorboard.add_scalar("loss/current", loss, step)
            self._tensorboard.add_scalar("loss/average", average, step)
            for name, rate in rates.items():
                self._tensorboard.add_scalar(f"lr/{name}", rate, step)
        return record

    def _row(self, record: StepRecord) -> list[str]:
        rates = dict(record.learning_rates)
        return [
            str(record.step),
            str(record.epoch),
            _format(record.loss),
            _format(record.average_loss),
            *(_format(rates.get(g, 0.0)) for g in self.group_names),
        ]

    def _append_csv(self, record: StepRecord) -> None:
        new = not self.csv_path.exists()
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(self.header)
            writer.writerow(self._row(record))

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.header)
        for record in self.records:
            writer.writerow(self._row(record))
        return buffer.getvalue()

    def restore(self, csv_text: str) -> None:
        """Take the records of a saved state and rewrite the CSV to match them."""
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        self.records = [
            StepRecord(
                int(row["step"]),
                int(row["epoch"]),
                float(row["loss"]),
                float(row["avr_loss"]),
                tuple((g, float(row.get(f"lr/{g}") or 0.0)) for g in self.group_names),
            )
            for row in rows
        ]
        atomic_write_bytes(self.csv_path, self.csv_text().encode("utf-8"))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def draw_loss_curve(records: Sequence[StepRecord], path: Path, *, title: str = "loss") -> Path:
    """A PNG of loss (grey) and its moving average (blue) over steps."""
    width, height, margin = 800, 400, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    finite = [r for r in records if math.isfinite(r.loss)]
    draw.text((margin, 10), f"{title} ({len(records)} steps)", fill="black")
    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    if finite:
        low = min(min(r.loss, r.average_loss) for r in finite)
        high = max(max(r.loss, r.average_loss) for r in finite)
        span = high - low or 1.0
        last = max(r.step for r in finite)
        first = min(r.step for r in finite)

        def point(step: int, value: float) -> tuple[float, float]:
            x = margin + (step - first) / max(last - first, 1) * (width - 2 * margin)
            y = height - margin - (value - low) / span * (height - 2 * margin)
            return x, y

        for attribute, colour in (("loss", (170, 170, 170)), ("average_loss", (30, 90, 200))):
            points = [point(r.step, getattr(r, attribute)) for r in finite]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            else:
                draw.ellipse(
                    [points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2],
                    fill=colour,
                )
        draw.text((5, margin - 5), f"{high:.4g}", fill="black")
        draw.text((5, height - margin - 5), f"{low:.4g}", fill="black")
        draw.text((margin, height - margin + 8), str(first), fill="black")
        draw.text((width - margin - 20, height - margin + 8), str(last), fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path
