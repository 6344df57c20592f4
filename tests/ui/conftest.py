"""A live server for the browser tests: a tiny SD1 library with a LoRA (preview sidecar, A1111
user metadata), an embedding, a pickled VAE, and a datasets folder; Playwright driving Debian's
Chromium (no browser download). Screenshots go to ``$BRUSHWORK_ARTIFACTS`` (else
``test-artifacts/ui`` under the pytest temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image

from brushwork.core.settings import Settings
from brushwork.formats.embedding import TEXT_ENCODER, Embedding, write_embedding
from brushwork.formats.lora import LoraModule, LoraNetwork, write_lora
from brushwork.jobs import ServiceConfig
from brushwork.server.app import ServerConfig, create_app
from brushwork.testing.factory import Components, build_components, write_checkpoint_file

CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None
)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--headless=new", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


def small_lora(components: Components) -> LoraNetwork:
    """A rank-2 LoRA on the tiny UNet's attention projections."""
    generator = torch.Generator().manual_seed(0)
    modules = {}
    for name, module in components.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_v")):
            target = f"unet.{name}"
            down = torch.randn(2, module.in_features, generator=generator) * 0.1
            up = torch.randn(module.out_features, 2, generator=generator) * 0.1
            modules[target] = LoraModule.lora(target, down, up, 2.0)
    return LoraNetwork(modules)


def write_dataset(folder: Path, count: int = 2) -> None:
    images = folder / "2_sks cube"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            images / f"{index}.png"
        )
        (images / f"{index}.txt").write_text(f"sks cube, tag{index}", encoding="utf-8")


@pytest.fixture(scope="session")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a1111-ui")
    models = root / "models"
    components = build_components("sd1", seed=0)
    (models / "Stable-diffusion").mkdir(parents=True)
    write_checkpoint_file(components, models / "Stable-diffusion" / "tiny.safetensors")
    lora_folder = models / "Lora"
    lora_folder.mkdir()
    write_lora(lora_folder / "cubes.safetensors", small_lora(components), family="sd1",
               unet_config=dict(components.unet.config))  # fmt: skip
    Image.new("RGB", (64, 64), (40, 160, 220)).save(lora_folder / "cubes.preview.png")
    user = {"activation text": "sks cube", "preferred weight": 0.8, "sd version": "SD1"}
    (lora_folder / "cubes.json").write_text(json.dumps(user), encoding="utf-8")
    (root / "embeddings").mkdir()
    vectors = torch.randn(1, 64, generator=torch.Generator().manual_seed(2))
    write_embedding(root / "embeddings" / "shiny.pt", Embedding("shiny", {TEXT_ENCODER: vectors}))
    (models / "hypernetworks").mkdir()
    (models / "VAE").mkdir()
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ui_server(ui_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("ui-data")
    write_dataset(data / "datasets" / "cubes")
    settings = Settings(roots=(ui_root,), data_dir=data, device="cpu", precision="fp32")
    service = ServiceConfig(settings, roots=(ui_root,), devices=("cpu",),
                            outputs=data / "outputs", training_outputs=data / "trained")  # fmt: skip
    app = create_app(ServerConfig(service=service))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no system Chromium (apt-get install chromium); not downloading one")
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, ui_server: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(ui_server + "/")
    opened.wait_for_function("document.body.dataset.ready === 'true'", timeout=30_000)
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("BRUSHWORK_ARTIFACTS") or tmp_path_factory.getbasetemp()
                  / "test-artifacts" / "ui")  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    return folder
