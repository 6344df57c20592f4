"""DreamBooth on a tiny SD1 model: A1111 checkpoints that diffusers and brushwork load, the text
encoder trained for the first N steps only, prior preservation, class images, resume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.formats.safeio import read_header, read_model_file
from brushwork.loading import load_model
from brushwork.testing.factory import build_components, diffusers_config_folder
from brushwork.training.config_file import resolve_config_as
from brushwork.training.data import TrainingDataset
from brushwork.training.dreambooth import DreamBoothRunResult, train_dreambooth
from brushwork.training.dreambooth_config import DreamBoothTrainingConfig
from brushwork.training.lora_setup import dataset_spec

from .test_resume import InterruptedRunError, _stop_after


def instance_folder(root: Path, count: int = 2) -> Path:
    """`root/2_sks cat/` with `count` 32x32 pictures (no captions: the folder name is used)."""
    folder = root / "2_sks cat"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def class_folder(root: Path, colour: tuple[int, int, int], count: int = 2) -> Path:
    """`root/1_cat/` with `count` plain pictures of one colour, captioned 'cat'."""
    folder = root / "1_cat"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (32, 32), colour).save(folder / f"c{i}.png")
        (folder / f"c{i}.txt").write_text("cat", encoding="utf-8")
    return root


class FakeClassImages:
    """A `make_class_images` that records its calls: flat pictures coloured by the seed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, tuple[int, int], int]] = []

    def __call__(
        self, prompt: str, count: int, size: tuple[int, int], seed: int
    ) -> list[Image.Image]:
        self.calls.append((prompt, count, size, seed))
        return [Image.new("RGB", size, ((seed + i) * 37 % 256, 90, 40)) for i in range(count)]


def db_config(base: Path, data: Path, output: Path, **options: Any) -> DreamBoothTrainingConfig:
    values: dict[str, Any] = {
        "pretrained_model_name_or_path": str(base),
        "train_data_dir": str(data),
        "output_dir": str(output),
        "output_name": "db",
        "resolution": 64,
        "train_batch_size": 2,
        "max_train_steps": 3,
        "learning_rate": 1e-3,
        "seed": 11,
    }
    config, _ = resolve_config_as(DreamBoothTrainingConfig, values | options)
    return config


def state_of(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in read_model_file(path).tensors.items() if k.startswith(prefix)}


UNET, TEXT = "model.diffusion_model.", "cond_stage_model."


@dataclass(frozen=True)
class Run:
    outcome: DreamBoothRunResult
    output: Path
    reg: Path
    maker: FakeClassImages
    progress: list[tuple[str, int, int]]


@pytest.fixture(scope="module")
def run(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("dreambooth")
    data = instance_folder(root / "img")
    maker, progress = FakeClassImages(), []
    config = db_config(
        tiny_checkpoint,
        data,
        root / "out",
        reg_data_dir=str(root / "reg"),
        num_class_images=3,
        sample_batch_size=2,
        stop_text_encoder_training=1,
        save_every_n_steps=2,
        save_precision="fp16",
        gradient_checkpointing=True,
    )
    outcome = train_dreambooth(
        config,
        tiny_checkpoint,
        make_class_images=maker,
        class_image_progress=lambda *event: progress.append(event),
    )
    return Run(outcome, root / "out", root / "reg", maker, progress)


def test_missing_class_images_are_generated_first_in_batches(run: Run) -> None:
    folder = run.reg / "1_cat"  # the class word of '2_sks cat'
    assert [p.name for p in run.outcome.class_images] == [
        "class-00000.png",
        "class-00001.png",
        "class-00002.png",
    ]
    assert all(p.parent == folder for p in run.outcome.class_images)
    assert run.maker.calls == [("cat", 2, (64, 64), 11), ("cat", 1, (64, 64), 13)]
    assert run.progress == [("cat", 0, 3), ("cat", 2, 3), ("cat", 3, 3)]
    assert (folder / "class-00001.txt").read_text(encoding="utf-8") == "cat"
    assert "num reg images: 3" in run.outcome.plan_text  # and they were trained on


def test_saves_are_a1111_checkpoints_that_diffusers_and_brushwork_load(
    run: Run, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    assert [p.name for p in run.outcome.result.saved_files] == [
        "db-step00000002.safetensors",
        "db.safetensors",
    ]
    final = run.output / "db.safetensors"
    header = read_header(final)
    assert {info.dtype for info in header.tensors.values()} == {"F16"}  # save_precision
    meta = header.metadata
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert meta["ss_training_method"] == "dreambooth" and meta["ss_steps"] == "3"
    assert meta["ss_num_reg_images"] == "3" and meta["ss_sd_model_name"] == "tiny.safetensors"
    assert meta["ss_optimizer"].startswith("torch.optim.adamw.AdamW")

    ours = load_model(final, device="cpu", precision="fp32")
    config_folder = diffusers_config_folder(build_components("sd1"), tmp_path / "configs")
    pipe = StableDiffusionPipeline.from_single_file(
        str(final), config=str(config_folder), safety_checker=None
    )
    theirs = pipe.unet.state_dict()
    assert all(torch.equal(theirs[k].float(), v.float()) for k, v in ours.unet.state_dict().items())
    encoder = pipe.text_encoder.state_dict()
    for key, value in ours.text_encoders["text_encoder"].state_dict().items():
        assert torch.equal(encoder[key].float(), value.float()), key


def test_trained_checkpoint_generates_with_brushwork(run: Run) -> None:
    from brushwork.generation import GenerationRequest, Generator

    model = load_model(run.output / "db.safetensors", device="cpu", precision="fp32")
    result = Generator(model).generate(
        GenerationRequest(prompt="sks cat", width=64, height=64, steps=2, seed=1)
    )
    assert result.generated[0].image.size == (64, 64)


def test_unet_trains_throughout_and_the_text_encoder_for_the_first_step_only(
    run: Run, tiny_checkpoint: Path
) -> None:
    base, early, final = (
        tiny_checkpoint,
        run.output / "db-step00000002.safetensors",
        run.output / "db.safetensors",
    )
    base_unet, early_unet, final_unet = (state_of(p, UNET) for p in (base, early, final))
    assert any(not torch.equal(early_unet[k], final_unet[k]) for k in final_unet)
    assert any(
        not torch.equal(base_unet[k].half(), final_unet[k]) for k in final_unet
    )  # base is fp32, saves fp16
    base_text, early_text, final_text = (state_of(p, TEXT) for p in (base, early, final))
    assert all(torch.equal(early_text[k], final_text[k]) for k in final_text)  # stopped
    assert any(not torch.equal(base_text[k].half(), final_text[k]) for k in final_text)


def test_prior_preservation_puts_class_images_into_batches_with_their_weight(
    tmp_path: Path,
) -> None:
    data = instance_folder(tmp_path / "img")
    reg = class_folder(tmp_path / "reg", (200, 10, 10), count=2)
    config = db_config(
        Path("unused.safetensors"),
        data,
        tmp_path / "o",
        reg_data_dir=str(reg),
        prior_loss_weight=0.25,
    )
    dataset = TrainingDataset(dataset_spec(config), seed=1, tokenizer_max_length=75)
    batches = [dataset.batch_at(0, i) for i in range(dataset.total_batches)]
    flags = torch.cat([b.is_reg for b in batches])
    weights = torch.cat([b.loss_weights for b in batches])
    # kohya balances class samples to the instance samples: 2 images x 2 repeats each
    assert int(flags.sum()) == 4 and int((~flags).sum()) == 4
    assert torch.equal(weights[flags], torch.full((4,), 0.25))
    assert torch.equal(weights[~flags], torch.ones(4))
    captions = [c for b in batches for c, r in zip(b.captions, b.is_reg, strict=True) if r]
    assert set(captions) == {"cat"}


@pytest.mark.parametrize(("weight", "same"), [(0.0, True), (1.0, False)])
def test_class_images_change_the_result_by_prior_loss_weight(
    tiny_checkpoint: Path, tmp_path: Path, weight: float, same: bool
) -> None:
    """Two runs that differ only in the class pictures: equal weights when the prior loss
    counts nothing, different ones when it counts."""
    data = instance_folder(tmp_path / "img")
    finals = []
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        reg = class_folder(tmp_path / f"reg-{name}", colour)
        options = {"reg_data_dir": str(reg), "prior_loss_weight": weight, "max_train_steps": 2}
        config = db_config(
            tiny_checkpoint, data, tmp_path / f"out-{name}", train_text_encoder=False, **options
        )
        outcome = train_dreambooth(config, tiny_checkpoint)
        finals.append(state_of(outcome.result.final_file, UNET))
    equal = all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    assert equal is same


def test_resumed_run_matches_an_uninterrupted_one(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = instance_folder(tmp_path / "img", count=3)
    options = {"max_train_steps": 4, "save_every_n_steps": 2, "save_state": True}
    whole = train_dreambooth(
        db_config(tiny_checkpoint, data, tmp_path / "whole", **options), tiny_checkpoint
    )
    with pytest.raises(InterruptedRunError):
        train_dreambooth(
            db_config(tiny_checkpoint, data, tmp_path / "parts", **options),
            tiny_checkpoint,
            hooks=_stop_after(3),
        )
    state = tmp_path / "parts" / "db-step00000002-state"
    resumed = train_dreambooth(
        db_config(tiny_checkpoint, data, tmp_path / "parts", resume=str(state), **options),
        tiny_checkpoint,
    )
    assert resumed.result.steps == 4
    expected = read_model_file(whole.result.final_file).tensors
    got = read_model_file(resumed.result.final_file).tensors
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_class_images_missing_without_a_generator_fail_before_training(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = instance_folder(tmp_path / "img")
    reg = class_folder(tmp_path / "reg", (0, 0, 0), count=1)
    config = db_config(
        tiny_checkpoint, data, tmp_path / "out", reg_data_dir=str(reg), num_class_images=3
    )
    with pytest.raises(ConfigError, match=r"1_cat lacks 2"):
        train_dreambooth(config, tiny_checkpoint)
    assert not (tmp_path / "out").exists()
