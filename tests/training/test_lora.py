"""A few-step LoRA run on a tiny model: the files, their metadata, and that diffusers and
brushwork's own patcher load them to the same weights."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from brushwork.core import hashing
from brushwork.formats.lora import read_lora
from brushwork.formats.safeio import read_header, read_model_file
from brushwork.patching import apply_loras, load_lora_application
from brushwork.prompt import read_image_infotext
from brushwork.testing.factory import build_components, tokenizer
from brushwork.training.engine import Hooks
from brushwork.training.lora import LoraRunResult, train_lora
from brushwork.training.samples import PreviewRequest

from .conftest import lora_config, make_image_folder

RUN_OPTIONS = {
    "max_train_steps": None,
    "max_train_epochs": 2,
    "save_every_n_epochs": 1,
    "network_dropout": 0.1,  # draws from the global RNG: previews must not disturb it
    "learning_rate": 1e-2,
}


@dataclass(frozen=True)
class Trained:
    outcome: LoraRunResult
    output: Path
    data: Path


@pytest.fixture(scope="module")
def trained(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("lora")
    data = make_image_folder(root / "data", count=2)  # 2 images x 2 repeats / batch 2: 2 steps
    config = lora_config(tiny_checkpoint, data, root / "out", **RUN_OPTIONS)
    return Trained(train_lora(config, tiny_checkpoint), root / "out", data)


def test_run_writes_epoch_file_final_file_config_log_and_curve(trained: Trained) -> None:
    out = trained.output
    assert [p.name for p in trained.outcome.result.saved_files] == [
        "tiny-000001.safetensors",
        "tiny.safetensors",
    ]
    assert trained.outcome.result.steps == 4
    rows = (out / "tiny-loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,avr_loss")
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "1"], ["2", "1"], ["3", "2"], ["4", "2"]]
    assert Image.open(out / "tiny-loss.png").size == (800, 400)
    saved = (out / "tiny-config.toml").read_text()
    assert 'output_name = "tiny"' in saved and "seed = 7" in saved
    assert not list(out.glob("*.tmp"))


def test_files_carry_kohya_metadata(trained: Trained, tiny_checkpoint: Path) -> None:
    epoch_file = trained.output / "tiny-000001.safetensors"
    final = read_header(trained.output / "tiny.safetensors").metadata
    first = read_header(epoch_file).metadata
    assert (first["ss_epoch"], first["ss_steps"]) == ("1", "2")
    assert (final["ss_epoch"], final["ss_steps"]) == ("2", "4")
    assert final["ss_output_name"] == first["ss_output_name"] == "tiny"
    assert final["ss_network_module"] == "networks.lora"
    assert (final["ss_network_dim"], final["ss_network_alpha"]) == ("4", "2.0")
    assert final["ss_base_model_version"] == "sd_v1" and final["ss_v2"] == "False"
    assert final["ss_resolution"] == "(64, 64)" and final["modelspec.resolution"] == "64x64"
    assert final["ss_num_epochs"] == "2" and final["ss_max_train_steps"] == "4"
    assert final["ss_learning_rate"] == "0.01" and final["ss_seed"] == "7"
    assert json.loads(final["ss_tag_frequency"]) == {
        "2_sks cat": {"sks cat": 2, "tag0": 1, "tag1": 1, "red": 2}
    }
    assert json.loads(final["ss_dataset_dirs"]) == {"2_sks cat": {"n_repeats": 2, "img_count": 2}}
    assert final["ss_sd_model_name"] == "tiny.safetensors"
    assert final["ss_new_sd_model_hash"] == hashing.sha256_file(tiny_checkpoint)
    assert final["sshs_model_hash"] == hashing.addnet_hash_file(trained.output / "tiny.safetensors")
    assert final["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert final["modelspec.title"] == "tiny"


def test_file_holds_kohya_modules_with_the_true_alpha(trained: Trained) -> None:
    network = read_lora(trained.output / "tiny.safetensors")
    assert network.source_format == "kohya"
    components = sorted({m.component for m in network.modules.values()})
    assert components == ["text_encoder", "unet"]
    assert len(network.modules) == 48 + 12  # 4 transformer blocks x 12, 2 CLIP layers x 6
    assert {(m.rank, m.alpha) for m in network.modules.values()} == {(4, 2.0)}
    ups = [m.parts["up"] for m in network.modules.values()]
    assert all(torch.isfinite(u).all() for u in ups) and any(u.abs().sum() > 0 for u in ups)


def _unet_output(unet: torch.nn.Module, context: torch.Tensor) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample


def test_diffusers_and_brushwork_load_the_file_to_the_same_model(trained: Trained) -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    path = trained.output / "tiny.safetensors"
    ids = tokenizer()(
        ["sks cat"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    base = build_components("sd1")
    pipe = StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=base.text_encoders["text_encoder"],
        tokenizer=tokenizer(),
        unet=base.unet,
        scheduler=DDPMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with torch.no_grad():
        context_before = pipe.text_encoder(ids)[0]
    before = _unet_output(pipe.unet, context_before)
    pipe.load_lora_weights(str(path))
    with torch.no_grad():
        context_diffusers = pipe.text_encoder(ids)[0]
    by_diffusers = _unet_output(pipe.unet, context_diffusers)

    ours = build_components("sd1")
    encoder = ours.text_encoders["text_encoder"]
    with apply_loras(
        unet=ours.unet, text_encoders=ours.text_encoders, applications=[load_lora_application(path)]
    ):
        with torch.no_grad():
            context_ours = encoder(ids)[0]
        by_brushwork = _unet_output(ours.unet, context_ours)
    assert not torch.allclose(context_before, context_diffusers, atol=1e-4)
    assert not torch.allclose(before, by_diffusers, atol=1e-4)
    torch.testing.assert_close(context_ours, context_diffusers, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(by_brushwork, by_diffusers, atol=1e-5, rtol=1e-4)


def test_previews_are_saved_with_infotext_and_leave_training_unchanged(
    trained: Trained, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a sks cat --n blurry --w 64 --h 72 --d 5 --s 3 --l 6\n# note\n")
    seen: list[PreviewRequest] = []

    def preview(request: PreviewRequest) -> list[Image.Image]:
        seen.append(request)
        torch.rand(100)  # a generator that uses the global RNG must not change training
        return [Image.new("RGB", (request.width, request.height))]

    options = RUN_OPTIONS | {"sample_prompts": str(prompts), "sample_every_n_epochs": 1}
    config = lora_config(tiny_checkpoint, trained.data, tmp_path / "out", **options)
    train_lora(config, tiny_checkpoint, hooks=Hooks(preview=preview))

    assert len(seen) == 2 and seen[0] == PreviewRequest(
        "a sks cat", "blurry", 64, 72, 5, 3, 6.0, "DDIM"
    )
    samples = sorted((tmp_path / "out" / "sample").glob("*.png"))
    assert [p.name.split("_")[1] for p in samples] == ["e000001", "e000002"]
    info = read_image_infotext(samples[0].read_bytes())
    assert info is not None and "Training step: 2" in info and "Seed: 5" in info
    with_previews = read_model_file(tmp_path / "out" / "tiny.safetensors").tensors
    without = read_model_file(trained.output / "tiny.safetensors").tensors
    assert with_previews.keys() == without.keys()
    assert all(torch.equal(with_previews[k], without[k]) for k in without)


@pytest.mark.parametrize(
    ("options", "prefixes", "conv_keys"),
    [
        ({"network_train_unet_only": True}, {"lora_unet"}, False),
        ({"network_train_text_encoder_only": True}, {"lora_te"}, False),
        ({"conv_dim": 2, "conv_alpha": 1, "network_train_unet_only": True}, {"lora_unet"}, True),
    ],
)
def test_component_choice_and_locon(
    options: dict[str, object],
    prefixes: set[str],
    conv_keys: bool,
    tiny_checkpoint: Path,
    image_folder: Path,
    tmp_path: Path,
) -> None:
    config = lora_config(tiny_checkpoint, image_folder, tmp_path, max_train_steps=1, **options)
    train_lora(config, tiny_checkpoint)
    tensors = read_model_file(tmp_path / "tiny.safetensors").tensors
    assert {k.split("_")[0] + "_" + k.split("_")[1] for k in tensors} == prefixes
    conv1 = "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"
    assert (conv1 in tensors) == conv_keys
    if conv_keys:
        assert tensors[conv1].shape == (2, 32, 3, 3)  # conv_dim 2 on a 3x3 conv
        meta = read_header(tmp_path / "tiny.safetensors").metadata
        assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}


def test_gradient_checkpointing_trains_the_same_weights(
    tiny_checkpoint: Path, image_folder: Path, tmp_path: Path
) -> None:
    plain = lora_config(tiny_checkpoint, image_folder, tmp_path / "plain", max_train_steps=2)
    checkpointed = lora_config(
        tiny_checkpoint,
        image_folder,
        tmp_path / "ckpt",
        max_train_steps=2,
        gradient_checkpointing=True,
    )
    train_lora(plain, tiny_checkpoint)
    train_lora(checkpointed, tiny_checkpoint)
    a = read_model_file(tmp_path / "plain" / "tiny.safetensors").tensors
    b = read_model_file(tmp_path / "ckpt" / "tiny.safetensors").tensors
    assert any(k.startswith("lora_te") for k in a)  # the text encoder is trained through it too
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5)


def test_bf16_v_prediction_min_snr_run_saves_in_the_asked_precision(
    tiny_checkpoint: Path, image_folder: Path, tmp_path: Path
) -> None:
    config = lora_config(
        tiny_checkpoint,
        image_folder,
        tmp_path,
        max_train_steps=2,
        mixed_precision="bf16",
        save_precision="fp16",
        v_parameterization=True,
        min_snr_gamma=5,
        noise_offset=0.05,
        clip_skip=2,
        max_token_length=150,
    )
    train_lora(config, tiny_checkpoint)
    tensors = read_model_file(tmp_path / "tiny.safetensors").tensors
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert all(torch.isfinite(t).all() for t in tensors.values())
    meta = read_header(tmp_path / "tiny.safetensors").metadata
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_base_model_version"] == "sd_v1_v"
    assert (meta["ss_min_snr_gamma"], meta["ss_noise_offset"]) == ("5.0", "0.05")
    assert (meta["ss_clip_skip"], meta["ss_max_token_length"]) == ("2", "150")
    assert meta["ss_mixed_precision"] == "bf16" and meta["modelspec.encoder_layer"] == "2"


def test_sd2_v_prediction_base_trains_a_v2_lora(image_folder: Path, tmp_path: Path) -> None:
    from brushwork.testing.factory import write_checkpoint_file

    base = write_checkpoint_file(
        build_components("sd2"), tmp_path / "sd2.safetensors", prediction_type="v_prediction"
    )
    config = lora_config(base, image_folder, tmp_path / "out", max_train_steps=1, v2=True)
    train_lora(config, base)
    meta = read_header(tmp_path / "out" / "tiny.safetensors").metadata
    assert (meta["ss_v2"], meta["ss_base_model_version"]) == ("True", "sd_v2_v")
    assert meta["modelspec.prediction_type"] == "v"
    network = read_lora(tmp_path / "out" / "tiny.safetensors")
    assert {m.component for m in network.modules.values()} == {"unet", "text_encoder"}


def test_brushwork_generation_draws_with_the_trained_file(
    trained: Trained, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from brushwork.core.settings import Settings
    from brushwork.generation import GenerationRequest, Generator
    from brushwork.library.catalog import Library
    from brushwork.loading import load_model

    (tmp_path / "models" / "Lora").mkdir(parents=True)
    shutil.copy(
        trained.output / "tiny.safetensors", tmp_path / "models" / "Lora" / "mycat.safetensors"
    )
    settings = Settings(roots=(tmp_path / "models",), data_dir=tmp_path / "data")
    with Library.open(settings) as library:
        generator = Generator(load_model(tiny_checkpoint, precision="fp32"), library=library)
        request = {"width": 64, "height": 64, "steps": 2, "seed": 1, "sampler_name": "Euler"}
        plain = generator.generate(GenerationRequest(prompt="sks cat", **request))
        with_lora = generator.generate(
            GenerationRequest(prompt="sks cat <lora:mycat:1>", **request)
        )
    a = torch.tensor(list(plain.generated[0].image.tobytes()))
    b = torch.tensor(list(with_lora.generated[0].image.tobytes()))
    assert not torch.equal(a, b)
    assert (
        "Lora hashes" in with_lora.generated[0].infotext
        and "mycat" in with_lora.generated[0].infotext
    )


@pytest.mark.parametrize("to_disk", [False, True])
def test_cached_latents_follow_the_vae_s_own_downscale(
    tiny_checkpoint: Path, tmp_path: Path, to_disk: bool
) -> None:
    """The tiny VAE halves the picture (SD's divides by 8): caching must use the model's factor,
    and a second run reuses the disk cache it wrote."""
    data = make_image_folder(tmp_path / "data", count=2)
    options = {"cache_latents": True, "cache_latents_to_disk": to_disk, "max_train_steps": 2}
    first = train_lora(
        lora_config(tiny_checkpoint, data, tmp_path / "a", **options), tiny_checkpoint
    )
    assert first.result.steps == 2
    if to_disk:
        caches = sorted(data.rglob("*.npz"))
        assert caches
        stamps = [p.stat().st_mtime_ns for p in caches]
        train_lora(lora_config(tiny_checkpoint, data, tmp_path / "b", **options), tiny_checkpoint)
        assert [p.stat().st_mtime_ns for p in caches] == stamps  # reused, not rewritten
