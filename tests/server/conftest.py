"""A live server on 127.0.0.1 (ephemeral port, uvicorn in a thread) over a tiny SD1 library."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from brushwork.core.settings import Settings
from brushwork.jobs import ServiceConfig
from brushwork.server.app import ServerConfig, create_app
from brushwork.testing.factory import build_components, write_checkpoint_file


@dataclass(frozen=True)
class LiveServer:
    host: str
    port: int
    root: Path
    data: Path
    outputs: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a1111")
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_checkpoint_file(build_components("sd1", seed=0), folder / "tiny.safetensors")
    for name in ("VAE", "Lora", "embeddings", "hypernetworks"):
        (root / "models" / name).mkdir(parents=True, exist_ok=True)
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(
    root: Path,
    data: Path,
    *,
    credentials: tuple[tuple[str, str], ...] = (),
    devices: tuple[str, ...] = ("cpu",),
    queue_size: int = 64,
    owner: str = "test",
) -> Iterator[LiveServer]:
    """Run the app with uvicorn in a thread until the block ends."""
    outputs = data / "outputs"
    settings = Settings(roots=(root,), data_dir=data, device="cpu", precision="fp32")
    service = ServiceConfig(
        settings,
        roots=(root,),
        devices=devices,
        queue_size=queue_size,
        outputs=outputs,
        owner=owner,
        training_outputs=data / "trained",
    )
    app = create_app(ServerConfig(service=service, credentials=credentials))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer("127.0.0.1", port, root, data, outputs)
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def live(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serve(tiny_root, tmp_path_factory.mktemp("data")) as server:
        yield server


@pytest.fixture
def serve_factory():  # type: ignore[no-untyped-def]
    return serve
