"""Images as models take them: any mode Pillow opens, read into 8-bit RGB with its values scaled from the
range they were stored in, and one error (`UnusableImage`) for an image that cannot be read.

How each mode becomes 8-bit RGB (`to_rgb`):
- 16-bit modes (I;16, I;16L, I;16B, I;16N): the full 16-bit range, v / 257 rounded (65535 -> 255).
- 32-bit modes hold no fixed range, so their values pick one: the smallest of 0..1 (F only), 0..255 and
  0..65535 that holds them all (Pillow's 16-bit readers and `convert("I")` of 8-bit data both give mode I);
  negative, larger or non-finite values cannot be read.
- Transparency (LA, La, PA, RGBA, RGBa, a palette or colour key with a transparent entry): composited on
  white, as transformers' `convert_to_rgb` does (an empty background is meant to be the page it lies on).
- 1, L, P, RGBX, CMYK, YCbCr, LAB, HSV: Pillow's own conversion.
Any other mode cannot be read. Pillow's `convert("RGB")` alone clips I;16, I and F at 255 (a 16-bit image
turns almost white or blank) and drops alpha (a transparent figure's lines vanish into black).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import UnusableImage

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
WIDE = ("I", "F")  # 32 bits, no fixed range
WITH_ALPHA = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}  # -> the straight-alpha mode
BY_PILLOW = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
# failures of decoding one file (Pillow's plugins raise all of these on damaged data)
DECODING_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB, its values scaled from the range they were stored in (see the module's text);
    raises `UnusableImage` for a mode or range it cannot read."""
    mode = image.mode
    if mode in SIXTEEN_BIT or mode in WIDE:
        values = np.asarray(image).astype(np.float64)
        scale = 257.0 if mode in SIXTEEN_BIT else _scale(mode, values)
        gray = np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
        key = image.info.get("transparency")
        if isinstance(key, (int, float)) and not isinstance(key, bool):  # a grey colour key: transparent -> white
            gray[np.asarray(image) == key] = 255
        return Image.fromarray(gray).convert("RGB")
    if mode in WITH_ALPHA or (mode in BY_PILLOW and image.info.get("transparency") is not None):
        rgba = image.convert(WITH_ALPHA.get(mode, "RGBA")).convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if mode == "RGB":
        return image
    if mode in BY_PILLOW:
        return image.convert("RGB")
    raise UnusableImage(f"mode {mode} is not one this reader knows how to scale; save the image as RGB")


def _scale(mode: str, values: np.ndarray) -> float:
    """The divisor that maps a 32-bit image's values to 0..255 (see the module's text)."""
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 65535:
        raise UnusableImage(f"a 32-bit image (mode {mode}) with values from {low:g} to {high:g}: only values "
                            "within 0..1 (float), 0..255 or 0..65535 have a known scale; save it as an 8- or "
                            "16-bit image")
    if mode == "F" and high <= 1:
        return 1 / 255
    return 1.0 if high <= 255 else 257.0


def image_name(value: Any, base: Path | None = None) -> str:
    """How an image source is named in messages: its file, the name stored with its bytes, or what it is."""
    if isinstance(value, dict) and value.get("bytes"):
        return f"{value['path']} (bytes stored in the row)" if value.get("path") else "bytes stored in the row"
    if isinstance(value, dict):
        value = value.get("path")
    if isinstance(value, (str, Path)) and value:
        return str(Path(value) if base is None or Path(value).is_absolute() else Path(base) / value)
    if isinstance(value, Image.Image):
        return getattr(value, "filename", "") or "an image held in the row"
    return "no image"


def read_image(value: Any, base: Path | None = None) -> Image.Image:
    """8-bit RGB (`to_rgb`) from a PIL image, a {'bytes', 'path'} dict (as parquet stores images) or a path
    (relative ones start at `base`). Any failure to read it (no image, a missing or damaged file, one over
    Pillow's decompression-bomb limit, a mode it cannot scale) is an `UnusableImage` naming the image."""
    name = image_name(value, base)
    try:
        if isinstance(value, Image.Image):
            return to_rgb(value)
        if isinstance(value, dict) and value.get("bytes"):
            source: Any = io.BytesIO(value["bytes"])
        else:
            path = value.get("path") if isinstance(value, dict) else value
            if not isinstance(path, (str, Path)) or not path:
                raise UnusableImage("the row has no image")
            source = Path(name)
            if not source.is_file():
                raise UnusableImage(f"image {name} does not exist")
        with Image.open(source) as opened:
            opened.load()
            image = to_rgb(opened)
            return image.copy() if image is opened else image
    except UnusableImage as err:
        message = str(err)
        raise UnusableImage(message if message.startswith(("image ", "the row")) else f"image {name}: {message}") \
            from None
    except Image.DecompressionBombError as err:
        raise UnusableImage(f"image {name}: Pillow refuses it as a possible decompression bomb ({err}); raise "
                            "PIL.Image.MAX_IMAGE_PIXELS if it is meant to be that large") from None
    except DECODING_ERRORS as err:
        raise UnusableImage(f"image {name} is not a readable image ({type(err).__name__}: {err})") from None
