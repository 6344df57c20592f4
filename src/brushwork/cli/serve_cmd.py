"""`brushwork serve`: the A1111-compatible HTTP API, the job queue and the web UI.

Binds to 127.0.0.1 unless told otherwise. With `--api-auth`, every route (API, UI, static
files, docs) needs HTTP basic auth. `--devices cuda:0,cuda:1` runs one worker per device, all
fed from one queue. Several `serve` processes on several machines share only the library
folder and the data folder's SQLite files (WAL mode): put any HTTP load balancer in front
(docs/server.md). Training runs read datasets only under `--datasets` and write only under
`--training-out`.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Annotated

import typer

from brushwork.cli.errors import exit_on_error
from brushwork.core.errors import ConfigError
from brushwork.core.settings import Settings

logger = logging.getLogger(__name__)
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?|xpu(:\d+)?")


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def parse_devices(text: str | None) -> tuple[str, ...]:
    """``--devices cuda:0,cuda:1`` -> one device per worker (empty: the setting's device)."""
    found = tuple(d.strip() for d in text.split(",") if d.strip()) if text else ()
    for device in found:
        if not DEVICE.fullmatch(device):
            raise ConfigError(
                f"--devices: {device!r} is not a device",
                hint="e.g. --devices cuda:0,cuda:1 (one worker each), or cpu,cpu",
            )
    return found


def serve(
    ctx: typer.Context,
    root: Annotated[
        list[Path] | None,
        typer.Option("--root", help="Library root (A1111 / ComfyUI install or models folder)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0: every interface).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    api_auth: Annotated[
        str | None,
        typer.Option("--api-auth", help="HTTP basic auth for every route: USER:PASS[,USER:PASS]."),
    ] = None,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the API only.")] = False,
    devices: Annotated[
        str | None,
        typer.Option(help="One worker per device, e.g. cuda:0,cuda:1. Default: the setting."),
    ] = None,
    queue_size: Annotated[
        int, typer.Option(help="Jobs that may wait; beyond it requests get 503.")
    ] = 64,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (A1111 layout). [<data dir>/outputs]")
    ] = None,
    datasets: Annotated[
        Path | None,
        typer.Option(help="Folder of training datasets runs may use. [<data dir>/datasets]"),
    ] = None,
    training_out: Annotated[
        Path | None,
        typer.Option(help="Where training runs write. [the first root's LoRA folder]"),
    ] = None,
) -> None:
    """Serve the A1111-compatible API (/sdapi/v1), brushwork's own (/brushwork/v1) and the UI."""
    import uvicorn

    from brushwork.jobs import ServiceConfig
    from brushwork.server.app import ServerConfig, create_app
    from brushwork.server.auth import parse_credentials

    with exit_on_error():
        if not 0 < port < 65536:
            raise ConfigError(f"--port must be from 1 to 65535, got {port}")
        if queue_size < 1:
            raise ConfigError(f"--queue-size must be at least 1, got {queue_size}")
        credentials = parse_credentials(api_auth) if api_auth else ()
        device_list = parse_devices(devices)
        settings = _settings(ctx)
        roots = tuple(root or ())
        service = ServiceConfig(
            settings,
            roots=roots,
            devices=device_list,
            queue_size=queue_size,
            outputs=out,
            owner=f"{socket.gethostname()}:{port}",
            datasets=datasets,
            training_outputs=training_out,
        )
        flags = {
            "root": [str(r) for r in roots], "host": host, "port": port,
            "api_auth": bool(credentials), "no_ui": no_ui, "devices": list(device_list),
            "queue_size": queue_size, "out": str(service.outputs_dir),
            "datasets": str(service.datasets_dir),
            "training_out": str(training_out) if training_out else None,
        }  # fmt: skip
        app = create_app(ServerConfig(service, credentials, ui=not no_ui, flags=flags))
        if host not in ("127.0.0.1", "localhost", "::1") and not credentials:
            typer.echo(f"warning: serving on {host} without --api-auth: anyone who can reach "
                       "this port can use it", err=True)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="info")
