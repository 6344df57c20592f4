"""read_image_infotext: where A1111 stores the infotext in PNG, JPEG, WEBP and GIF files."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from brushwork.prompt import format_infotext, parse_infotext, read_image_infotext

INFOTEXT = format_infotext(
    "a cat, (wearing a hat:1.2), 日本語",
    "blurry",
    {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 1, "Size": "8x8"},
)
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def image_bytes(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, fmt, **options)
    return buffer.getvalue()


def exif_with_comment(raw: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0131] = "brushwork tests"  # Software; Pillow skips an EXIF block without main tags
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = raw
    return exif


def png_with(text: str, *, itxt: bool = False) -> bytes:
    info = PngImagePlugin.PngInfo()
    if itxt:
        info.add_itxt("parameters", text, zip=True)
    else:
        info.add_text("parameters", text)
    return image_bytes("PNG", pnginfo=info)


def test_png_parameters_text_chunk() -> None:
    assert read_image_infotext(png_with(INFOTEXT)) == INFOTEXT
    assert read_image_infotext(png_with(INFOTEXT, itxt=True)) == INFOTEXT


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_in_piexif_unicode_encoding(fmt: str) -> None:
    raw = b"UNICODE\0" + INFOTEXT.encode("utf-16-be")
    data = image_bytes(fmt, exif=exif_with_comment(raw))
    assert read_image_infotext(data) == INFOTEXT
    assert parse_infotext(read_image_infotext(data) or "")["Seed"] == "1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"ASCII\0\0\0plain text", "plain text"),
        (b"JIS\0\0\0\0\0" + "日本".encode("shift_jis"), "日本"),
        (b"\0" * 8 + "utf-8 é".encode(), "utf-8 é"),
        ("no prefix é".encode(), "no prefix é"),
    ],
)
def test_other_user_comment_encodings(raw: bytes, expected: str) -> None:
    assert read_image_infotext(image_bytes("JPEG", exif=exif_with_comment(raw))) == expected


def test_exif_comment_wins_over_png_parameters_but_an_empty_one_does_not() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "from png")
    with_comment = exif_with_comment(b"UNICODE\0" + "from exif".encode("utf-16-be"))
    assert read_image_infotext(image_bytes("PNG", pnginfo=info, exif=with_comment)) == "from exif"
    empty = exif_with_comment(b"UNICODE\0")
    assert read_image_infotext(image_bytes("PNG", pnginfo=info, exif=empty)) == "from png"


def test_gif_and_jpeg_comments() -> None:
    assert read_image_infotext(image_bytes("GIF", comment=INFOTEXT.encode())) == INFOTEXT
    assert read_image_infotext(image_bytes("JPEG", comment=INFOTEXT.encode())) == INFOTEXT


def test_images_without_infotext() -> None:
    assert read_image_infotext(image_bytes("PNG")) is None
    assert read_image_infotext(image_bytes("JPEG")) is None
    assert read_image_infotext(image_bytes("JPEG", exif=Image.Exif())) is None


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 10])
def test_bytes_that_are_not_an_image_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="image"):
        read_image_infotext(data)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damage it reads
@settings(max_examples=150, deadline=None)
@given(cut=st.integers(0, 400), junk=st.binary(max_size=40))
def test_damaged_files_give_text_none_or_value_error(cut: int, junk: bytes) -> None:
    source = (
        png_with(INFOTEXT)
        if cut % 2
        else image_bytes("JPEG", exif=exif_with_comment(b"UNICODE\0x"))
    )
    data = source[:cut] + junk + source[cut + len(junk) :]
    try:
        result = read_image_infotext(data)
    except ValueError:
        return
    assert result is None or isinstance(result, str)
