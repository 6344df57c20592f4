"""Textual inversion training on a tiny SD1 model: files, cadence, frozen model, resume."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.formats.embedding import read_embedding
from brushwork.loading import LoadedModel, load_model
from brushwork.training.lr_schedule import parse_learn_schedule, schedule_lambda
from brushwork.training.samples import PreviewRequest
from brushwork.training.template_training import (
    TEMPLATE_NAMES,
    LatentSource,
    filewords,
    image_dataset,
    read_template,
    resolve_options,
    sample_latents,
)
from brushwork.training.textual_inversion import (
    EmbeddingTrainingConfig,
    initial_vectors,
    train_embedding,
    vector_warnings,
)


def flat_image_folder(root: Path, count: int = 4) -> Path:
    """A1111's layout: a flat folder of 32x32 images, two with .txt captions."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:02d}-red cat.png")
        if i % 2 == 0:
            (root / f"{i:02d}-red cat.txt").write_text(f"a red cat, tag{i}", encoding="utf-8")
    return root


def ti_config(base: Path, data: Path, output: Path, **options: Any) -> EmbeddingTrainingConfig:
    values: dict[str, Any] = {
        "pretrained_model_name_or_path": str(base),
        "train_data_dir": str(data),
        "output_dir": str(output),
        "output_name": "kitty",
        "resolution": 64,
        "train_batch_size": 2,
        "max_train_steps": 4,
        "learning_rate": "0.05:2, 0.01",
        "num_vectors_per_token": 2,
        "init_word": "cat",
        "save_every_n_steps": 2,
        "template_filename": "subject_filewords",
        "seed": 3,
    }
    config, _ = resolve_options(EmbeddingTrainingConfig, values | options)
    return config


def log_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def fingerprint(model: LoadedModel) -> dict[str, str]:
    out = {}
    for component, module in model.modules().items():
        for key, tensor in module.state_dict().items():
            data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            out[f"{component}.{key}"] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.parametrize(
    ("text", "max_steps", "pieces"),
    [
        ("0.005", 1000, ((0.005, 1000),)),
        ("0.005:100, 1e-3:1000, 1e-5", 3000, ((0.005, 100), (1e-3, 1000), (1e-5, 3000))),
        ("0.005:100, 1e-3:1000, 1e-5", 500, ((0.005, 100), (1e-3, 500))),
        ("0.01:-1, 0.5", 200, ((0.01, 200),)),
        ("0.1:50, 0.2:20, 0.3:80", 1000, ((0.1, 50), (0.3, 80))),
        (" 0.1:10 ,, 0.2:30 ", 1000, ((0.1, 10), (0.2, 30))),
    ],
)
def test_learn_schedule_follows_a1111(
    text: str, max_steps: int, pieces: tuple[tuple[float, int], ...]
) -> None:
    schedule = parse_learn_schedule(text, max_steps)
    assert schedule.pieces == pieces
    assert schedule.end_step == pieces[-1][1]


def test_learn_schedule_rates_by_steps_done() -> None:
    schedule = parse_learn_schedule("0.005:100, 1e-3:1000, 1e-5", 3000)
    assert [schedule.rate_at(s) for s in (0, 99, 100, 999, 1000, 2999)] == [
        0.005,
        0.005,
        1e-3,
        1e-3,
        1e-5,
        1e-5,
    ]


def test_learn_schedule_lambda_reads_the_absolute_step() -> None:
    schedule = parse_learn_schedule("0.005:100, 1e-3:1000, 1e-5", 3000)
    fresh, continued = schedule_lambda(schedule), schedule_lambda(schedule, start_step=150)
    assert [fresh(count) for count in (0, 99, 100)] == [0.005, 0.005, 1e-3]
    assert [continued(count) for count in (0, 849, 850)] == [1e-3, 1e-3, 1e-5]
    two_processes = schedule_lambda(schedule, processes=2, start_step=99)
    assert [two_processes(count) for count in (0, 1, 2)] == [0.005, 0.005, 1e-3]


@pytest.mark.parametrize("bad", ["", "fast", "0.1:ten", "-0.1", "0.1:abc, 0.2"])
def test_learn_schedule_rejects_bad_syntax(bad: str) -> None:
    with pytest.raises(ConfigError, match="learning-rate schedule"):
        parse_learn_schedule(bad, 100)


def test_templates_and_filewords() -> None:
    lines = read_template("subject_filewords.txt")
    assert all("[name]" in line and "[filewords]" in line for line in lines)
    assert read_template("style") and read_template("none")
    assert filewords("", Path("00012-a red cat.png")) == "a red cat"
    assert filewords("given caption", Path("1-x.png")) == "given caption"
    with pytest.raises(ConfigError, match="neither a shipped template"):
        read_template("no_such_template")


def test_initial_vectors_spread_init_tokens() -> None:
    from brushwork.testing.factory import build_components, tokenizer

    encoder = build_components("sd1").text_encoders["text_encoder"]
    table = encoder.get_input_embeddings()
    tok = tokenizer()
    ids = tok("red cat", add_special_tokens=False).input_ids
    vectors = initial_vectors(tok, table, "red cat", 4)
    expected = [ids[i * len(ids) // 4] for i in range(4)]
    assert torch.equal(vectors, table.weight[expected].detach())
    assert torch.count_nonzero(initial_vectors(tok, table, "", 2)) == 0


def test_trains_only_the_embedding_and_writes_a1111_files(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    config = ti_config(tiny_checkpoint, data, tmp_path / "out")
    model = load_model(tiny_checkpoint, device="cpu", precision="fp32", vae="none")
    for module in model.modules().values():
        module.requires_grad_(False)
    before = fingerprint(model)
    outcome = train_embedding(config, tiny_checkpoint, model=model)
    assert fingerprint(model) == before  # nothing but the new vectors was trained
    assert isinstance(
        model.text_encoders["text_encoder"].get_input_embeddings(), torch.nn.Embedding
    )

    out = tmp_path / "out"
    assert outcome.result.final_file == out / "kitty.pt"
    assert [p.name for p in outcome.result.saved_files] == ["kitty-2.pt", "kitty.pt"]
    final = read_embedding(out / "kitty.pt")
    early = read_embedding(out / "kitty-2.pt")
    assert final.source_format == "a1111"
    width = model.text_encoders["text_encoder"].get_input_embeddings().weight.shape[1]
    assert final.vectors["text_encoder"].shape == (2, width)
    assert final.step == 4 and early.step == 2
    assert final.sd_checkpoint is not None and len(final.sd_checkpoint) == 10
    assert final.sd_checkpoint_name == tiny_checkpoint.stem
    table = model.text_encoders["text_encoder"].get_input_embeddings()
    start = initial_vectors(model.tokenizers["text_encoder"], table, "cat", 2)
    assert not torch.equal(final.vectors["text_encoder"], start)  # it learned something
    assert not torch.equal(final.vectors["text_encoder"], early.vectors["text_encoder"])


def test_embedding_loads_in_diffusers(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from brushwork.testing.factory import build_components, tokenizer

    data = flat_image_folder(tmp_path / "data")
    config = ti_config(tiny_checkpoint, data, tmp_path / "out", max_train_steps=1)
    train_embedding(config, tiny_checkpoint)
    trained = read_embedding(tmp_path / "out" / "kitty.pt").vectors["text_encoder"]
    parts = build_components("sd1")
    from diffusers import DDIMScheduler

    pipe = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoders["text_encoder"],
        tokenizer=tokenizer(),
        unet=parts.unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_textual_inversion(str(tmp_path / "out" / "kitty.pt"), token="<kitty>")
    assert pipe.maybe_convert_prompt("<kitty>", pipe.tokenizer) == "<kitty> <kitty>_1"
    ids = pipe.tokenizer.convert_tokens_to_ids(["<kitty>", "<kitty>_1"])
    rows = pipe.text_encoder.get_input_embeddings().weight[ids].detach()
    assert torch.allclose(rows, trained)


def test_safetensors_output_and_resume_matches_one_run(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    once = train_embedding(
        ti_config(tiny_checkpoint, data, tmp_path / "a", save_model_as="safetensors"),
        tiny_checkpoint,
    )
    assert once.result.final_file.name == "kitty.safetensors"
    whole = read_embedding(once.result.final_file)
    assert whole.source_format == "safetensors"

    first = ti_config(
        tiny_checkpoint, data, tmp_path / "b", save_model_as="safetensors", save_state=True
    )
    train_embedding(first, tiny_checkpoint)
    state = tmp_path / "b" / "kitty-2-state"
    assert state.is_dir()
    resumed = train_embedding(
        ti_config(tiny_checkpoint, data, tmp_path / "c", save_model_as="safetensors", resume=state),
        tiny_checkpoint,
    )
    again = read_embedding(resumed.result.final_file)
    assert torch.allclose(again.vectors["text_encoder"], whole.vectors["text_encoder"], atol=1e-6)


def test_bad_options_fail_before_work(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = flat_image_folder(tmp_path / "data")
    with pytest.raises(ConfigError, match="learning-rate schedule"):
        ti_config(tiny_checkpoint, data, tmp_path / "o", learning_rate="fast")
    with pytest.raises(ConfigError, match="num_vectors_per_token"):
        ti_config(tiny_checkpoint, data, tmp_path / "o", num_vectors_per_token=0)


def test_cli_trains_an_embedding_from_a_toml(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brushwork.cli.train_cmd import train_app

    data = flat_image_folder(tmp_path / "data")
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'pretrained_model_name_or_path = "{tiny_checkpoint}"\n'
        f'train_data_dir = "{data}"\noutput_dir = "{tmp_path / "out"}"\n'
        'output_name = "kitty"\nresolution = 64\nmax_train_steps = 2\ninit_word = "cat"\n'
        'num_vectors_per_token = 2\nlearning_rate = "0.01"\nseed = 1\nbogus_option = 3\n',
        encoding="utf-8",
    )
    runner = CliRunner()
    dry = runner.invoke(train_app, ["embedding", "--config", str(toml), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "num_vectors_per_token = 2" in dry.stdout
    assert "bogus_option" in dry.output  # warned about, not applied
    result = runner.invoke(train_app, ["embedding", "--config", str(toml), "--template", "subject"])
    assert result.exit_code == 0, result.output
    assert read_embedding(tmp_path / "out" / "kitty.pt").step == 2
    weights = ["--weights", str(tmp_path / "out" / "kitty.pt")]
    more = runner.invoke(
        train_app,
        ["embedding", "--config", str(toml), *weights, "--max-steps", "3", "--output-dir",
         str(tmp_path / "more")],
    )  # fmt: skip
    assert more.exit_code == 0, more.output
    assert "continued from step 2 to step 3" in more.stdout
    assert read_embedding(tmp_path / "more" / "kitty.pt").step == 3
    done = runner.invoke(train_app, ["embedding", "--config", str(toml), *weights])
    assert done.exit_code == 1 and "already trained to step 2" in done.output
    bad = runner.invoke(train_app, ["embedding", "--config", str(toml), "--learning-rate", "x"])
    assert bad.exit_code == 1 and "learning-rate schedule" in bad.output


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_shipped_template_reads_with_its_placeholders(name: str) -> None:
    lines = read_template(name)
    text = "\n".join(lines)
    assert ("[name]" in text) == (name.startswith(("subject", "style")))
    assert ("[filewords]" in text) == (name.endswith("filewords") or name == "hypernetwork")


def test_more_vectors_than_images_is_warned_about(tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert vector_warnings(3, 4) == []
    (warning,) = vector_warnings(5, 4)
    assert "5 vectors per token for 4 training images" in warning
    data = flat_image_folder(tmp_path / "data", count=2)
    outcome = train_embedding(
        ti_config(
            tiny_checkpoint, data, tmp_path / "o", num_vectors_per_token=3, max_train_steps=1
        ),
        tiny_checkpoint,
    )
    assert any("3 vectors per token for 2 training images" in w for w in outcome.warnings)


def test_previews_without_a_prompt_file_draw_the_last_training_prompt(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    seen: list[tuple[PreviewRequest, torch.Tensor]] = []

    def factory(model: LoadedModel, current: Any) -> Any:
        def preview(request: PreviewRequest) -> list[Image.Image]:
            seen.append((request, current().vectors["text_encoder"].clone()))
            return [Image.new("RGB", (request.width, request.height))]

        return preview

    config = ti_config(tiny_checkpoint, data, tmp_path / "out", sample_every_n_steps=2)
    outcome = train_embedding(config, tiny_checkpoint, preview_factory=factory)
    assert len(seen) == 2  # steps 2 and 4
    templates = read_template("subject_filewords")
    for request, _ in seen:
        assert (request.width, request.height, request.steps) == (64, 64, 20)
        assert any(request.prompt.startswith(t.split("[name]")[0] + "kitty") for t in templates)
    early = read_embedding(tmp_path / "out" / "kitty-2.pt").vectors["text_encoder"]
    assert torch.equal(seen[0][1], early)  # the preview used the embedding as trained so far
    final = read_embedding(outcome.result.final_file).vectors["text_encoder"]
    assert torch.equal(seen[1][1], final)
    assert len(list((tmp_path / "out" / "sample").glob("kitty_000002_00_*.png"))) == 1


def test_gradient_accumulation_makes_fewer_steps_per_epoch(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")  # 4 images, batch 1: 4 batches per epoch
    config = ti_config(
        tiny_checkpoint,
        data,
        tmp_path / "out",
        train_batch_size=1,
        gradient_accumulation_steps=2,
        save_every_n_steps=None,
    )
    outcome = train_embedding(config, tiny_checkpoint)
    rows = outcome.result.log_csv.read_text().splitlines()[1:]
    assert [row.split(",")[:2] for row in rows] == [["1", "1"], ["2", "1"], ["3", "2"], ["4", "2"]]


@pytest.mark.parametrize("method", ["once", "deterministic", "random"])
def test_latent_sampling_methods(tiny_checkpoint: Path, tmp_path: Path, method: str) -> None:
    data = flat_image_folder(tmp_path / "data")
    config = ti_config(tiny_checkpoint, data, tmp_path / "o", latent_sampling_method=method)
    dataset = image_dataset(config, seed=1)
    batch = dataset.batch_at(0, 0)
    model = load_model(tiny_checkpoint, device="cpu", precision="fp32", vae="none")
    source = LatentSource(model, method, seed=3)
    first = source(batch, torch.Generator().manual_seed(1))
    second = source(batch, torch.Generator().manual_seed(2))
    mean = torch.cat(
        [sample_latents(model, image[None], torch.Generator(), mean=True) for image in batch.images]
    )
    is_mean = torch.equal(first, mean * model.vae_scaling_factor)
    assert is_mean is (method == "deterministic")
    assert torch.equal(first, second) is (method != "random")  # kept, or drawn every step


def test_weights_continue_an_existing_embedding(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = flat_image_folder(tmp_path / "data")
    first = train_embedding(ti_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    trained = read_embedding(first.result.final_file).vectors["text_encoder"]
    frozen = ti_config(
        tiny_checkpoint,
        data,
        tmp_path / "b",
        weights=str(first.result.final_file),
        learning_rate="0",
        max_train_steps=5,  # the file is at step 4: one more step
    )
    again = train_embedding(frozen, tiny_checkpoint)
    assert again.result.steps == 5 and again.result.start_step == 4
    continued = read_embedding(again.result.final_file)
    assert continued.step == 5
    assert torch.equal(continued.vectors["text_encoder"], trained)
    wrong = ti_config(
        tiny_checkpoint, data, tmp_path / "c", weights=str(first.result.final_file),
        num_vectors_per_token=3,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="has 2 vectors"):
        train_embedding(wrong, tiny_checkpoint)


def test_trained_embedding_file_is_used_by_brushwork_generation(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    from brushwork.conditioning.embeddings import EmbeddingDatabase
    from brushwork.generation import GenerationRequest, Generator

    data = flat_image_folder(tmp_path / "data")
    config = ti_config(tiny_checkpoint, data, tmp_path / "out", max_train_steps=1)
    outcome = train_embedding(config, tiny_checkpoint)
    model = load_model(tiny_checkpoint, device="cpu", precision="fp32")
    database = EmbeddingDatabase.for_model([outcome.result.final_file], model)
    assert "kitty" in database.loaded
    request = GenerationRequest(prompt="a photo of kitty", width=64, height=64, steps=2, seed=4)
    generator = Generator(model)
    result = generator.generate(request, embeddings=database)
    assert (
        "TI hashes: " in result.generated[0].infotext and "kitty: " in result.generated[0].infotext
    )
    plain = generator.generate(request, embeddings=EmbeddingDatabase())
    first = np.asarray(result.generated[0].image)
    assert not np.array_equal(first, np.asarray(plain.generated[0].image))  # the vectors count


def test_continued_embedding_counts_on_from_its_own_step(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A1111: training goes on from the file's step up to max steps (absolute); the schedule,
    the saved `step`, the `<name>-<step>` copies and the preview names use the absolute step."""
    data = flat_image_folder(tmp_path / "data")
    first = train_embedding(ti_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    start = read_embedding(first.result.final_file)
    assert start.step == 4
    previews: list[PreviewRequest] = []

    def factory(model: LoadedModel, current: Any) -> Any:
        def preview(request: PreviewRequest) -> list[Image.Image]:
            previews.append(request)
            return [Image.new("RGB", (request.width, request.height))]

        return preview

    config = ti_config(
        tiny_checkpoint,
        data,
        tmp_path / "b",
        weights=str(first.result.final_file),
        max_train_steps=7,
        learning_rate="0.05:5, 0.01",  # step 5 at 0.05, steps 6 and 7 at 0.01
        sample_every_n_steps=2,
    )
    outcome = train_embedding(config, tiny_checkpoint, preview_factory=factory)
    out = tmp_path / "b"
    assert (outcome.result.start_step, outcome.result.steps) == (4, 7)
    assert [p.name for p in outcome.result.saved_files] == ["kitty-6.pt", "kitty.pt"]
    final, copy = read_embedding(out / "kitty.pt"), read_embedding(out / "kitty-6.pt")
    assert final.step == 7 and copy.step == 6
    assert not torch.equal(final.vectors["text_encoder"], start.vectors["text_encoder"])
    rows = log_rows(outcome.result.log_csv)
    assert [int(row["step"]) for row in rows] == [5, 6, 7]
    assert [float(row["lr/embedding"]) for row in rows] == [0.05, 0.01, 0.01]
    assert len(previews) == 1  # at step 6 only (step 4 was the other run's)
    assert len(list((out / "sample").glob("kitty_000006_00_*.png"))) == 1


def test_embedding_at_max_steps_is_refused_and_nothing_is_written(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    data = flat_image_folder(tmp_path / "data")
    first = train_embedding(ti_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    folder = tmp_path / "emb"  # the file continued in place: a write would overwrite it
    folder.mkdir()
    shutil.copy(first.result.final_file, folder / "kitty.pt")
    before = folder_snapshot(folder)
    for max_steps, schedule, message in (
        (4, "0.01", "already trained to step 4, at or beyond max_train_steps \\(4\\)"),
        (3, "0.01", "already trained to step 4, at or beyond max_train_steps \\(3\\)"),
        (10, "0.05:3", "at or beyond the end of the learning-rate schedule '0.05:3' \\(step 3\\)"),
    ):
        config = ti_config(
            tiny_checkpoint,
            data,
            folder,
            weights=str(folder / "kitty.pt"),
            max_train_steps=max_steps,
            learning_rate=schedule,
        )
        with pytest.raises(ConfigError, match=message) as raised:
            train_embedding(config, tiny_checkpoint)
        assert "nothing was trained and nothing was written" in str(raised.value)
        assert folder_snapshot(folder) == before  # no config, log or step copy either


def test_continued_embedding_resumes_like_one_run(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = flat_image_folder(tmp_path / "data")
    first = train_embedding(ti_config(tiny_checkpoint, data, tmp_path / "a"), tiny_checkpoint)
    weights = str(first.result.final_file)

    def continued(output: str, **options: Any) -> EmbeddingTrainingConfig:
        return ti_config(
            tiny_checkpoint, data, tmp_path / output, weights=weights, max_train_steps=8,
            learning_rate="0.05:6, 0.01", **options,
        )  # fmt: skip

    whole = train_embedding(continued("b"), tiny_checkpoint)
    train_embedding(continued("c", save_state=True), tiny_checkpoint)
    state = tmp_path / "c" / "kitty-6-state"
    assert state.is_dir()
    resumed = train_embedding(continued("d", resume=state), tiny_checkpoint)
    assert resumed.result.steps == 8
    one, two = read_embedding(whole.result.final_file), read_embedding(resumed.result.final_file)
    assert one.step == two.step == 8
    assert torch.allclose(one.vectors["text_encoder"], two.vectors["text_encoder"], atol=1e-6)
    rows = log_rows(resumed.result.log_csv)
    assert [int(row["step"]) for row in rows] == [5, 6, 7, 8]
    assert [float(row["lr/embedding"]) for row in rows] == [0.05, 0.05, 0.01, 0.01]
    with pytest.raises(ConfigError, match="start_step"):  # the state belongs to a continued run
        train_embedding(
            ti_config(tiny_checkpoint, data, tmp_path / "e", max_train_steps=8,
                      learning_rate="0.05:6, 0.01", resume=state),
            tiny_checkpoint,
        )  # fmt: skip
