"""`/brushwork/v1/projects` and `/brushwork/v1/datasets/{name}`: pictures with tags, a filtered
bulk edit and its undo, a version made, trained and previewed as jobs (TestClient)."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brushwork.core.settings import Settings
from brushwork.datasets.prepare import PrepareOptions
from brushwork.generation.xyz_output import read_xyz_record
from brushwork.jobs import ServiceConfig
from brushwork.projects.project import NewProject, create_project
from brushwork.server.app import ServerConfig, create_app

API = "/brushwork/v1"


def _pictures(folder: Path, captions: list[str]) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for index, caption in enumerate(captions):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def client(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("root")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    for name in ("tiny.safetensors", "tiny.yaml"):
        source = tiny_root / "models" / "Stable-diffusion" / name
        if source.exists():
            shutil.copy(source, root / "models" / "Stable-diffusion" / name)
    data = tmp_path_factory.mktemp("data")
    captions = ["cat, sitting", "cat, running", "dog, sitting", "cat, sitting, grass"]
    source = _pictures(data / "source", captions)
    create_project(
        root / "projects", NewProject("cat", source, PrepareOptions(size=(64, 64)), repeats=1)
    )
    _pictures(data / "datasets" / "pets" / "2_pets", ["cat", "dog"])
    settings = Settings(roots=(root,), data_dir=data, device="cpu", precision="fp32")
    service = ServiceConfig(settings, roots=(root,), devices=("cpu",), datasets=data / "datasets")
    with TestClient(create_app(ServerConfig(service=service, ui=False))) as test_client:
        yield test_client


def _wait(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.get(f"{API}/jobs/{job['id']}").json()
        if state["state"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job['id']} did not finish")


def test_pictures_with_tags_a_filter_and_thumbnails(client: TestClient) -> None:
    listed = client.get(f"{API}/projects").json()
    assert [p["name"] for p in listed["projects"]] == ["cat"]
    pictures = client.get(f"{API}/projects/cat/dataset/images").json()
    assert pictures["total"] == 4 and pictures["images"][0]["tags"] == ["cat", "sitting"]
    sitting_cats = client.get(
        f"{API}/projects/cat/dataset/images", params={"tag": ["cat", "sitting"], "without": "grass"}
    ).json()
    assert [p["path"] for p in sitting_cats["images"]] == ["1_cat/0.png"]
    thumb = client.get(pictures["images"][0]["thumbnail"], params={"size": 32})
    assert thumb.status_code == 200
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 32)
    assert client.get(f"{API}/projects/cat/dataset/thumbnail/../project.json").status_code == 404
    assert client.get(f"{API}/projects/cat/dataset/thumbnail/1_cat/9.png").status_code == 404
    table = client.get(f"{API}/projects/cat/dataset/tags").json()
    assert table["tags"][0] == {"tag": "cat", "images": 3, "share": 0.75}
    assert client.get(f"{API}/projects/nobody").status_code == 404


def test_a_bulk_edit_of_a_selection_and_its_undo(client: TestClient) -> None:
    images = client.get(f"{API}/projects/cat/dataset/images", params={"tag": "cat"}).json()[
        "images"
    ]
    chosen = [item["path"] for item in images[:2]]
    before = client.get(f"{API}/projects/cat/dataset/images").json()["images"]
    edit = {"action": "add", "tags": ["sks"], "front": True, "images": chosen}
    result = client.post(f"{API}/projects/cat/dataset/tags", json=edit).json()
    assert result["written"] and [c["image"] for c in result["changes"]] == chosen
    after = {
        p["path"]: p["tags"]
        for p in client.get(f"{API}/projects/cat/dataset/images").json()["images"]
    }
    assert [after[name][0] for name in chosen] == ["sks", "sks"]
    assert sum("sks" in tags for tags in after.values()) == 2
    undone = client.post(f"{API}/projects/cat/dataset/tags/undo").json()
    assert undone["undone"] == "add sks --front" and len(undone["restored"]) == 2
    assert client.get(f"{API}/projects/cat/dataset/images").json()["images"] == before
    bad = client.post(f"{API}/projects/cat/dataset/tags", json={"action": "replace", "tags": ["a"]})
    assert bad.status_code == 422 and "exactly two" in bad.json()["detail"]
    outside = client.post(
        f"{API}/projects/cat/dataset/tags", json={"action": "dedupe", "images": ["../x.png"]}
    )
    assert outside.status_code == 422


def test_a_server_dataset_folder_has_the_same_pages(client: TestClient) -> None:
    pictures = client.get(f"{API}/datasets/pets/images").json()
    assert [p["path"] for p in pictures["images"]] == ["2_pets/0.png", "2_pets/1.png"]
    assert client.get(pictures["images"][1]["thumbnail"]).status_code == 200
    assert client.get(f"{API}/datasets/pets/tags").json()["images"] == 2
    assert client.get(f"{API}/datasets/..%2Fsource/images").status_code == 404


def test_a_version_is_made_trained_and_previewed_as_jobs(client: TestClient) -> None:
    options = {
        "pretrained_model_name_or_path": "tiny", "resolution": 64, "train_batch_size": 2,
        "network_dim": 2, "max_train_epochs": 2, "learning_rate": 1e-3, "seed": 1,
    }  # fmt: skip
    refused = client.post(
        f"{API}/projects/cat/versions", json={"options": {**options, "resume": "/etc"}}
    )
    assert refused.status_code == 422 and "resume" in refused.json()["detail"]
    made = client.post(f"{API}/projects/cat/versions", json={"options": options})
    assert made.status_code == 200, made.text
    assert made.json()["name"] == "v1" and made.json()["status"] == "created"
    job = client.post(f"{API}/projects/cat/versions/v1/train", json={}).json()
    finished = _wait(client, job)
    assert finished["state"] == "done", finished
    version = client.get(f"{API}/projects/cat/versions/v1").json()
    assert version["status"] == "done" and len(version["losses"]) == 4
    assert client.get(version["loss_curve_url"]).headers["content-type"] == "image/png"
    again = client.post(f"{API}/projects/cat/versions/v1/train", json={})
    assert again.status_code == 422 and "already trained" in again.json()["detail"]

    body = {
        "prompt": "sks cat",
        "weights": "0.5,1",
        "seeds": [3],
        "steps": 2,
        "sampler_name": "Euler",
    }
    drawn = _wait(client, client.post(f"{API}/projects/cat/versions/v1/preview", json=body).json())
    assert drawn["state"] == "done", drawn
    previews = client.get(f"{API}/projects/cat/versions/v1").json()["preview_urls"]
    grid = client.get(previews[-1]["url"])
    record = read_xyz_record(grid.content)
    assert record is not None and len([c for c in record["cells"] if c.get("box")]) == 4
    assert client.get(f"{API}/projects/cat/versions/v1/files/config.toml").status_code == 404
    assert client.get(f"{API}/projects/cat/versions/v9").status_code == 404
