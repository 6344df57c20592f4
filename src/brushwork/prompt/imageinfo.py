"""The infotext stored in an image file, found where A1111 (v1.10) looks for it.

``images.read_info_from_image``: the PNG text chunk ``parameters`` (tEXt, zTXt or iTXt); an EXIF
``UserComment`` (JPEG, WEBP, AVIF, or a PNG eXIf chunk) replaces it when it is not empty; without
EXIF, a ``comment`` (GIF comment extension, JPEG COM segment) replaces it. The UserComment's
8-byte prefix names its encoding as piexif's helper writes it (``UNICODE\\0`` + UTF-16BE,
``ASCII\\0\\0\\0``, ``JIS\\0\\0\\0\\0\\0``); another prefix means UTF-8, as A1111 falls back to.

Pillow reads the headers only: no pixel data is decoded. Like Pillow's ``open``, it sees PNG text
chunks placed before the image data (where A1111 and every common tool put them).
"""

from __future__ import annotations

import io
import struct
from types import MappingProxyType

from PIL import Image, UnidentifiedImageError

__all__ = ["read_image_infotext"]

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNDEFINED_PREFIX = b"\0" * 8
_PREFIXES = MappingProxyType(
    {b"UNICODE\0": "utf_16_be", b"ASCII\0\0\0": "ascii", b"JIS\0\0\0\0\0": "shift_jis"}
)


# What Pillow's header parsers raise on damaged data.
_DAMAGED = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)


def read_image_infotext(data: bytes) -> str | None:
    """The infotext of an image given as bytes, or None when it carries none.

    Raises ValueError when the bytes are not an image Pillow can open (the reason is in the
    message).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = dict(image.info)
            comment = _user_comment(image) if "exif" in info else None
    except UnidentifiedImageError as error:
        raise ValueError(f"not an image Pillow can read: {error}") from error
    except Image.DecompressionBombError as error:
        raise ValueError(f"image over Pillow's size limit, not read: {error}") from error
    except _DAMAGED as error:
        raise ValueError(f"damaged image: {error!r}") from error
    infotext = info.get("parameters")
    if "exif" in info:
        if comment:
            infotext = comment
    elif "comment" in info:
        infotext = _text(info["comment"])
    return str(infotext) if isinstance(infotext, str) else None  # iTXt is a str subclass


def _user_comment(image: Image.Image) -> str | None:
    try:
        value = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except _DAMAGED:
        return None  # damaged EXIF: A1111 reads no comment either
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return None
    encoding = _PREFIXES.get(value[:8])
    if encoding is not None:
        return value[8:].decode(encoding, errors="replace")
    if value[:8] == _UNDEFINED_PREFIX:
        value = value[8:]  # A1111 keeps these eight NULs in the text
    return value.decode("utf8", errors="ignore")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf8", errors="ignore")
    return value if isinstance(value, str) else None
