"""The built-in shapes tagger (the demo probe) and a BLIP captioner from a local folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from brushwork.core.errors import ModelFileError
from brushwork.datasets.taggers import TagStatus, load_tagger, tag_folder
from brushwork.demo.shapes import ShapeSpec, render

from .tiny_taggers import build_blip

SPECS = {
    "a": ShapeSpec("circle", "red", "white"),
    "b": ShapeSpec("square", "blue", "yellow"),
    "c": ShapeSpec("triangle", "green", "black", fill="striped"),
    "d": ShapeSpec("star", "yellow", "purple"),
}


def test_shapes_tagger_tags_shapes_world_pictures(tmp_path: Path) -> None:
    for name, spec in SPECS.items():
        render(spec, 64).save(tmp_path / f"{name}.png")
    report = tag_folder(tmp_path, load_tagger("shapes"))
    assert report.count(TagStatus.WRITTEN) == 4
    captions = {
        name: set((tmp_path / f"{name}.txt").read_text().strip().split(", ")) for name in SPECS
    }
    assert captions == {
        "a": {"red circle", "white background"},
        "b": {"blue square", "yellow background"},
        "c": {"green triangle", "black background", "striped"},
        "d": {"yellow star", "purple background"},
    }


def test_shapes_tagger_writes_no_shape_for_a_blank_picture(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (245, 245, 245)).save(tmp_path / "blank.png")
    tags = tag_folder(tmp_path, load_tagger("shapes"), dry_run=True).images[0].tags
    assert not any(tag.split()[-1] in {"circle", "square", "triangle", "star"} for tag in tags)


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_blip(tmp_path_factory.mktemp("blip") / "blip-tiny")


def test_blip_folder_captions_like_transformers(blip_folder: Path, tmp_path: Path) -> None:
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    picture = render(SPECS["a"], 64)
    picture.save(tmp_path / "a.png")
    report = tag_folder(tmp_path, load_tagger(str(blip_folder)))
    written = (tmp_path / "a.txt").read_text(encoding="utf-8").strip()

    processor = BlipProcessor.from_pretrained(blip_folder)
    model = BlipForConditionalGeneration.from_pretrained(blip_folder).eval()
    pixels = processor(images=[picture], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        tokens = model.generate(pixel_values=pixels, num_beams=3, min_length=5, max_length=75)
    expected = " ".join(processor.batch_decode(tokens, skip_special_tokens=True)[0].split())
    assert report.images[0].status is TagStatus.WRITTEN
    assert written == expected and written


def test_blip_without_safetensors_is_refused(blip_folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "blip-bin"
    copy.mkdir()
    for item in blip_folder.iterdir():
        if item.suffix != ".safetensors":
            (copy / item.name).write_bytes(item.read_bytes())
    (copy / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelFileError, match=r"no \.safetensors"):
        load_tagger(str(copy))
