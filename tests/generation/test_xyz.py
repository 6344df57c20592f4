"""The X/Y/Z plot on the tiny SD1 library: cells, labels, records, LoRA epochs, model loads."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.core.settings import Settings
from brushwork.formats.lora import write_lora
from brushwork.generation import Generator, request_from_infotext
from brushwork.generation import networks as networks_module
from brushwork.generation.imaging import image_to_tensor
from brushwork.generation.xyz import XYZPlan, XYZProgress, XYZResult, plan_xyz, run_xyz
from brushwork.generation.xyz_axes import Axis, parse_axis
from brushwork.generation.xyz_draw import legend
from brushwork.generation.xyz_epochs import epoch_axis, find_epoch_files
from brushwork.generation.xyz_output import draw_xyz, read_xyz_record, save_xyz, xyz_infotext
from brushwork.library.catalog import Library
from brushwork.loading import LoadedModel, load_model
from brushwork.loading.vae import VaeSpec
from brushwork.prompt import parse_infotext, read_image_infotext
from brushwork.testing.factory import (
    Components,
    build_components,
    write_checkpoint_file,
    write_vae_file,
)

from .conftest import SIZE, random_lora, small_request


def _axis(type_name: str, text: str) -> Axis:
    axis = parse_axis(type_name, text)
    assert axis is not None
    return axis


def _loader(model: LoadedModel) -> tuple[Callable[[Path, VaeSpec], LoadedModel], list[Path]]:
    loads: list[Path] = []

    def load(path: Path, vae: VaeSpec) -> LoadedModel:
        loads.append(path)
        return model

    return load, loads


def _run(plan: XYZPlan, model: LoadedModel) -> XYZResult:
    return run_xyz(plan, _loader(model)[0])


def _same(first: Image.Image, second: Image.Image) -> bool:
    return torch.equal(image_to_tensor(first), image_to_tensor(second))


def test_a_steps_by_cfg_grid_records_every_cell(
    sd1: LoadedModel, library: Library, checkpoint_path: Path, tmp_path: Path
) -> None:
    x, y = _axis("steps", "2,3"), _axis("cfg", "5, 9")
    plan = plan_xyz(small_request(seed=-1), x=x, y=y, checkpoint=checkpoint_path, library=library)
    progress: list[tuple[int, int]] = []
    result = run_xyz(plan, _loader(sd1)[0], progress=lambda p: progress.append((p.done, p.total)))
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    (path,) = save_xyz(result, tmp_path / "out")
    assert path.parent.parent == tmp_path / "out" / "txt2img-grids"
    assert path.name == "xyz_grid-0000.png"
    data = path.read_bytes()
    with Image.open(path) as opened:
        grid = opened.convert("RGB")
    layout = legend(SIZE, SIZE, x.labels, y.labels)
    assert layout.pad_left == SIZE * 3 // 4 and layout.pad_top > 0
    assert grid.size == (layout.pad_left + 2 * SIZE, layout.pad_top + 2 * SIZE)

    record = read_xyz_record(data)
    assert record is not None and record == json.loads(path.with_suffix(".json").read_text())
    assert [a["labels"] for a in record["axes"]] == [
        ["Steps: 2", "Steps: 3"],
        ["CFG Scale: 5.0", "CFG Scale: 9.0"],
    ]
    cells = record["cells"]
    assert [(c["x"], c["y"]) for c in cells] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    parameters = read_image_infotext(data)
    assert parameters == xyz_infotext(cells[0]["infotext"], plan.axes)
    fields = parse_infotext(parameters or "")
    assert fields["Script"] == "X/Y/Z plot" and fields["X Values"] == "2,3"
    assert {k: v for k, v in fields.items() if not k.startswith(("Script", "X ", "Y "))} == (
        parse_infotext(cells[0]["infotext"])
    )
    seeds = {seed for c in cells for seed in c["seeds"]}
    assert len(seeds) == 1  # -1 drawn once, used by every cell

    generator = Generator(sd1, library=library)
    for cell in cells:
        request, _ = request_from_infotext(cell["infotext"])
        assert (request.steps, request.cfg_scale) == (
            [2, 3][cell["x"]],
            [5.0, 9.0][cell["y"]],
        )
        again = generator.generate(request).images[0]
        assert _same(grid.crop(tuple(cell["box"])), again)


def test_prompt_search_replace_changes_prompt_and_negative(
    sd1: LoadedModel, checkpoint_path: Path
) -> None:
    request = small_request(prompt="a red cube", negative_prompt="red blur")
    plan = plan_xyz(request, x=_axis("Prompt S/R", "red, blue"), checkpoint=checkpoint_path)
    first, second = (cell.request for cell in plan.cells)
    assert (first.prompt, first.negative_prompt) == ("a red cube", "red blur")
    assert (second.prompt, second.negative_prompt) == ("a blue cube", "blue blur")
    result = _run(plan, sd1)
    cells = [cell for cell in result.cells if cell is not None]
    assert cells[1].infotext.startswith("a blue cube\nNegative prompt: blue blur\n")
    assert not _same(cells[0].generated[0].image, cells[1].generated[0].image)
    with pytest.raises(ConfigError, match="Prompt S/R did not find 'green'"):
        plan_xyz(request, x=_axis("Prompt S/R", "green, blue"), checkpoint=checkpoint_path)


def _write_run(folder: Path, components: Components) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for seed, stem in enumerate(["look-000002", "look", "look-000001", "other-000001"]):
        path = folder / f"{stem}.safetensors"
        write_lora(
            path,
            random_lora(components, seed=seed),
            family="sd1",
            unet_config=dict(components.unet.config),
        )
        paths.append(path)
    (folder / "look-000001-state").mkdir()
    return paths


def test_lora_epochs_by_strength(
    sd1: LoadedModel,
    sd1_components: Components,
    library: Library,
    checkpoint_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = tmp_path / "run"
    _write_run(run, sd1_components)
    files = find_epoch_files(run / "look.safetensors")
    assert [f.name for f in files] == ["look-000001", "look-000002", "look"]
    assert find_epoch_files(str(run / "look-*.safetensors"))[-1].epoch == 2
    with pytest.raises(ConfigError, match="several runs: look, other"):
        find_epoch_files(run)

    reads: list[Path] = []
    real_read = networks_module.read_lora
    monkeypatch.setattr(
        networks_module, "read_lora", lambda path, **kw: reads.append(path) or real_read(path, **kw)
    )
    rows = epoch_axis(files)
    plan = plan_xyz(
        small_request(),
        x=_axis("lora-strength", "0, 0.5, 1"),
        y=rows,
        checkpoint=checkpoint_path,
        library=library,
    )
    assert plan.labels(1) == ("LoRA: look-000001", "LoRA: look-000002", "LoRA: look")
    result = _run(plan, sd1)
    assert len(result.loads) == 1  # LoRA changes never reload the checkpoint
    assert sorted(p.name for p in reads) == sorted(f.path.name for f in files)  # once each
    base = Generator(sd1).generate(small_request()).images[0]
    cells = [cell for cell in result.cells if cell is not None]
    for cell in cells:
        image = cell.generated[0].image
        assert _same(image, base) == (cell.cell.x == 0)
        assert "Lora hashes" in cell.infotext
    assert 'Extra LoRAs: "look-000002:0.5"' in cells[4].infotext

    grid = draw_xyz(result)[0]
    assert grid.record["cells"][4]["infotexts"] == [cells[4].infotext]
    request, _ = request_from_infotext(cells[4].infotext)
    again = Generator(sd1, library=plan.library).generate(request).images[0]
    assert _same(again, cells[4].generated[0].image)


@pytest.fixture
def two_checkpoints(tmp_path: Path, sd1_components: Components) -> Library:
    root = tmp_path / "root"
    folder = root / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_checkpoint_file(sd1_components, folder / "alpha.safetensors")
    write_checkpoint_file(build_components("sd1", seed=7), folder / "beta.safetensors")
    opened = Library.open(Settings(data_dir=tmp_path / "data"), [root])
    yield opened  # type: ignore[misc]
    opened.close()


def test_a_checkpoint_axis_loads_each_checkpoint_once(two_checkpoints: Library) -> None:
    alpha = two_checkpoints.find("alpha").path
    loads: list[Path] = []

    def load(path: Path, vae: VaeSpec) -> LoadedModel:
        loads.append(path)
        return load_model(path, device="cpu", precision="fp32", vae=vae)

    plan = plan_xyz(
        small_request(steps=2),
        x=_axis("checkpoint", "alpha, beta"),
        y=_axis("seed", "1, 2"),
        checkpoint=alpha,
        library=two_checkpoints,
    )
    result = run_xyz(plan, load)
    assert [p.name for p in loads] == ["alpha.safetensors", "beta.safetensors"]
    assert result.loads == tuple(loads)
    cells = [cell for cell in result.cells if cell is not None]
    assert [("Model: alpha" in c.infotext, "Seed: 2" in c.infotext) for c in cells] == [
        (True, False),
        (False, False),
        (True, True),
        (False, True),
    ]
    assert not _same(cells[0].generated[0].image, cells[1].generated[0].image)


def test_a_z_axis_makes_sub_grids_and_a_combined_image(
    sd1: LoadedModel, checkpoint_path: Path, tmp_path: Path
) -> None:
    plan = plan_xyz(
        small_request(steps=2),
        x=_axis("cfg", "4,8"),
        z=_axis("seed", "1,2"),
        checkpoint=checkpoint_path,
        margin=2,
    )
    main, first, second = draw_xyz(_run(plan, sd1))
    assert main.record["z"] is None and (first.record["z"], second.record["z"]) == (0, 1)
    assert first.image.size == (
        2 * SIZE + 2,
        legend(SIZE, SIZE, ["CFG Scale: 4.0"], [""]).pad_top + SIZE,
    )
    assert main.image.width == 2 * first.image.width
    assert main.image.height > first.image.height  # the Z titles
    assert "Seed: 2" in second.infotext and "Z Type: Seed" in second.infotext
    assert 'Fixed Z Values: "1, 2"' in main.infotext
    box = main.record["cells"][3]["box"]
    assert (box[0], box[1]) >= (first.image.width, main.image.height - first.image.height)


def test_unknown_names_fail_before_anything_is_drawn(
    library: Library, checkpoint_path: Path
) -> None:
    with pytest.raises(ConfigError, match="Checkpoint name axis: no model named 'tiyn'") as info:
        plan_xyz(
            small_request(), x=_axis("checkpoint", "tiny, tiyn"), checkpoint=checkpoint_path,
            library=library,
        )  # fmt: skip
    assert "did you mean 'tiny'" in str(info.value)
    with pytest.raises(ConfigError, match=r"LoRA axis: no model named 'styel'.*'style'"):
        plan_xyz(
            small_request(), x=_axis("lora", "styel"), checkpoint=checkpoint_path, library=library
        )
    with pytest.raises(ConfigError, match="unknown sampler 'Euler b'"):
        plan_xyz(small_request(), x=_axis("sampler", "Euler, Euler b"), checkpoint=checkpoint_path)
    with pytest.raises(ConfigError, match=r"cell X 2.*steps must be a positive integer"):
        plan_xyz(small_request(), x=_axis("steps", "2, 0"), checkpoint=checkpoint_path)
    with pytest.raises(ConfigError, match="LoRA strength axis needs the LoRA to vary"):
        plan_xyz(small_request(), x=_axis("lora-strength", "0,1"), checkpoint=checkpoint_path)
    with pytest.raises(ConfigError, match="Denoising axis changes img2img and hires fix only"):
        plan_xyz(small_request(), x=_axis("denoising", "0.5"), checkpoint=checkpoint_path)
    with pytest.raises(ConfigError, match="too large"):
        plan_xyz(
            small_request(width=4096, height=4096), x=_axis("steps", "1-20"),
            checkpoint=checkpoint_path,
        )  # fmt: skip


def test_a_vae_axis_swaps_the_vae_without_reloading(checkpoint_path: Path, tmp_path: Path) -> None:
    vae_file = write_vae_file(build_components("sd1", seed=5), tmp_path / "other.vae.pt")
    load = _fresh_loader()
    plan = plan_xyz(
        small_request(steps=2),
        x=_axis("vae", f"none, {vae_file}, none"),
        checkpoint=checkpoint_path,
    )
    result = run_xyz(plan, load)
    assert len(result.loads) == 1
    first, other, again = (cell.generated[0] for cell in result.cells if cell is not None)
    assert "VAE: other.vae.pt" in other.infotext and "VAE:" not in first.infotext
    assert not _same(first.image, other.image)
    assert _same(first.image, again.image)  # the checkpoint's own VAE restored exactly


def _fresh_loader() -> Callable[[Path, VaeSpec], LoadedModel]:
    def load(path: Path, vae: VaeSpec) -> LoadedModel:
        return load_model(path, device="cpu", precision="fp32", vae=vae)

    return load


def test_img2img_denoising_axis(sd1: LoadedModel, checkpoint_path: Path, tmp_path: Path) -> None:
    init = Image.new("RGB", (SIZE, SIZE), (200, 40, 40))
    plan = plan_xyz(
        small_request(init_images=(init,)),
        x=_axis("denoising", "0.3, 0.9"),
        checkpoint=checkpoint_path,
    )
    result = _run(plan, sd1)
    low, high = (cell.generated[0] for cell in result.cells if cell is not None)
    assert "Denoising strength: 0.3" in low.infotext and "Denoising strength: 0.9" in high.infotext
    assert not _same(low.image, high.image)
    (path,) = save_xyz(result, tmp_path)
    assert path.parent.parent.name == "img2img-grids"


def test_a_stopped_plot_keeps_the_cells_drawn(sd1: LoadedModel, checkpoint_path: Path) -> None:
    cancel = threading.Event()
    plan = plan_xyz(small_request(), x=_axis("seed", "1,2,3"), checkpoint=checkpoint_path)

    def stop_after_one(event: XYZProgress) -> None:
        if event.done == 1:
            cancel.set()

    result = run_xyz(plan, _loader(sd1)[0], progress=stop_after_one, cancel=cancel)
    assert result.interrupted
    assert [cell is not None for cell in result.cells] == [True, False, False]
    (grid,) = draw_xyz(result)
    assert grid.record["interrupted"] is True
    assert [("infotext" in cell) for cell in grid.record["cells"]] == [True, False, False]
    assert grid.image.width == 3 * SIZE  # no Y axis: no left margin


def test_a_batch_per_cell_is_drawn_as_its_grid(sd1: LoadedModel, checkpoint_path: Path) -> None:
    plan = plan_xyz(
        small_request(batch_size=2, seed=10), x=_axis("cfg", "4, 8"), checkpoint=checkpoint_path
    )
    (grid,) = draw_xyz(_run(plan, sd1))
    first, second = grid.record["cells"]
    assert first["seeds"] == second["seeds"] == [10, 11]
    assert len(first["infotexts"]) == 2 and "Seed: 11," in first["infotexts"][1]
    left, top, right, bottom = first["box"]
    assert (right - left, bottom - top) == (2 * SIZE, SIZE)
