"""Training options: sd-scripts' flat TOML and names, validation before any work."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from brushwork.core.errors import ConfigError
from brushwork.training.config import check_environment
from brushwork.training.config_file import (
    config_toml,
    read_config_toml,
    resolve_config,
    sort_options,
)

BASE = {"pretrained_model_name_or_path": "model.safetensors", "train_data_dir": "data"}


def test_flat_sd_scripts_toml_with_sections_is_read_like_sd_scripts(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        """
pretrained_model_name_or_path = "/models/v1-5.safetensors"
[dataset_arguments]
train_data_dir = "/data/img"
resolution = "512,768"
train_batch_size = 3
[training_arguments]
max_train_epochs = 10
network_dim = 32
network_alpha = 16
unet_lr = 0.0001
text_encoder_lr = 5e-05
lr_scheduler = "cosine_with_restarts"
lr_scheduler_num_cycles = 3
optimizer_type = "AdamW"
optimizer_args = ["weight_decay=0.1", "betas=0.9,0.99"]
network_args = ["conv_dim=8", "conv_alpha=4"]
mixed_precision = "bf16"
save_every_n_epochs = 2
save_model_as = "safetensors"
xformers = true
multires_noise_iterations = 6
netwrk_dim = 8
""",
        encoding="utf-8",
    )
    config, warnings = resolve_config(read_config_toml(path))
    assert config.resolution == (512, 768)
    assert (config.network_dim, config.network_alpha) == (32, 16.0)
    assert config.conv_settings == (8, 4.0)
    assert config.effective_unet_lr == 1e-4 and config.effective_text_encoder_lr == 5e-5
    assert config.optimizer_args == ("weight_decay=0.1", "betas=0.9,0.99")
    assert config.max_train_epochs == 10 and config.lr_scheduler_num_cycles == 3
    assert any("multires_noise_iterations = 6" in w and "not implement" in w for w in warnings)
    assert any("'netwrk_dim' (did you mean network_dim?)" in w for w in warnings)
    assert not any("xformers" in w for w in warnings)  # no effect here: a note, not a warning


def test_later_sources_override_and_the_resolved_config_reads_back() -> None:
    config, _ = resolve_config(BASE | {"network_dim": 8}, {"network_dim": 16, "seed": 3})
    assert config.network_dim == 16
    again, _ = resolve_config(sort_options(tomllib.loads(config_toml(config))))
    assert again == config


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (
            {"network_train_unet_only": True, "network_train_text_encoder_only": True},
            "network_train_unet_only",
        ),
        ({"max_train_steps": 0, "max_train_epochs": None}, "max_train_steps or max_train_epochs"),
        ({"lr_scheduler": "warp"}, "lr_scheduler 'warp'"),
        ({"lr_warmup_steps": 10}, "lr_warmup_steps"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"network_dim": 0}, "network_dim"),
        ({"conv_alpha": 4}, "conv_alpha is set but conv_dim is not"),
        ({"network_module": "lycoris.kohya"}, "network_module 'lycoris.kohya'"),
        ({"network_args": ["rank_dropout=0.1"]}, "network_args 'rank_dropout'"),
        ({"max_token_length": 100}, "max_token_length"),
        ({"resolution": "500"}, "resolution"),
        ({"output_name": "a/b"}, "output_name"),
        ({"sample_every_n_steps": 10}, "sample_prompts"),
        ({"save_model_as": "ckpt2"}, "save_model_as"),
        ({"train_data_dir": None}, "train_data_dir"),
        ({"caption_dropout_rate": 2}, "caption_dropout_rate"),
    ],
)
def test_invalid_or_conflicting_options_fail_naming_the_option(
    options: dict[str, object], named: str
) -> None:
    values = {k: v for k, v in (BASE | options).items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        resolve_config(values)
    assert named in str(caught.value)


def test_missing_base_model_is_named() -> None:
    with pytest.raises(ConfigError, match="pretrained_model_name_or_path"):
        resolve_config({"train_data_dir": "x"})


def test_environment_checks_name_the_option(tmp_path: Path) -> None:
    config, _ = resolve_config(BASE | {"train_data_dir": str(tmp_path), "optimizer_type": "Rocket"})
    with pytest.raises(ConfigError, match="optimizer_type 'Rocket'"):
        check_environment(config, "cpu")
    config, _ = resolve_config(BASE | {"train_data_dir": str(tmp_path), "mixed_precision": "fp16"})
    with pytest.raises(ConfigError, match="mixed_precision fp16 needs a GPU"):
        check_environment(config, "cpu")
    config, _ = resolve_config(BASE | {"train_data_dir": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match=r"train_data_dir: .*missing does not exist"):
        check_environment(config, "cpu")


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("network_dim = = 4")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_toml(path)
