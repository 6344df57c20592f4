"""The run's records: CSV rows, restore from a state, TensorBoard when installed, the curve."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from brushwork.training.logs import TrainingLog, draw_loss_curve


def test_rows_average_over_a_window_and_restore_rewrites_the_csv(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path / "a.csv", ["unet"], window=2)
    for step, loss in enumerate([1.0, 3.0, 5.0], start=1):
        log.add(step, 1, loss, {"unet": 0.1})
    assert [r.average_loss for r in log.records] == [1.0, 2.0, 4.0]
    text = (tmp_path / "a.csv").read_text()
    assert text.splitlines() == [
        "step,epoch,loss,avr_loss,lr/unet",
        "1,1,1.0,1.0,0.1",
        "2,1,3.0,2.0,0.1",
        "3,1,5.0,4.0,0.1",
    ]
    saved = log.csv_text()
    log.add(4, 2, 7.0, {"unet": 0.1})  # a step the saved state never saw
    restored = TrainingLog(tmp_path / "a.csv", ["unet"], window=2)
    restored.restore(saved)
    assert (tmp_path / "a.csv").read_text() == text
    assert restored.records == log.records[:3]


def test_tensorboard_gets_the_same_scalars_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[tuple[str, float, int]] = []

    class Writer:
        def __init__(self, log_dir: str) -> None:
            assert log_dir == str(tmp_path / "tb")

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def close(self) -> None:
            written.append(("closed", 0.0, 0))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "tensorboard" else real(n, *a)
    )
    log = TrainingLog(tmp_path / "a.csv", ["unet"])
    assert log.enable_tensorboard(tmp_path / "tb")
    log.add(1, 1, 0.5, {"unet": 1e-4})
    log.close()
    assert written == [
        ("loss/current", 0.5, 1),
        ("loss/average", 0.5, 1),
        ("lr/unet", 1e-4, 1),
        ("closed", 0.0, 0),
    ]


def test_without_tensorboard_only_the_csv_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a)
    )
    assert not TrainingLog(tmp_path / "a.csv", ["unet"]).enable_tensorboard(tmp_path / "tb")


def test_loss_curve_is_a_png(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path / "a.csv", ["unet"], window=3)
    for step in range(1, 20):
        log.add(step, 1, 1.0 / step, {"unet": 0.1})
    log.add(20, 1, float("nan"), {"unet": 0.1})  # a NaN step does not break the drawing
    path = draw_loss_curve(log.records, tmp_path / "curve.png")
    image: Any = Image.open(path)
    assert image.size == (800, 400)
    assert len(image.getcolors(maxcolors=10_000)) > 2  # lines were drawn
