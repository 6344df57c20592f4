"""The projects page in a browser: filter the dataset by a tag, add a trigger word to a
selection and undo it, make a version, train it, draw its preview grid."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from PIL import Image

from brushwork.core.settings import Settings
from brushwork.datasets.prepare import PrepareOptions
from brushwork.jobs import ServiceConfig
from brushwork.projects.project import NewProject, create_project
from brushwork.server.app import ServerConfig, create_app
from brushwork.testing.factory import build_components, write_checkpoint_file

OPTIONS = """pretrained_model_name_or_path = "tiny"
resolution = 64
train_batch_size = 2
network_dim = 2
max_train_epochs = 2
learning_rate = 1e-3
seed = 1"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def projects_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("projects-root")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    write_checkpoint_file(
        build_components("sd1"), root / "models" / "Stable-diffusion" / "tiny.safetensors"
    )
    data = tmp_path_factory.mktemp("projects-data")
    source = data / "pictures"
    source.mkdir()
    rng = np.random.default_rng(3)
    for index, caption in enumerate(
        ["cat, sitting", "cat, running", "dog, sitting", "cat, sitting, grass"]
    ):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            source / f"{index}.png"
        )
        (source / f"{index}.txt").write_text(caption)
    create_project(
        root / "projects", NewProject("pets", source, PrepareOptions(size=(64, 64)), repeats=1)
    )
    settings = Settings(roots=(root,), data_dir=data, device="cpu", precision="fp32")
    service = ServiceConfig(settings, roots=(root,), devices=("cpu",), outputs=data / "outputs")
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


def test_dataset_edits_and_a_version_trained_and_previewed(
    browser: Any, projects_server: str, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(projects_server + "/ui/projects.html")
    page.wait_for_selector("#pictures .picture >> nth=3")
    assert page.locator("#frequency tr").first.inner_text().startswith("cat\t3")

    page.locator("#frequency td", has_text="sitting").first.click()  # filter by a tag
    page.wait_for_function("document.querySelectorAll('#pictures .picture').length === 3")
    page.click("#select-shown")
    page.fill("#edit-tags", "sks")
    page.check("#edit-front")
    page.click("#edit-apply")
    page.wait_for_function(
        "document.querySelector('#edit-result').textContent.includes('3 captions changed')"
    )
    firsts = page.locator("#pictures .picture .chip:first-child").all_inner_texts()
    assert firsts == ["sks", "sks", "sks"]
    page.click("#edit-undo")
    page.wait_for_function("document.querySelector('#edit-result').textContent.startsWith('undid')")
    assert "sks" not in page.locator("#frequency").inner_text()

    page.click("text=New version")
    page.fill("#new-options", OPTIONS)
    page.click("#new-make")
    page.wait_for_selector("#versions tr >> text=created")
    page.click("#versions button:has-text('Train')")
    page.wait_for_selector("#versions tr >> text=done", timeout=120_000)
    page.wait_for_selector("#loss-curve:not([hidden])")
    page.fill("#preview-prompt", "sks cat")
    page.fill("#preview-weights", "0.5,1")
    page.fill("#preview-steps", "2")
    page.click("#preview-draw")
    page.wait_for_selector("#version-grids figure img", timeout=120_000)
    page.select_option("#compare-a", index=1)
    page.wait_for_selector("#compare figure img")
    page.screenshot(path=str(shots / "projects.png"), full_page=True)
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"
