"""`brushwork serve`: the flags become the server's configuration (uvicorn itself not started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from brushwork.cli import serve_cmd
from brushwork.core.settings import Settings


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    return calls


def _serve(args: list[str], tmp_path: Path) -> Any:
    app = typer.Typer()
    app.command()(serve_cmd.serve)
    settings = Settings(data_dir=tmp_path / "data", device="cpu")
    return CliRunner().invoke(app, args, obj=settings)


def test_devices_datasets_and_training_folder_reach_the_server(
    started: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = _serve(
        ["--root", str(tmp_path), "--devices", "cpu,cpu", "--port", "7861",
         "--datasets", str(tmp_path / "sets"), "--training-out", str(tmp_path / "runs"),
         "--api-auth", "a:b"],
        tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (call,) = started
    assert call["host"] == "127.0.0.1" and call["port"] == 7861
    flags = call["app"].state.flags
    assert flags["devices"] == ["cpu", "cpu"] and flags["api_auth"] is True
    assert flags["datasets"] == str(tmp_path / "sets")
    assert flags["training_out"] == str(tmp_path / "runs")
    assert "b" not in str(flags.values())  # never the password


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "gpu0"], "--devices"),
        (["--devices", "cuda:0,../x"], "--devices"),
        (["--api-auth", "nopassword"], "--api-auth"),
        (["--port", "70000"], "--port"),
        (["--queue-size", "0"], "--queue-size"),
    ],
)
def test_bad_flags_stop_before_serving(
    started: list[dict[str, Any]], tmp_path: Path, args: list[str], message: str
) -> None:
    result = _serve(args, tmp_path)
    assert result.exit_code == 1 and message in result.output
    assert started == []
