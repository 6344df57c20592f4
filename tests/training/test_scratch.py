"""Training from scratch (training/scratch.py) and the full fine-tune method (training/finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from typer.testing import CliRunner

from brushwork.cli.main import app
from brushwork.core.errors import ConfigError
from brushwork.demo.dataset import write_dataset
from brushwork.formats.safeio import read_header
from brushwork.formats.vae import read_vae
from brushwork.loading import load_model
from brushwork.testing.factory import TINY_VAE, component_configs
from brushwork.training.scratch import (
    VaeMethod,
    edge_loss,
    fold_latent_scale,
    latent_std,
    read_scratch_config,
    scratch_config,
    train_from_scratch,
)
from brushwork.training.scratch_data import InMemoryImageSet

TINY_MODEL = {"family": "sd1"} | {
    name: cfg for name, cfg in component_configs("sd1", "tiny").items() if name != "vae"
}


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root, ("circle", "square"), 8, seed=1, size=32, repeats=1, name="shapes")
    return root


@pytest.fixture(scope="module")
def model_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "model.json"
    path.write_text(json.dumps(TINY_MODEL | {"vae": TINY_VAE}), encoding="utf-8")
    return path


def _config(model_json: Path, data: Path, out: Path, **extra: object) -> dict[str, object]:
    return {
        "model_config": str(model_json),
        "train_data_dir": str(data),
        "output_dir": str(out),
        "output_name": "tiny",
        "resolution": 32,
        "vae_steps": 3,
        "vae_batch_size": 4,
        "max_train_steps": 3,
        "train_batch_size": 4,
        "lr_warmup_steps": 0,
    } | extra


def test_folding_the_latent_scale_keeps_what_the_vae_decodes() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE).eval()
    pixels = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
        std_before = latent_std(vae, pixels)
        fold_latent_scale(vae, 3.0)
        posterior = vae.encode(pixels).latent_dist
        after = vae.decode(posterior.mode()).sample
    assert torch.allclose(before, after, atol=1e-4)
    assert latent_std(vae, pixels) == pytest.approx(3.0 * std_before, rel=1e-4)
    with pytest.raises(ValueError, match="positive"):
        fold_latent_scale(vae, 0.0)


def test_the_edge_term_is_zero_for_the_same_picture_and_grows_with_blur() -> None:
    torch.manual_seed(0)
    pixels = -torch.ones(2, 3, 32, 32)
    pixels[:, :, 8:24, 8:24] = 1.0  # a flat square with sharp edges
    blurred = torch.nn.functional.avg_pool2d(pixels, 5, stride=1, padding=2)
    shifted = pixels + 0.5  # a colour shift keeps every edge
    assert float(edge_loss(pixels, pixels)) == 0.0
    assert float(edge_loss(shifted, pixels)) == pytest.approx(0.0, abs=1e-6)
    assert float(edge_loss(blurred, pixels)) > 0.01


def test_the_vae_loss_adds_the_edge_term_only_when_weighted() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(TINY_VAE)
    batch = type("Batch", (), {"images": torch.rand(2, 3, 32, 32) * 2 - 1})()
    with torch.no_grad():
        plain = VaeMethod(vae, 1e-3, 1e-6, 0.0).loss(batch, torch.Generator().manual_seed(1))
        edged = VaeMethod(vae, 1e-3, 1e-6, 2.0).loss(batch, torch.Generator().manual_seed(1))
        # the same sampled latents the method decodes (same generator seed)
        posterior = vae.encode(batch.images).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(1))
        decoded = vae.decode(posterior.mean + posterior.std * noise).sample
        edges = edge_loss(decoded, batch.images)
    assert float(edges) > 0  # a random decoder misses every edge
    assert float(edged) == pytest.approx(float(plain) + 2.0 * float(edges), rel=1e-5)


def test_schedule_and_loss_keys_reach_the_run(
    shapes_folder: Path, model_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv

    import brushwork.training.scratch as scratch

    objectives = []
    real_method = scratch.FullModelMethod

    def recording_method(*args: object, **kwargs: object) -> object:
        objectives.append(args[2])
        return real_method(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scratch, "FullModelMethod", recording_method)
    config = scratch_config(
        _config(
            model_json,
            shapes_folder,
            tmp_path,
            vae_steps=6,
            vae_lr_scheduler="cosine",
            vae_lr_warmup_steps=2,
            vae_edge_weight=1.0,
            min_snr_gamma=5.0,
        )
    )
    result = train_from_scratch(config)
    assert [o.min_snr_gamma for o in objectives] == [5.0]
    with (tmp_path / "tiny-vae-loss.csv").open(encoding="utf-8") as handle:
        rates = [float(row["lr/vae"]) for row in csv.DictReader(handle)]
    peak = rates.index(max(rates))
    assert rates[0] < rates[peak] and peak <= 2  # the warm-up rises
    assert rates[peak:] == sorted(rates[peak:], reverse=True) and rates[-1] < rates[peak]
    record = json.loads(read_header(result.model_file).metadata["brushwork.training"])
    assert record["config"]["vae_edge_weight"] == 1.0
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        scratch_config(_config(model_json, shapes_folder, tmp_path, min_snr_gamma=0))
    with pytest.raises(ConfigError, match="cosin"):
        scratch_config(_config(model_json, shapes_folder, tmp_path, vae_lr_scheduler="cosin"))


def test_a_run_from_scratch_writes_a_checkpoint_our_loader_reads(
    shapes_folder: Path, model_json: Path, tmp_path: Path
) -> None:
    config = scratch_config(_config(model_json, shapes_folder, tmp_path))
    result = train_from_scratch(config)
    assert result.model_file == tmp_path / "tiny.safetensors"
    assert (result.vae_steps, result.steps, result.images) == (3, 3, 8)
    model = load_model(result.model_file, device="cpu", precision="fp32")
    assert model.family.value == "sd1"
    # the VAE in the model is the trained one (saved in fp16), its latents scaled to SD1's factor
    vae_file = read_vae(tmp_path / "tiny-vae.safetensors")
    for key, value in vae_file.state_dict.items():
        assert torch.equal(model.vae.state_dict()[key], value.half().float()), key
    data = InMemoryImageSet(shapes_folder, 32, 4, seed=0)
    assert latent_std(model.vae, data.pixels) * 0.18215 == pytest.approx(1.0, rel=1e-3)
    # the trained weights differ from the created ones, and the file says how it was made
    init = load_model(result.init_file, device="cpu", precision="fp32")
    assert not torch.equal(init.unet.conv_in.weight, model.unet.conv_in.weight)
    metadata = read_header(result.model_file).metadata
    record = json.loads(metadata["brushwork.training"])
    assert record["method"] == "from scratch"
    assert record["config"]["train_data_dir"] == shapes_folder.name
    assert str(tmp_path) not in metadata["brushwork.training"]  # no machine's folders


def test_a_trained_vae_file_can_be_reused(
    shapes_folder: Path, model_json: Path, tmp_path: Path
) -> None:
    first = train_from_scratch(scratch_config(_config(model_json, shapes_folder, tmp_path / "a")))
    vae_file = tmp_path / "a" / "tiny-vae.safetensors"
    second = train_from_scratch(
        scratch_config(_config(model_json, shapes_folder, tmp_path / "b", vae=str(vae_file)))
    )
    assert second.vae_steps == 0
    one = load_model(first.model_file, device="cpu", precision="fp32")
    two = load_model(second.model_file, device="cpu", precision="fp32")
    assert torch.equal(one.vae.decoder.conv_out.weight, two.vae.decoder.conv_out.weight)


def test_a_run_can_continue_from_a_model_made_here(
    shapes_folder: Path, model_json: Path, tmp_path: Path
) -> None:
    first = train_from_scratch(scratch_config(_config(model_json, shapes_folder, tmp_path / "a")))
    more = train_from_scratch(
        scratch_config(
            _config(model_json, shapes_folder, tmp_path / "b", init_model=str(first.model_file))
        )
    )
    assert (more.vae_steps, more.steps, more.init_file) == (0, 3, first.model_file)
    one = load_model(first.model_file, device="cpu", precision="fp32")
    two = load_model(more.model_file, device="cpu", precision="fp32")
    assert torch.equal(one.vae.decoder.conv_out.weight, two.vae.decoder.conv_out.weight)
    assert not torch.equal(one.unet.conv_in.weight, two.unet.conv_in.weight)


def test_the_config_file_names_a_wrong_key(tmp_path: Path, model_json: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'model_config = "{model_json}"\nlearning_rat = 1e-4\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="learning_rat"):
        read_scratch_config(config, {"train_data_dir": "x", "output_dir": "y"})


def test_relative_paths_in_the_config_are_from_its_folder(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'model_config = "m.json"\ntrain_data_dir = "data"\noutput_dir = "out"\n'
        "[diffusion]\nmax_train_steps = 7\n",
        encoding="utf-8",
    )
    loaded = read_scratch_config(config)
    assert loaded.model_config_file == tmp_path / "m.json"
    assert loaded.train_data_dir == tmp_path / "data"
    assert loaded.max_train_steps == 7


def test_an_empty_folder_is_a_clear_error(model_json: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no pictures"):
        train_from_scratch(scratch_config(_config(model_json, tmp_path / "empty", tmp_path)))


def test_train_scratch_command(shapes_folder: Path, model_json: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        "\n".join(
            f"{k} = {json.dumps(v)}"
            for k, v in _config(model_json, shapes_folder, tmp_path).items()
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app, ["train", "scratch", "--config", str(config), "--output-name", "cli"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.safetensors").is_file()
    assert "from scratch on 8 pictures" in result.output
