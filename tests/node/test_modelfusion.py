"""modelfusion (npm), unmodified, draws through `brushwork serve`: its AUTOMATIC1111 image
generator, from a TypeScript script run by node with tsx (no build step).

Needs node and the pinned packages: ``npm ci --prefix tests/node`` (``.ci/run`` does it when
npm is there). Without them the test is skipped, saying which is missing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import uvicorn
from PIL import Image

from brushwork.core.settings import Settings
from brushwork.jobs import ServiceConfig
from brushwork.server.app import ServerConfig, create_app
from brushwork.testing.factory import build_components, write_checkpoint_file

HERE = Path(__file__).parent
SCRIPT = HERE / "modelfusion-a1111.ts"
TSX = HERE / "node_modules" / ".bin" / "tsx"
NODE = shutil.which("node")
CREDENTIALS = ("painter", "s3cret:pass")

pytestmark = [
    pytest.mark.skipif(
        NODE is None, reason="node is not installed; the modelfusion check needs it"
    ),
    pytest.mark.skipif(
        not (HERE / "node_modules" / "modelfusion").is_dir() or not TSX.exists(),
        reason="modelfusion is not installed: run `npm ci --prefix tests/node` (pinned versions)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("a1111")
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_checkpoint_file(build_components("sd1", seed=0), folder / "tiny.safetensors")
    data = tmp_path_factory.mktemp("data")
    settings = Settings(roots=(root,), data_dir=data, device="cpu", precision="fp32")
    service = ServiceConfig(settings, roots=(root,), devices=("cpu",), outputs=data / "out")
    app = create_app(ServerConfig(service=service, credentials=(CREDENTIALS,)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(20)


def _run(url: str, out: Path, auth: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BRUSHWORK_AUTH"}
    if auth is not None:
        env["BRUSHWORK_AUTH"] = auth
    return subprocess.run(
        [str(NODE), str(TSX), str(SCRIPT), url, str(out)],
        cwd=HERE, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_modelfusion_draws_the_image_the_api_draws_for_the_same_settings(
    server: str, tmp_path: Path
) -> None:
    out = tmp_path / "modelfusion.png"
    done = _run(server, out, ":".join(CREDENTIALS))
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["images"] == 1
    info = reply["info"]
    assert info["all_seeds"] == [1234] and info["sd_model_name"] == "tiny"
    assert "Steps: 2, Sampler: Euler" in info["infotexts"][0]
    assert info["prompt"] == "a red cube"

    same = {"prompt": "a red cube", "seed": 1234, "width": 64, "height": 64, "steps": 2,
            "cfg_scale": 7, "sampler_name": "Euler"}  # fmt: skip
    direct = requests.post(f"{server}/sdapi/v1/txt2img", json=same, auth=CREDENTIALS, timeout=60)
    expected = Image.open(io.BytesIO(base64.b64decode(direct.json()["images"][0])))
    drawn = Image.open(out)
    assert drawn.info["parameters"] == info["infotexts"][0]
    assert np.array_equal(np.asarray(drawn.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_modelfusion_without_credentials_is_refused(server: str, tmp_path: Path) -> None:
    done = _run(server, tmp_path / "refused.png", None)
    assert done.returncode != 0
    assert "401" in done.stderr or "Not authenticated" in done.stderr
    assert not (tmp_path / "refused.png").exists()
