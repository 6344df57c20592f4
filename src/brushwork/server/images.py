"""Images in and out of the API: base64 (with or without a ``data:`` prefix) <-> Pillow.

Images given as URLs are refused (this server fetches nothing); oversized or undecodable data
fails with a ConfigError naming the field. Replies are base64 PNG with the infotext in the
``parameters`` chunk, as A1111 sends them.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image

from brushwork.core.errors import ConfigError

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 8192 * 8192


def decode_image(data: str, field: str) -> Image.Image:
    """A base64 image (raw, or a ``data:image/...;base64,`` URL)."""
    text = data.strip()
    if text.startswith(("http://", "https://", "file:", "/")):
        raise ConfigError(f"{field}: images must be base64 data; URLs and paths are not fetched")
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ConfigError(f"{field}: the image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{field}: not valid base64") from None
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ConfigError(f"{field}: the image is too large ({image.width}x{image.height})")
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise ConfigError(f"{field}: not a readable image ({error})") from None
    return image


def encode_png(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def decode_bytes(data: str, field: str) -> bytes:
    """The raw bytes of a base64 file (for PNG info: the chunks must survive)."""
    text = data.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ConfigError(f"{field}: the image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{field}: not valid base64") from None
