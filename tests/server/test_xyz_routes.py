"""X/Y/Z plots and a training run's epoch x strength grid as jobs over HTTP."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from brushwork.generation.xyz_output import read_xyz_record

SMALL = {"prompt": "a red cube", "width": 32, "height": 32, "sampler_name": "Euler", "seed": 5}


def test_an_xyz_plot_is_drawn_saved_recorded_and_listed(live: Any) -> None:
    body = {**SMALL, "steps": 2, "x_type": "Steps", "x_values": "1,2",
            "y_type": "cfg", "y_values": "5-7 (+2)"}  # fmt: skip
    reply = requests.post(f"{live.url}/brushwork/v1/xyz", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    info = json.loads(data["info"])
    assert info["cells"] == info["drawn"] == 4 and not info["interrupted"]
    (saved,) = info["saved"]
    assert Path(saved).name == "xyz_grid-0000.png" and "txt2img-grids" in saved
    png = base64.b64decode(data["images"][0])
    assert png == Path(saved).read_bytes()
    record = read_xyz_record(png)
    assert record is not None
    assert [axis["labels"] for axis in record["axes"]] == [
        ["Steps: 1", "Steps: 2"], ["CFG Scale: 5.0", "CFG Scale: 7.0"]
    ]  # fmt: skip
    assert all("Seed: 5" in cell["infotext"] for cell in record["cells"])
    parameters = Image.open(io.BytesIO(png)).info["parameters"]
    assert "Script: X/Y/Z plot" in parameters and "X Type: Steps" in parameters
    gallery = requests.get(f"{live.url}/brushwork/v1/gallery?limit=1", timeout=10).json()
    assert gallery[0]["name"] == "xyz_grid-0000.png"
    axes = requests.get(f"{live.url}/brushwork/v1/xyz/axes", timeout=10).json()
    assert {"key": "steps", "label": "Steps"}.items() <= axes[3].items()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"x_type": "warp", "x_values": "1"}, "x_type"),
        ({"x_type": "steps", "x_values": "1-1000000"}, "x_values"),
        ({"y_type": "checkpoint", "y_values": "../../etc/passwd"}, "y_values"),
        ({"x_type": "checkpoint", "x_values": "/models/other.safetensors"}, "x_values"),
        ({"x_type": "vae", "x_values": "auto, ~/vae.pt"}, "x_values"),
        ({"z_type": "lora", "z_values": "none, ..\\..\\x.safetensors:0.5"}, "z_values"),
        ({"x_type": "lora", "x_values": "pyproject.toml"}, "x_values"),
        ({"margin": -1}, "margin"),
    ],
)
def test_bad_axes_and_paths_are_refused_naming_the_field(
    live: Any, body: dict[str, Any], field: str
) -> None:
    reply = requests.post(f"{live.url}/brushwork/v1/xyz", json={**SMALL, **body}, timeout=30)
    assert reply.status_code in (404, 422), reply.text
    assert field in reply.text


def test_a_training_runs_epochs_by_strengths(live: Any) -> None:
    folder = live.data / "datasets" / "grid" / "1_sks cube"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            folder / f"{index}.png"
        )
    body = {"train_data_dir": "grid", "output_name": "grid-cube", "resolution": 64,
            "train_batch_size": 2, "max_train_epochs": 2, "save_every_n_epochs": 1,
            "network_dim": 2, "network_alpha": 1, "learning_rate": 0.05, "seed": 1}  # fmt: skip
    job = requests.post(f"{live.url}/brushwork/v1/train/lora", json=body, timeout=30).json()
    deadline = time.monotonic() + 120
    while requests.get(f"{live.url}/brushwork/v1/jobs/{job['id']}").json()["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    grid = {**SMALL, "steps": 2, "strengths": "0.5,1"}
    reply = requests.post(f"{live.url}/brushwork/v1/train/{job['id']}/grid", json=grid)
    assert reply.status_code == 200, reply.text
    record = read_xyz_record(base64.b64decode(reply.json()["images"][0]))
    assert record is not None
    columns, rows = record["axes"]
    assert columns["labels"] == ["LoRA strength: 0.5", "LoRA strength: 1.0"]
    assert rows["labels"] == ["LoRA: grid-cube-000001", "LoRA: grid-cube"]
    infotexts = [cell["infotext"] for cell in record["cells"]]
    assert len(infotexts) == 4 and all("Seed: 5" in text for text in infotexts)
    assert all("grid-cube" in text for text in infotexts)  # the LoRA is recorded in each cell
    missing = requests.post(f"{live.url}/brushwork/v1/train/nope/grid", json=grid, timeout=10)
    assert missing.status_code == 422 and "job" in missing.text
