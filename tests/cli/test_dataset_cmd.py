"""`brushwork dataset prepare | tag | tags` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from brushwork.cli.main import app
from brushwork.demo.shapes import ShapeSpec, render

# tests/datasets is importable as the package `datasets` (tests/ is on sys.path)
from dataset_tools.tiny_taggers import build_wd14

runner = CliRunner()


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".brushwork-tags" not in p.parts
    }


def test_prepare_reports_kept_and_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    render(ShapeSpec("circle", "red", "white"), 96).save(src / "a.png")
    (src / "a.txt").write_text("red circle", encoding="utf-8")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing")
    Image.new("RGB", (16, 16)).save(src / "tiny.png")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["dataset", "prepare", str(src), str(out), "--size", "100x100", "--flip", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["size"] == [128, 128]
    assert report["counts"] == {"kept": 1, "written": 2, "skipped": 2}
    reasons = {Path(item["source"]).name: item["reason"] for item in report["skipped"]}
    assert reasons == {"broken.jpg": "broken", "tiny.png": "too_small"}
    assert Image.open(out / "a-flipped.png").size == (128, 128)
    assert (out / "a-flipped.txt").read_text(encoding="utf-8") == "red circle"

    text = runner.invoke(app, ["dataset", "prepare", str(src), str(tmp_path / "o2")])
    assert text.exit_code == 0, text.output
    assert "skip  [too_small]" in text.output and "1 kept" in text.output


def test_prepare_refuses_to_write_over_the_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dataset", "prepare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 1
    assert "never overwritten" in result.output


def test_tag_with_the_shapes_tagger_then_edit_and_undo(tmp_path: Path) -> None:
    render(ShapeSpec("circle", "red", "white"), 64).save(tmp_path / "a.png")
    render(ShapeSpec("square", "blue", "white"), 64).save(tmp_path / "b.png")
    tagged = runner.invoke(app, ["dataset", "tag", str(tmp_path), "--tagger", "shapes"])
    assert tagged.exit_code == 0, tagged.output
    assert "wrote 2 caption files" in tagged.output
    stats = runner.invoke(app, ["dataset", "tags", str(tmp_path), "stats", "--json"])
    assert json.loads(stats.output) == {"white background": 2, "blue square": 1, "red circle": 1}

    before = _files(tmp_path)
    dry = runner.invoke(
        app, ["dataset", "tags", str(tmp_path), "add", "sks", "--front", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert "a.txt: " in dry.output and "-> sks, " in dry.output
    assert _files(tmp_path) == before

    added = runner.invoke(app, ["dataset", "tags", str(tmp_path), "add", "sks", "--front"])
    assert added.exit_code == 0, added.output
    assert "keep_tokens = 1" in added.output
    assert (tmp_path / "a.txt").read_text().startswith("sks, ")
    undone = runner.invoke(app, ["dataset", "tags", str(tmp_path), "undo", "--json"])
    assert json.loads(undone.output)["undone"] == "add sks --front"
    assert _files(tmp_path) == before
    runner.invoke(app, ["dataset", "tags", str(tmp_path), "undo"])  # the tagging run
    assert sorted(_files(tmp_path)) == ["a.png", "b.png"]


def test_tag_options_reach_the_wd14_tagger(tmp_path: Path) -> None:
    tagger = build_wd14(tmp_path / "models" / "taggers" / "wd-tiny")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(images / "red.png")
    args = ["dataset", "tag", str(images), "--tagger", str(tagger), "--undesired", "1girl"]
    args += ["--always-first", "solo", "--underscores", "keep", "--ext", ".caption", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["images"][0]["tags"] == ["solo", "long_hair", "^_^"]
    assert (images / "red.caption").read_text() == "solo, long_hair, ^_^\n"
    args = ["dataset", "tag", str(images), "--tagger", "wd-tiny", "--root", str(tmp_path)]
    by_name = runner.invoke(app, [*args, "--threshold", "0.6", "--overwrite"])
    assert by_name.exit_code == 0, by_name.output
    assert (images / "red.txt").read_text() == "long hair, 1girl\n"


def test_tagger_errors(tmp_path: Path) -> None:
    folder = tmp_path / "broken-tagger"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    result = runner.invoke(app, ["dataset", "tag", str(tmp_path), "--tagger", str(folder)])
    assert result.exit_code == 2
    assert "selected_tags.csv" in result.output
    both = runner.invoke(
        app, ["dataset", "tag", str(tmp_path), "--tagger", "shapes", "--overwrite", "--append"]
    )
    assert both.exit_code == 1 and "exclude each other" in both.output


def test_tags_actions_from_the_command_line(tmp_path: Path) -> None:
    for name, caption in {"a": "long_hair, smile", "b": "long_hair, sad", "c": "cat"}.items():
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.txt").write_text(caption, encoding="utf-8")
    features = runner.invoke(
        app, ["dataset", "tags", str(tmp_path), "feature-tags", "--min-share", "0.5", "--json"]
    )
    assert [item["tag"] for item in json.loads(features.output)] == ["long_hair"]
    removed = runner.invoke(
        app, ["dataset", "tags", str(tmp_path), "remove", "long_*", "--pattern", "--json"]
    )
    changes = json.loads(removed.output)["changes"]
    assert sorted(Path(c["caption_file"]).name for c in changes) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "smile"
    replaced = runner.invoke(app, ["dataset", "tags", str(tmp_path), "replace", "sad", "crying"])
    assert replaced.exit_code == 0 and (tmp_path / "b.txt").read_text() == "crying"
    shown = runner.invoke(app, ["dataset", "tags", str(tmp_path), "show"])
    assert f"{tmp_path / 'c.png'}: cat" in shown.output
    wrong = runner.invoke(app, ["dataset", "tags", str(tmp_path), "replace", "only-old"])
    assert wrong.exit_code == 1 and "exactly two" in wrong.output
    sorted_ = runner.invoke(app, ["dataset", "tags", str(tmp_path), "sort", "--by", "name"])
    assert sorted_.exit_code == 0, sorted_.output
