"""Decoding and preprocessing of ImageEncoder's items: files, bytes, PIL images, arrays.

Everything here runs on PIL and numpy only; :class:`~skfusion.encoders.ImageEncoder` feeds the
uint8 crops of :func:`load_image` to its model.
"""

# SPDX-License-Identifier: BSD-3-Clause

import io
import math
import os

import numpy as np

from .._utils import import_optional_dependency

__all__ = ["check_image_item", "load_image", "load_or_error"]


def check_image_item(value):
    """Cheap type/shape check of a raw item; decoding happens later, batch by batch."""
    Image = import_optional_dependency("PIL.Image", purpose="ImageEncoder")
    if isinstance(value, np.str_):
        value = str(value)
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return _check_array(value)
    raise TypeError(
        "expected a file path, encoded image bytes, a PIL image or an array, got "
        f"{type(value).__name__}"
    )


def _check_array(arr):
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(
            f"an image array must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), got shape {arr.shape}"
        )
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("the image array contains NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"a float image array must be in [0, 1], got values in [{low:g}, {high:g}]; "
                "scale it (e.g. divide by 255)"
            )
        return np.round(arr * 255.0).astype(np.uint8)
    if arr.dtype.kind in "iu":
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"an integer image array must be in [0, 255], got values in [{low}, {high}]"
            )
        return arr.astype(np.uint8)
    raise TypeError(f"unsupported image array dtype {arr.dtype}")


def _open(item):
    """A loaded PIL image for a checked item; file and decode errors are raised as they come."""
    from PIL import Image

    if isinstance(item, np.ndarray):
        return Image.fromarray(item)
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, str):
        if not os.path.exists(item):
            raise FileNotFoundError(f"no such file: {item!r}")
        if os.path.isdir(item):
            raise IsADirectoryError(f"{item!r} is a directory, not an image file")
        if os.path.getsize(item) == 0:
            raise ValueError(f"the file {item!r} is empty (0 bytes)")
        return Image.open(item)
    return Image.open(io.BytesIO(item))


def _to_rgb(img):
    """RGB image; transparent pixels are put on a white background."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: scale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def load_image(item, crop_size, resize_size):
    """Decode, orient, convert to RGB, resize the shorter side and centre-crop one item.

    Parameters
    ----------
    item : str, bytes, PIL.Image.Image or ndarray
        A checked raw item.
    crop_size : tuple of int
        ``(height, width)`` of the output.
    resize_size : int
        Length of the shorter side after resizing, before the centre crop.

    Returns
    -------
    pixels : ndarray of shape (height, width, 3), dtype uint8
        The RGB crop.
    """
    from PIL import Image, ImageOps

    img = _open(item)
    if img.width == 0 or img.height == 0:
        raise ValueError(f"the image has zero size ({img.width}x{img.height})")
    if getattr(img, "format", None) == "JPEG":
        # decode a large JPEG at 1/2, 1/4 or 1/8 scale straight from the DCT (still >= target)
        scale = resize_size / min(img.width, img.height)
        if scale < 0.5:
            img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
    img.load()  # decode now: truncated or corrupt data raise here
    img = ImageOps.exif_transpose(img)
    img = _to_rgb(img)
    width, height = img.size
    scale = resize_size / min(width, height)
    # torchvision's Resize(int): the shorter side is exact, the longer one truncated
    new_w = resize_size if width <= height else int(width * scale)
    new_h = resize_size if height <= width else int(height * scale)
    new_w, new_h = max(new_w, crop_size[1]), max(new_h, crop_size[0])
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - crop_size[0]) / 2.0))
    left = int(round((new_w - crop_size[1]) / 2.0))
    img = img.crop((left, top, left + crop_size[1], top + crop_size[0]))
    return np.asarray(img, dtype=np.uint8)


def load_or_error(item, crop_size, resize_size):
    """``load_image``, returning the exception of a bad item instead of raising it."""
    try:
        return load_image(item, crop_size, resize_size)
    # PIL raises OSError (unreadable, unidentified or truncated data), SyntaxError (broken
    # PNG chunks), EOFError, ValueError, and DecompressionBombError (a bare Exception)
    except (OSError, ValueError, TypeError, SyntaxError, EOFError) as exc:
        return exc
    except Exception as exc:
        if type(exc).__module__.startswith("PIL"):
            return exc
        raise
