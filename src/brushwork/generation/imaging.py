"""Pixels in and out: image <-> tensor, A1111's resize modes, inpainting masks and overlays.

Facts from A1111 (``modules/images.py``, ``modules/masking.py``, ``processing.py``), implemented
here with Pillow and torch:

* an image tensor is ``uint8 / 255`` (float32, CHW); a decoded sample becomes pixels by
  ``clamp((x + 1) / 2, 0, 1) * 255`` truncated to uint8;
* resize modes: 0 just resize (Lanczos), 1 crop and resize (cover, centre crop), 2 resize and
  fill (fit, centre, the empty bands filled by stretching the image's edge rows or columns);
* a mask is white where to paint; an RGBA mask with transparency uses its alpha; rounding
  thresholds at 128; blur is a Gaussian with kernel ``2 * int(2.5 * blur + 0.5) + 1`` per axis
  (A1111 uses OpenCV's uint8 blur; this one rounds a float result, so a few mask pixels may
  differ by one level);
* "only masked" crops the mask's bounding box grown by the padding and stretched to the
  request's aspect ratio, and pastes the result back;
* the overlay (the original pixels outside the mask) is composited over every result, so
  unmasked pixels are the original pixels exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from brushwork.generation.request import ResizeMode

CropBox = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive), as Pillow's crop
FILL_BLUR_SIGMAS = (64.0, 16.0, 4.0, 1.0)


# -- image <-> tensor ----------------------------------------------------------------------------


def image_to_tensor(image: Image.Image) -> Tensor:
    """An RGB image as a float32 CHW tensor in [0, 1]."""
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.reshape(image.height, image.width, 3).permute(2, 0, 1).float() / 255.0


def sample_to_image(sample: Tensor) -> Image.Image:
    """A decoded sample (CHW, [-1, 1]) as an RGB image (values truncated, as A1111 does)."""
    pixels = torch.clamp((sample.float().cpu() + 1.0) / 2.0, min=0.0, max=1.0) * 255.0
    array = pixels.permute(1, 2, 0).to(torch.uint8).contiguous()
    return Image.frombytes("RGB", (array.shape[1], array.shape[0]), array.numpy().tobytes())


def mask_to_tensor(mask: Image.Image) -> Tensor:
    """A greyscale mask as a float32 HW tensor in [0, 1]."""
    data = torch.frombuffer(bytearray(mask.convert("L").tobytes()), dtype=torch.uint8)
    return data.reshape(mask.height, mask.width).float() / 255.0


def tensor_to_mask(values: Tensor) -> Image.Image:
    """A HW tensor in [0, 255] (rounded) as an ``L`` image."""
    array = values.round().clamp(0, 255).to(torch.uint8).contiguous()
    return Image.frombytes("L", (array.shape[1], array.shape[0]), array.numpy().tobytes())


# -- resize modes -----------------------------------------------------------------------------


def resize_image(
    mode: ResizeMode,
    image: Image.Image,
    width: int,
    height: int,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """Fit ``image`` to ``width`` x ``height`` the way A1111's ``resize_image`` does."""
    if mode in (ResizeMode.JUST_RESIZE, ResizeMode.LATENT_UPSCALE):
        return image.resize((width, height), resample=resample)
    target_ratio, source_ratio = width / height, image.width / image.height
    if mode == ResizeMode.CROP_AND_RESIZE:
        cover = target_ratio > source_ratio
        scaled_w = width if cover else image.width * height // image.height
        scaled_h = height if not cover else image.height * width // image.width
    else:
        fit = target_ratio < source_ratio
        scaled_w = width if fit else image.width * height // image.height
        scaled_h = height if not fit else image.height * width // image.width
    scaled = image.resize((scaled_w, scaled_h), resample=resample)
    result = Image.new(image.mode, (width, height))
    result.paste(scaled, box=(width // 2 - scaled_w // 2, height // 2 - scaled_h // 2))
    if mode == ResizeMode.RESIZE_AND_FILL:
        _fill_bands(result, scaled, width, height, resample)
    return result


def _fill_bands(
    result: Image.Image,
    scaled: Image.Image,
    width: int,
    height: int,
    resample: Image.Resampling,
) -> None:
    """Stretch the scaled image's outer rows (or columns) over the empty bands beside it."""
    if scaled.height < height:
        band = height // 2 - scaled.height // 2
        if band > 0:
            top = scaled.resize((width, band), resample=resample, box=(0, 0, width, 0))
            low = scaled.height
            bottom = scaled.resize((width, band), resample=resample, box=(0, low, width, low))
            result.paste(top, box=(0, 0))
            result.paste(bottom, box=(0, band + scaled.height))
    elif scaled.width < width:
        band = width // 2 - scaled.width // 2
        if band > 0:
            left = scaled.resize((band, height), resample=resample, box=(0, 0, 0, height))
            edge = scaled.width
            right = scaled.resize((band, height), resample=resample, box=(edge, 0, edge, height))
            result.paste(left, box=(0, 0))
            result.paste(right, box=(band + scaled.width, 0))


# -- masks ------------------------------------------------------------------------------------


def binary_mask(mask: Image.Image, *, round_values: bool = True) -> Image.Image:
    """The mask as ``L``: an RGBA mask with transparency gives its alpha; rounding thresholds
    at 128 (values above become 255, the rest 0)."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        grey = mask.getchannel("A").convert("L")
    else:
        grey = mask.convert("L")
    if round_values:
        grey = grey.point(lambda value: 255 if value > 128 else 0)
    return grey


def gaussian_kernel(sigma: float, size: int) -> Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def _blur_axis(values: Tensor, sigma: float, size: int, axis: int) -> Tensor:
    """Blur a (N, H, W) float64 tensor along one axis, edges mirrored (OpenCV's default)."""
    kernel = gaussian_kernel(sigma, size)
    pad = size // 2
    length = values.shape[-1] if axis == 1 else values.shape[-2]
    mode = "reflect" if pad < length else "replicate"
    batch = values.unsqueeze(1)
    if axis == 1:
        padded = F.pad(batch, (pad, pad, 0, 0), mode=mode)
        out = F.conv2d(padded, kernel.view(1, 1, 1, size))
    else:
        padded = F.pad(batch, (0, 0, pad, pad), mode=mode)
        out = F.conv2d(padded, kernel.view(1, 1, size, 1))
    return out.squeeze(1)


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """A1111's mask blur: a Gaussian along x with sigma ``blur_x``, then along y."""
    if blur_x <= 0 and blur_y <= 0:
        return mask
    values = mask_to_tensor(mask).double().unsqueeze(0) * 255.0
    if blur_x > 0:
        values = _blur_axis(values, blur_x, 2 * int(2.5 * blur_x + 0.5) + 1, axis=1)
        values = values.round()
    if blur_y > 0:
        values = _blur_axis(values, blur_y, 2 * int(2.5 * blur_y + 0.5) + 1, axis=0)
    return tensor_to_mask(values[0])


def latent_mask(mask: Image.Image, width: int, height: int, *, round_values: bool) -> Tensor:
    """The inpainting mask at latent size (1 = paint), as A1111 computes it (bicubic resize)."""
    small = mask.convert("RGB").resize((width, height), resample=Image.Resampling.BICUBIC)
    values = image_to_tensor(small)[0]
    return values.round() if round_values else values


def crop_region(mask: Image.Image, padding: int) -> CropBox | None:
    """The bounding box of the mask's non-zero pixels grown by ``padding`` (inside the image)."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (
        max(x1 - padding, 0),
        max(y1 - padding, 0),
        min(x2 + padding, mask.width),
        min(y2 + padding, mask.height),
    )


def expand_to_ratio(box: CropBox, width: int, height: int, image_size: tuple[int, int]) -> CropBox:
    """Grow ``box`` around its centre to the aspect ratio ``width/height``, kept inside."""
    x1, y1, x2, y2 = box
    image_w, image_h = image_size
    if (x2 - x1) / (y2 - y1) > width / height:
        missing = int((x2 - x1) / (width / height) - (y2 - y1))
        y1, y2 = _grow(y1, y2, missing, image_h)
    else:
        missing = int((y2 - y1) * (width / height) - (x2 - x1))
        x1, x2 = _grow(x1, x2, missing, image_w)
    return x1, y1, x2, y2


def _grow(low: int, high: int, missing: int, limit: int) -> tuple[int, int]:
    low -= missing // 2
    high += missing - missing // 2
    if high >= limit:
        low -= high - limit
        high = limit
    if low < 0:
        high -= low
        low = 0
    return low, min(high, limit)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked area painted with blurred colours of its surroundings.

    Normalised convolution (blur of the known pixels divided by blur of the known-ness) at
    shrinking widths; each finer estimate replaces the coarser one where it is defined.
    """
    known = 1.0 - mask_to_tensor(mask.resize(image.size)).double()
    pixels = image_to_tensor(image).double()
    fill = (pixels * known).sum((1, 2), keepdim=True) / known.sum().clamp(min=1e-8)
    fill = fill.expand_as(pixels).clone()
    for sigma in FILL_BLUR_SIGMAS:
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * max(image.size) - 1)
        weight = _zero_padded_blur(known.unsqueeze(0), sigma, size)
        blurred = _zero_padded_blur(pixels * known, sigma, size)
        defined = weight > 1e-3
        fill = torch.where(defined, blurred / weight.clamp(min=1e-8), fill)
    result = pixels * known + fill * (1.0 - known)
    return sample_to_image(result.float() * 2.0 - 1.0)


def _zero_padded_blur(values: Tensor, sigma: float, size: int) -> Tensor:
    kernel = gaussian_kernel(sigma, size)
    batch = values.unsqueeze(1)
    pad = size // 2
    out = F.conv2d(batch, kernel.view(1, 1, 1, size), padding=(0, pad))
    out = F.conv2d(out, kernel.view(1, 1, size, 1), padding=(pad, 0))
    return out.squeeze(1)


# -- overlay ----------------------------------------------------------------------------------


def overlay_for(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original pixels where the mask is not painted (alpha = inverted mask), RGBA."""
    alpha = ImageOps.invert(mask_for_overlay.convert("L").resize(image.size))
    overlay = image.convert("RGBA")
    overlay.putalpha(alpha)
    return overlay


def apply_overlay(
    image: Image.Image, overlay: Image.Image, paste_to: CropBox | None = None
) -> Image.Image:
    """Composite the overlay over a result; with ``paste_to`` the result is first resized into
    that box of a canvas of the overlay's size (inpaint "only masked")."""
    if paste_to is not None:
        x1, y1, x2, y2 = paste_to
        canvas = Image.new("RGBA", overlay.size)
        canvas.paste(resize_image(ResizeMode.CROP_AND_RESIZE, image, x2 - x1, y2 - y1), (x1, y1))
        image = canvas
    composed = image.convert("RGBA")
    composed.alpha_composite(overlay)
    return composed.convert("RGB")
