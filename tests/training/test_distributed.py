"""Data parallel: 2 CPU processes (gloo, launched by torchrun as `accelerate launch --multi_gpu`
does on GPUs; accelerate's own launcher needs MPI for several CPU processes) train the same
LoRA as one process accumulating the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from brushwork.formats.safeio import read_model_file
from brushwork.training.config_file import config_toml
from brushwork.training.lora import train_lora

from .conftest import lora_config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(
    tiny_checkpoint: Path, image_folder: Path, tmp_path: Path
) -> None:
    options = {"train_batch_size": 1, "max_train_steps": 2, "max_grad_norm": 1.0}
    single = lora_config(
        tiny_checkpoint, image_folder, tmp_path / "one", gradient_accumulation_steps=2, **options
    )
    train_lora(single, tiny_checkpoint)

    parallel = lora_config(tiny_checkpoint, image_folder, tmp_path / "two", **options)
    config_file = tmp_path / "two.toml"
    config_file.write_text(config_toml(parallel), encoding="utf-8")
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "brushwork.cli.train_cmd", "lora", "--config", str(config_file),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes: 2 (batches over all: 8)" in done.stdout + done.stderr

    one = read_model_file(tmp_path / "one" / "tiny.safetensors").tensors
    two = read_model_file(tmp_path / "two" / "tiny.safetensors").tensors
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-6, rtol=1e-4)
    rows_one = (tmp_path / "one" / "tiny-loss.csv").read_text().splitlines()
    rows_two = (tmp_path / "two" / "tiny-loss.csv").read_text().splitlines()
    assert len(rows_one) == len(rows_two) == 3
    for a, b in zip(rows_one[1:], rows_two[1:], strict=True):
        assert float(a.split(",")[2]) == pytest.approx(float(b.split(",")[2]), rel=1e-5)
