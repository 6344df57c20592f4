"""Training folders in kohya's layout: `<repeats>_<name>/NNNN.png` with `NNNN.txt` captions."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from brushwork.core.errors import ConfigError
from brushwork.demo.dataset import write_dataset
from brushwork.demo.shapes import BASE_SHAPES, HELD_OUT_SHAPES, caption, render


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_pictures_with_captions_in_kohya_layout(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path, BASE_SHAPES, 6, seed=3, repeats=5)
    assert dataset.folder == tmp_path / "5_shapes"
    assert sorted(p.name for p in dataset.folder.iterdir()) == [
        f"{i:04d}.{ext}" for i in range(6) for ext in ("png", "txt")
    ]
    for item in dataset.items:
        assert item.caption_file.read_text(encoding="utf-8") == caption(item.spec)
        with Image.open(item.image) as image:
            assert image.size == (64, 64)
            assert image.convert("RGB").tobytes() == render(item.spec, 64).tobytes()
    assert {item.spec.shape for item in dataset.items} == set(BASE_SHAPES)


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", BASE_SHAPES, 4, seed=11)
    again = write_dataset(tmp_path / "b", BASE_SHAPES, 4, seed=11)
    other = write_dataset(tmp_path / "c", BASE_SHAPES, 4, seed=12)
    assert _files(first.folder) == _files(again.folder)
    assert _files(first.folder) != _files(other.folder)


def test_trigger_word_replaces_the_shape_name(tmp_path: Path) -> None:
    dataset = write_dataset(
        tmp_path,
        ["heart"],
        3,
        seed=0,
        size=32,
        trigger="sks",
        colors=["red"],
        backgrounds=["white"],
    )
    assert dataset.folder.name == "10_sks"
    assert [item.caption for item in dataset.items] == ["a red sks on a white background"] * 3
    assert all(item.spec.shape == "heart" for item in dataset.items)


def test_held_out_shapes_can_be_written(tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path, HELD_OUT_SHAPES, 3, name="held out")
    assert dataset.folder.name == "10_held out"
    assert [item.spec.shape for item in dataset.items] == list(HELD_OUT_SHAPES)


def test_refuses_a_folder_that_holds_files_unless_overwrite(tmp_path: Path) -> None:
    write_dataset(tmp_path, BASE_SHAPES, 2, seed=0)
    with pytest.raises(ConfigError, match="already holds files"):
        write_dataset(tmp_path, BASE_SHAPES, 2, seed=1)
    rewritten = write_dataset(tmp_path, BASE_SHAPES, 2, seed=1, overwrite=True)
    assert rewritten.items[0].caption_file.read_text(encoding="utf-8") == rewritten.items[0].caption


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"name": "a/b"}, "cannot name"), ({"repeats": 0}, "repeats"), ({"trigger": " "}, "trigger")],
)
def test_bad_arguments_say_what_is_wrong(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        write_dataset(tmp_path, BASE_SHAPES, 2, **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
