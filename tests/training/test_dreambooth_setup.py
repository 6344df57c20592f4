"""DreamBooth setup without training: options (sd-scripts keys), class-image bookkeeping, and
the "create model" project."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from brushwork.core.errors import BrushworkError, ConfigError
from brushwork.formats.checkpoint import read_checkpoint
from brushwork.training.config import check_environment
from brushwork.training.config_file import read_config_toml, resolve_config_as
from brushwork.training.dreambooth_config import DreamBoothTrainingConfig
from brushwork.training.dreambooth_data import class_image_needs, class_word, ensure_class_images
from brushwork.training.dreambooth_project import ProjectRequest, create_project

from .test_dreambooth import FakeClassImages, class_folder, instance_folder

BASE = {"pretrained_model_name_or_path": "m.safetensors", "train_data_dir": "img"}


def resolve(values: dict[str, object]) -> DreamBoothTrainingConfig:
    config, _ = resolve_config_as(DreamBoothTrainingConfig, BASE | values)
    return config


def test_flat_sd_scripts_toml_gives_dreambooth_options(tmp_path: Path) -> None:
    toml = tmp_path / "db.toml"
    toml.write_text(
        'pretrained_model_name_or_path = "/m/v1-5.safetensors"\ntrain_data_dir = "/d/img"\n'
        'reg_data_dir = "/d/reg"\n[training]\nlearning_rate = 1e-6\nlearning_rate_te = 5e-7\n'
        "stop_text_encoder_training = 400\nprior_loss_weight = 0.5\nmax_train_steps = 800\n"
        'gradient_checkpointing = true\ncache_latents = true\nsave_precision = "fp16"\n'
        'mixed_precision = "bf16"\nsave_every_n_epochs = 2\noptimizer_type = "AdamW8bit"\n'
        "num_class_images = 200\nno_token_padding = true\nnetwork_dim = 8\n",
        encoding="utf-8",
    )
    config, warnings = resolve_config_as(
        DreamBoothTrainingConfig,
        read_config_toml(toml, known=DreamBoothTrainingConfig.model_fields),
    )
    assert (config.learning_rate, config.effective_text_encoder_lr) == (1e-6, 5e-7)
    assert config.trains_text_encoder and config.text_encoder_steps == 400
    assert config.prior_loss_weight == 0.5 and config.num_class_images == 200
    assert config.gradient_checkpointing and config.cache_latents
    assert config.save_precision == "fp16" and config.file_suffix == ".safetensors"
    assert any("no_token_padding" in w and "not implement" in w for w in warnings)
    assert any("unknown option 'network_dim'" in w for w in warnings)


def test_defaults_and_text_encoder_switches() -> None:
    config = resolve({})
    assert config.learning_rate == 2e-6  # sd-scripts' full fine-tune default
    assert config.trains_text_encoder and config.text_encoder_steps is None
    assert config.effective_text_encoder_lr == 2e-6
    for never in ({"stop_text_encoder_training": -1}, {"train_text_encoder": False}):
        assert not resolve(never).trains_text_encoder
        assert resolve(never).text_encoder_steps == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_class_images": 10}, "num_class_images needs reg_data_dir"),
        ({"save_model_as": "pt"}, "save_model_as"),
        ({"stop_text_encoder_training": -2}, "stop_text_encoder_training"),
        ({"class_prompt": "  "}, "class_prompt is empty"),
    ],
)
def test_invalid_options_name_the_option(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(values)


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed"
)
def test_8bit_optimiser_without_bitsandbytes_says_what_to_install(tmp_path: Path) -> None:
    config = resolve({"train_data_dir": str(tmp_path), "optimizer_type": "AdamW8bit"})
    with pytest.raises(ConfigError, match="needs the bitsandbytes package") as caught:
        check_environment(config, "cpu")
    assert "pip install bitsandbytes" in str(caught.value.hint)


def test_class_word_is_what_follows_the_rare_token() -> None:
    assert class_word("sks dog") == "dog"
    assert class_word("ohwx black mamba") == "black mamba"
    assert class_word("sks") is None


def test_only_missing_class_images_are_generated_with_continuing_seeds(tmp_path: Path) -> None:
    data = instance_folder(tmp_path / "img")
    reg = class_folder(tmp_path / "reg", (1, 2, 3), count=1)
    config = resolve(
        {
            "train_data_dir": str(data),
            "reg_data_dir": str(reg),
            "num_class_images": 3,
            "seed": 100,
            "resolution": 64,
        }
    )
    (need,) = class_image_needs(config)
    assert (need.prompt, need.folder, need.existing, need.missing) == ("cat", reg / "1_cat", 1, 2)
    maker = FakeClassImages()
    written = ensure_class_images(config, maker)
    assert maker.calls == [("cat", 2, (64, 64), 101)]  # image N has seed + N
    assert [p.name for p in written] == ["class-00001.png", "class-00002.png"]
    assert Image.open(written[0]).size == (64, 64)
    assert ensure_class_images(config, FakeClassImages()) == []  # nothing missing now


def test_class_prompt_names_its_own_folder_and_one_word_folders_need_it(tmp_path: Path) -> None:
    data = tmp_path / "img"
    (data / "5_sks").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(data / "5_sks" / "a.png")
    values = {"train_data_dir": str(data), "reg_data_dir": str(tmp_path / "reg")}
    with pytest.raises(ConfigError, match="no class word") as caught:
        class_image_needs(resolve(values | {"num_class_images": 2}))
    assert "class_prompt" in str(caught.value.hint)
    config = resolve(values | {"num_class_images": 2, "class_prompt": "photo of a dog: 1/2"})
    (need,) = class_image_needs(config)
    assert need.folder == tmp_path / "reg" / "1_photo of a dog 1 2"
    written = ensure_class_images(config, FakeClassImages())
    assert written[0].with_suffix(".txt").read_text(encoding="utf-8") == "photo of a dog: 1/2"


def test_create_project_makes_a_trainable_layout(tiny_checkpoint: Path, tmp_path: Path) -> None:
    created = create_project(
        ProjectRequest(
            name="rex",
            source=tiny_checkpoint,
            projects_dir=tmp_path / "projects",
            token="ohwx",
            class_word="dog",
            repeats=5,
            num_class_images=7,
            resolution=64,
        )
    )
    folder = tmp_path / "projects" / "rex"
    assert created.layout.folder == folder
    assert created.instance_dir == folder / "img" / "5_ohwx dog" and created.instance_dir.is_dir()
    assert created.class_dir == folder / "reg" / "1_dog" and created.class_dir.is_dir()
    assert created.model_file == folder / "model" / "rex-base.safetensors"
    assert created.model_file.read_bytes() == tiny_checkpoint.read_bytes()
    sidecar = tiny_checkpoint.with_suffix(".yaml")
    if sidecar.exists():  # a non-standard size needs its sidecar beside the copy
        assert created.model_file.with_suffix(".yaml").read_bytes() == sidecar.read_bytes()
    raw = tomllib.loads(created.layout.config_file.read_text(encoding="utf-8"))
    assert raw["pretrained_model_name_or_path"] == str(created.model_file)
    known = DreamBoothTrainingConfig.model_fields
    config, warnings = resolve_config_as(
        DreamBoothTrainingConfig, read_config_toml(created.layout.config_file, known=known)
    )
    assert not warnings
    assert config.train_data_dir == folder / "img" and config.reg_data_dir == folder / "reg"
    assert config.output_name == "rex" and config.num_class_images == 7
    assert config.resolution == (64, 64) and config.sample_prompts == folder / "sample_prompts.txt"
    assert "a photo of ohwx dog --w 64" in config.sample_prompts.read_text(encoding="utf-8")


def test_create_project_refuses_to_overwrite_and_can_reference(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    request = ProjectRequest(name="rex", source=tiny_checkpoint, projects_dir=tmp_path)
    create_project(request)
    with pytest.raises(ConfigError, match="already exists"):
        create_project(request)
    again = create_project(
        ProjectRequest(
            name="rex",
            source=tiny_checkpoint,
            projects_dir=tmp_path,
            reference=True,
            overwrite=True,
        )
    )
    assert again.model_file == tiny_checkpoint.resolve()
    with pytest.raises(ConfigError, match="only letters"):
        create_project(ProjectRequest(name="../x", source=tiny_checkpoint, projects_dir=tmp_path))


def test_create_project_converts_a_pickle_source(tmp_path: Path) -> None:
    from brushwork.testing.factory import build_components, write_checkpoint_file

    source = write_checkpoint_file(build_components("sd1", seed=3), tmp_path / "old.ckpt")
    created = create_project(ProjectRequest(name="p", source=source, projects_dir=tmp_path / "pr"))
    assert created.model_file.suffix == ".safetensors"
    before, after = read_checkpoint(source), read_checkpoint(created.model_file)
    assert before.unet.keys() == after.unet.keys()
    assert all(before.unet[k].equal(after.unet[k]) for k in before.unet)
    not_a_model = tmp_path / "x.safetensors"
    not_a_model.write_bytes(b"nonsense")
    with pytest.raises(BrushworkError, match="not a safetensors file"):
        create_project(ProjectRequest(name="q", source=not_a_model, projects_dir=tmp_path))
