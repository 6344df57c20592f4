"""Library integration: inputs by name or hash, outputs into the right folder, listed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from brushwork.core.kinds import ModelKind
from brushwork.core.settings import Settings
from brushwork.library.catalog import Library
from brushwork.modeltools.locate import ModelLocator
from brushwork.modeltools.merge import MergeRequest, merge_checkpoints


@pytest.fixture
def library_root(tmp_path: Path, sd1_files: list[Path]) -> Path:
    root = tmp_path / "webui"
    checkpoints = root / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    for path in sd1_files[:2]:
        shutil.copy(path, checkpoints / path.name)
    return root


@pytest.fixture
def locator(tmp_path: Path, library_root: Path) -> ModelLocator:
    return ModelLocator(Settings(data_dir=tmp_path / "data"), (library_root,))


def test_inputs_are_found_by_name_path_or_hash(
    locator: ModelLocator, library_root: Path, sd1_files: list[Path]
) -> None:
    by_name = locator.find("a", ModelKind.CHECKPOINT)
    assert by_name.path == library_root / "models" / "Stable-diffusion" / "a.safetensors"
    assert by_name.name == "a.safetensors" and by_name.sha256 is not None
    by_hash = locator.find(by_name.sha256[:10], ModelKind.CHECKPOINT)
    assert by_hash.path == by_name.path
    by_path = locator.find(str(sd1_files[2]), ModelKind.CHECKPOINT)
    assert by_path.path == sd1_files[2] and by_path.sha256 is None


def test_outputs_go_to_the_library_folder_of_their_kind_or_where_a_path_says(
    locator: ModelLocator, library_root: Path, tmp_path: Path
) -> None:
    models = library_root / "models"
    assert locator.output("mix", ModelKind.CHECKPOINT, "x") == (
        models / "Stable-diffusion" / "mix.safetensors"
    )
    assert locator.output(None, ModelKind.LORA, "style-lora") == models / "Lora" / (
        "style-lora.safetensors"
    )
    assert (models / "Lora").is_dir()  # created, A1111's name
    beside = tmp_path / "elsewhere" / "style.safetensors"
    assert locator.output(None, ModelKind.LORA, "style-dim8", beside=beside) == (
        beside.parent / "style-dim8.safetensors"
    )
    assert locator.output("./out/m.ckpt", ModelKind.CHECKPOINT, "x") == Path("out/m.ckpt")


def test_a_merged_model_appears_in_the_library_with_its_description(
    locator: ModelLocator, tmp_path: Path, library_root: Path
) -> None:
    a = locator.find("a", ModelKind.CHECKPOINT)
    b = locator.find("b", ModelKind.CHECKPOINT)
    output = locator.output("a-b-mix", ModelKind.CHECKPOINT, "x")
    merge_checkpoints(MergeRequest(a, b, output, alpha=0.5))
    with Library.open(Settings(data_dir=tmp_path / "data"), [library_root]) as library:
        entry = library.find("a-b-mix", kind=ModelKind.CHECKPOINT)
    assert entry.kind is ModelKind.CHECKPOINT and entry.problems == ()
    assert entry.sidecars.description == "0.5(a) + 0.5(b)"
    assert entry.sidecars.user is not None and entry.sidecars.user.sd_version == "SD1"
