"""Training as a job: queued like generation, progress with loss and ETA, recorded, stoppable,
and never reading or writing outside its folders."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from brushwork.core.errors import ConfigError
from brushwork.jobs import JobService
from brushwork.jobs.training import TrainingOutcome, TrainingRun, place_path

RUN = {
    "train_data_dir": "cubes",
    "output_name": "cube",
    "resolution": 64,
    "train_batch_size": 2,
    "max_train_epochs": 2,
    "save_every_n_epochs": 1,
    "network_dim": 2,
    "network_alpha": 1,
    "learning_rate": 1e-3,
    "seed": 3,
}


def test_a_lora_run_is_a_recorded_job_with_loss_progress_and_files(service: JobService) -> None:
    plan = service.plan_training(RUN)
    assert plan["total_steps"] == 4 and plan["epochs"] == 2  # 2 images x 2 repeats / batch 2
    assert "total optimization steps: 4" in plan["plan"]

    job = service.submit_training(RUN)
    assert job.kind == "train-lora" and service.store.get(job.id) is not None
    outcome: TrainingOutcome = job.future.result(timeout=300)
    assert not outcome.interrupted and outcome.steps == 4
    out = Path(job.summary["output_dir"])
    assert out == service.training_places().outputs / "cube"
    assert [p.name for p in outcome.saved] == ["cube-000001.safetensors", "cube.safetensors"]
    assert all(p.is_file() for p in outcome.saved)

    run: TrainingRun = job.detail
    assert [row["step"] for row in run.losses] == [1, 2, 3, 4]
    assert run.losses_since(2) == run.losses[2:]
    progress = job.snapshot()["progress"]
    assert progress["step"] == progress["total"] == 4 and progress["epoch"] == 2
    assert progress["loss"] == run.losses[-1]["loss"]
    record = service.store.get(job.id)
    assert record is not None and record.state == "done"
    assert record.outputs == tuple(str(p) for p in outcome.saved)


def test_interrupting_a_run_stops_it_and_keeps_the_files_saved_so_far(
    service: JobService,
) -> None:
    job = service.submit_training({**RUN, "max_train_epochs": 50, "output_name": "long"})
    deadline = time.monotonic() + 120
    while job.progress.step < 3:  # past the first epoch (2 steps), whose file is saved
        assert time.monotonic() < deadline and job.state in ("queued", "running")
        time.sleep(0.05)
    service.cancel(job.id)
    outcome: TrainingOutcome = job.future.result(timeout=120)
    assert outcome.interrupted and outcome.steps < 100
    assert "long-000001.safetensors" in [p.name for p in outcome.saved]
    assert service.store.get(job.id).state == "interrupted"  # type: ignore[union-attr]


def test_generation_waits_behind_training_on_a_single_device(service: JobService) -> None:
    from brushwork.generation import GenerationRequest

    training = service.submit_training({**RUN, "output_name": "first"})
    drawing = service.submit_generation(
        GenerationRequest(prompt="x", width=32, height=32, steps=2, seed=1)
    )
    drawing.future.result(timeout=300)
    assert training.future.done()  # FIFO on one worker: the run finished first
    assert training.state == "done"


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"train_data_dir": "../../etc"}, "train_data_dir"),
        ({"train_data_dir": "/etc"}, "train_data_dir"),
        ({"train_data_dir": "~root"}, "train_data_dir"),
        ({"train_data_dir": "C:\\Windows"}, "train_data_dir"),
        ({"output_dir": "../elsewhere"}, "output_dir"),
        ({"output_dir": "/tmp/anywhere"}, "output_dir"),
        ({"resume": "../../state"}, "resume"),
        ({"dataset_config": "/etc/passwd"}, "dataset_config"),
        ({"sample_prompts": "../prompts.txt"}, "sample_prompts"),
        ({"logging_dir": "/var/log"}, "logging_dir"),
        ({"output_name": "../x"}, "output_name"),
        ({"pretrained_model_name_or_path": "/models/other.safetensors"}, "pretrained_model"),
        ({"vae": "../../vae.pt"}, "vae"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"train_data_dir": "missing"}, "train_data_dir"),
        ({"sample_prompts_text": 5}, "sample_prompts_text"),
    ],
)
def test_bad_options_and_places_outside_the_folders_are_refused_naming_the_option(
    service: JobService, change: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        service.submit_training({**RUN, **change})
    assert option in str(caught.value)
    assert service.queue.waiting() == []


def test_place_path_keeps_paths_inside_their_folder(tmp_path: Path) -> None:
    assert place_path("x", "a/b", tmp_path) == tmp_path / "a" / "b"
    assert place_path("x", str(tmp_path / "a"), tmp_path) == tmp_path / "a"
    for bad in ("..", "a/../../b", "a\\..\\..\\b", "\x00", "", "~/x"):
        with pytest.raises(ConfigError):
            place_path("x", bad, tmp_path)


def test_sample_prompts_text_is_written_beside_the_run_and_sampled_each_epoch(
    service: JobService,
) -> None:
    run_options = {
        **RUN,
        "output_name": "sampled",
        "sample_every_n_epochs": 1,
        "sample_prompts_text": "sks cube --w 64 --h 64 --s 2 --d 5\n",
    }
    job = service.submit_training(run_options)
    job.future.result(timeout=300)
    run: TrainingRun = job.detail
    assert (run.output_dir / "sample-prompts.txt").read_text().startswith("sks cube")
    assert [item["label"] for item in run.samples()] == ["e000001", "e000002"]


def test_runs_write_into_the_first_roots_lora_folder_unless_told_otherwise(
    tiny_root: Path, tmp_path: Path
) -> None:
    from brushwork.core.settings import Settings
    from brushwork.jobs import ServiceConfig

    settings = Settings(roots=(tiny_root,), data_dir=tmp_path, device="cpu", precision="fp32")
    service = JobService(ServiceConfig(settings, roots=(tiny_root,)))
    service.start()
    try:
        places = service.training_places()
        assert places.outputs == tiny_root / "models" / "Lora"  # usable at once in prompts
        assert places.datasets == tmp_path / "datasets"
    finally:
        service.close()
