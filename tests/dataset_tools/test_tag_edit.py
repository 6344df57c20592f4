"""Dataset-wide tag edits: each action's caption files, dry runs, and byte-exact undo."""

from __future__ import annotations

from pathlib import Path

import pytest

from brushwork.core.errors import ConfigError
from brushwork.datasets import (
    EditAction,
    SortOrder,
    TagEditRequest,
    edit_dataset_tags,
    feature_tags,
    read_captions,
    tag_counts,
    undo_last,
)

from .conftest import folder_digest, solid

CAPTIONS = {
    "a": b"long_hair , blue eyes,,smile\n",
    "b": b"blue eyes, long_hair, sitting, blue eyes",
    "c": b"long_hair, standing\n",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, caption in CAPTIONS.items():
        solid((8, 8), (200, 0, 0)).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_bytes(caption)
    solid((8, 8), (0, 0, 200)).save(tmp_path / "d.png")  # no caption
    sub = tmp_path / "5_sks"
    sub.mkdir()
    solid((8, 8), (0, 200, 0)).save(sub / "e.png")
    (sub / "e.txt").write_bytes(b"smile, long_hair\nlong_hair, grin\n")  # two wildcard lines
    return tmp_path


def _edit(folder: Path, request: TagEditRequest, *, dry_run: bool = False) -> int:
    dataset = list(read_captions(folder))
    return len(edit_dataset_tags(folder, dataset, request, dry_run=dry_run).changes)


def _texts(folder: Path) -> dict[str, str | None]:
    return {item.image.relative_to(folder).as_posix(): item.text for item in read_captions(folder)}


def test_stats_count_each_tag_once_per_image(folder: Path) -> None:
    counts = tag_counts(list(read_captions(folder)))
    assert counts == {
        "long_hair": 4,
        "blue eyes": 2,
        "smile": 2,
        "grin": 1,
        "sitting": 1,
        "standing": 1,
    }
    assert list(counts)[:3] == ["long_hair", "blue eyes", "smile"]


def test_feature_tags_are_the_common_ones(folder: Path) -> None:
    found = feature_tags(list(read_captions(folder)), 0.5)  # 5 images: more than 2.5
    assert [(t.tag, t.images, t.share) for t in found] == [("long_hair", 4, 0.8)]
    assert [t.tag for t in feature_tags(list(read_captions(folder)), 0.3)] == [
        "long_hair",
        "blue eyes",
        "smile",
    ]


def test_add_front_puts_the_trigger_first_and_creates_captions(folder: Path) -> None:
    assert _edit(folder, TagEditRequest(EditAction.ADD, ("sks",), front=True)) == 5
    texts = _texts(folder)
    assert texts["a.png"] == "sks, long_hair, blue eyes, smile\n"
    assert texts["b.png"] == "sks, blue eyes, long_hair, sitting, blue eyes"
    assert texts["d.png"] == "sks\n"  # created
    assert texts["5_sks/e.png"] == "sks, smile, long_hair\nsks, long_hair, grin\n"
    # already first everywhere: nothing changes; an existing tag moves to the front
    assert _edit(folder, TagEditRequest(EditAction.ADD, ("sks",), front=True)) == 0
    _edit(folder, TagEditRequest(EditAction.ADD, ("smile",), front=True))
    assert _texts(folder)["a.png"] == "smile, sks, long_hair, blue eyes\n"


def test_add_appends_where_missing(folder: Path) -> None:
    _edit(folder, TagEditRequest(EditAction.ADD, ("smile", "outdoors")))
    texts = _texts(folder)
    assert texts["a.png"] == "long_hair, blue eyes, smile, outdoors\n"
    assert texts["c.png"] == "long_hair, standing, smile, outdoors\n"


def test_remove_exact_and_by_pattern(folder: Path) -> None:
    _edit(folder, TagEditRequest(EditAction.REMOVE, ("blue eyes", "Smile")))
    texts = _texts(folder)
    assert texts["a.png"] == "long_hair, smile\n"  # exact match: `Smile` is another tag
    assert texts["b.png"] == "long_hair, sitting"
    assert texts["c.png"] == CAPTIONS["c"].decode()  # untouched: byte for byte
    _edit(folder, TagEditRequest(EditAction.REMOVE, ("*_hair", "s*ing"), pattern=True))
    texts = _texts(folder)
    assert texts["b.png"] == ""
    assert texts["c.png"] == ""  # every tag removed: an empty caption
    assert texts["5_sks/e.png"] == "smile\ngrin\n"


def test_replace(folder: Path) -> None:
    _edit(folder, TagEditRequest(EditAction.REPLACE, ("long_hair", "long hair")))
    assert _texts(folder)["c.png"] == "long hair, standing\n"
    _edit(folder, TagEditRequest(EditAction.REPLACE, ("standing", "standing, long hair, solo")))
    assert _texts(folder)["c.png"] == "long hair, standing, solo\n"
    _edit(folder, TagEditRequest(EditAction.REPLACE, ("solo", "")))
    assert _texts(folder)["c.png"] == "long hair, standing\n"


def test_dedupe_normalises_every_caption(folder: Path) -> None:
    assert _edit(folder, TagEditRequest(EditAction.DEDUPE)) == 2
    texts = _texts(folder)
    assert texts["a.png"] == "long_hair, blue eyes, smile\n"
    assert texts["b.png"] == "blue eyes, long_hair, sitting"


def test_sort_respects_keep_tokens(folder: Path) -> None:
    request = TagEditRequest(EditAction.SORT, order=SortOrder.NAME, keep_tokens=1)
    _edit(folder, request)
    assert _texts(folder)["b.png"] == "blue eyes, blue eyes, long_hair, sitting"
    assert _texts(folder)["5_sks/e.png"] == "smile, long_hair\nlong_hair, grin\n"
    _edit(folder, TagEditRequest(EditAction.SORT, order=SortOrder.FREQUENCY))
    # long_hair (4 images) before blue eyes and smile (2 each, by name); a.png is in that
    # order already, so it is not rewritten (only dedupe normalises untouched files)
    assert _texts(folder)["b.png"] == "long_hair, blue eyes, blue eyes, sitting"
    assert (folder / "a.txt").read_bytes() == CAPTIONS["a"]
    assert _texts(folder)["5_sks/e.png"] == "long_hair, smile\nlong_hair, grin\n"


def test_dry_run_writes_nothing(folder: Path) -> None:
    before = folder_digest(folder)
    for request in (
        TagEditRequest(EditAction.ADD, ("sks",), front=True),
        TagEditRequest(EditAction.REMOVE, ("*",), pattern=True),
        TagEditRequest(EditAction.DEDUPE),
    ):
        assert _edit(folder, request, dry_run=True) > 0
    assert folder_digest(folder) == before


def test_undo_restores_bytes_level_by_level(folder: Path) -> None:
    original = folder_digest(folder)
    _edit(folder, TagEditRequest(EditAction.ADD, ("sks",), front=True))  # creates d.txt
    after_add = {k: v for k, v in folder_digest(folder).items() if not k.startswith(".")}
    _edit(folder, TagEditRequest(EditAction.DEDUPE))
    result = undo_last(folder)
    assert result.label == "dedupe" and result.remaining_levels == 1
    visible = {k: v for k, v in folder_digest(folder).items() if not k.startswith(".")}
    assert visible == after_add
    result = undo_last(folder)
    assert result.label == "add sks --front"
    assert [p.name for p in result.deleted] == ["d.txt"]
    visible = {k: v for k, v in folder_digest(folder).items() if not k.startswith(".")}
    assert visible == original
    with pytest.raises(ConfigError, match="nothing to undo"):
        undo_last(folder)


def test_undo_refuses_to_lose_later_hand_edits(folder: Path) -> None:
    _edit(folder, TagEditRequest(EditAction.REMOVE, ("smile",)))
    (folder / "a.txt").write_text("edited by hand", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"a\.txt"):
        undo_last(folder)
    undo_last(folder, force=True)
    assert (folder / "a.txt").read_bytes() == CAPTIONS["a"]


def test_bad_requests_are_named() -> None:
    with pytest.raises(ConfigError, match="exactly two"):
        TagEditRequest(EditAction.REPLACE, ("only-one",))
    with pytest.raises(ConfigError, match="takes no tags"):
        TagEditRequest(EditAction.DEDUPE, ("x",))
