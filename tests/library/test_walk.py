"""Walking model folders: natural order, hidden names skipped, links followed, loops survived."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from brushwork.library.walk import display_name, natural_key, walk_folder


def _listing(top: Path) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (listing.path.relative_to(top).as_posix(), listing.file_names)
        for listing in walk_folder(top)
    ]


def test_natural_order_and_hidden_names(tmp_path: Path) -> None:
    for name in ("model10.pt", "model2.pt", "Model1.pt", ".hidden.pt", ".tmp.safetensors.x"):
        (tmp_path / name).write_bytes(b"x")
    for folder in ("sub10", "sub2", ".git"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "inside.pt").write_bytes(b"x")
    assert _listing(tmp_path) == [
        (".", ("Model1.pt", "model2.pt", "model10.pt")),
        ("sub2", ("inside.pt",)),
        ("sub10", ("inside.pt",)),
    ]
    assert sorted(["b10", "b9", "a"], key=natural_key) == ["a", "b9", "b10"]


def test_symlinked_folders_are_followed_and_loops_walked_once(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.pt").write_bytes(b"x")
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "a" / "deep.pt").write_bytes(b"x")
    (top / "a" / "back").symlink_to(top)  # a loop to an ancestor
    (top / "link").symlink_to(elsewhere)
    (top / "loop1").symlink_to(top / "loop2")  # a loop of links: no folder at all
    (top / "loop2").symlink_to(top / "loop1")
    listings = _listing(top)
    assert listings == [
        (".", ("loop1", "loop2")),  # unresolvable links are files, reported by the scan
        ("a", ("deep.pt",)),
        ("link", ("linked.pt",)),
    ]


def test_non_utf8_names_keep_their_bytes(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.safetensors"
    with open(raw, "wb") as handle:
        handle.write(b"x")
    ((_, names),) = _listing(tmp_path)
    (name,) = names
    assert (tmp_path / name).exists()  # the name still opens the file
    assert display_name(name) == "caf\ufffd.safetensors"


def test_an_unreadable_folder_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "ok.pt").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listings = list(walk_folder(tmp_path))
    assert listings[0].file_names == ("ok.pt",)
    assert listings[1].path == locked
    assert listings[1].error == "cannot be read: Permission denied"
