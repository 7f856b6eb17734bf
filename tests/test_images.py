"""Images read into 8-bit RGB: every mode Pillow makes, its values scaled from the range they were stored in,
checked against the 8-bit reference they were made from; what cannot be read is one `UnusableImage`."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from functional_heads.utils.errors import UnusableImage, UserError
from functional_heads.utils.images import read_image, to_rgb

RNG = np.random.default_rng(0)
REFERENCE = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # the 8-bit RGB every mode is made from
GRAY = np.asarray(Image.fromarray(REFERENCE).convert("L"))
ALPHA = RNG.integers(0, 256, (12, 16), dtype=np.uint8)
SIZE = (16, 12)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The 8-bit colour composited on white with straight alpha."""
    if colour.ndim == 2:
        colour = np.repeat(colour[..., None], 3, axis=-1)
    a = alpha[..., None].astype(np.float64) / 255
    return colour * a + 255 * (1 - a)


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def with_alpha(image: Image.Image) -> Image.Image:
    image = image.copy()
    image.putalpha(Image.fromarray(ALPHA))
    return image


def gray_palette() -> Image.Image:
    image = Image.fromarray(GRAY).convert("P")  # L -> P keeps the grey levels as palette entries
    image.putpalette([v for level in range(256) for v in (level, level, level)])
    image.putdata(GRAY.flatten().tolist())
    return image


def sixteen(mode: str, dtype: str) -> Image.Image:
    return Image.frombytes(mode, SIZE, (GRAY.astype(np.uint32) * 257).astype(dtype).tobytes())


ONE = Image.fromarray(REFERENCE).convert("1")
# mode -> (image in that mode, expected 8-bit RGB, largest difference allowed)
MODES = {
    "1": (ONE, gray_rgb(np.asarray(ONE).astype(np.uint8) * 255), 0),
    "L": (Image.fromarray(GRAY), gray_rgb(GRAY), 0),
    "P": (gray_palette(), gray_rgb(GRAY), 0),
    "PA": (with_alpha(gray_palette()), over_white(GRAY, ALPHA), 1),
    "LA": (with_alpha(Image.fromarray(GRAY)), over_white(GRAY, ALPHA), 1),
    "La": (with_alpha(Image.fromarray(GRAY)).convert("La"), over_white(GRAY, ALPHA), 2),  # premultiplied
    "RGB": (Image.fromarray(REFERENCE), REFERENCE, 0),
    "RGBA": (with_alpha(Image.fromarray(REFERENCE)), over_white(REFERENCE, ALPHA), 1),
    "RGBa": (with_alpha(Image.fromarray(REFERENCE)).convert("RGBa"), over_white(REFERENCE, ALPHA), 2),
    "RGBX": (Image.fromarray(REFERENCE).convert("RGBX"), REFERENCE, 0),
    "CMYK": (Image.fromarray(REFERENCE).convert("CMYK"), REFERENCE, 0),
    "YCbCr": (Image.fromarray(REFERENCE).convert("YCbCr"), REFERENCE, 3),  # 8-bit YCbCr rounds
    "HSV": (Image.fromarray(REFERENCE).convert("HSV"), REFERENCE, 6),
    "LAB": (Image.fromarray(REFERENCE).convert("LAB"), REFERENCE, 24),  # 8-bit a/b quantise coarsely
    "I;16": (sixteen("I;16", "<u2"), gray_rgb(GRAY), 0),  # the full 16-bit range: v / 257
    "I;16L": (sixteen("I;16L", "<u2"), gray_rgb(GRAY), 0),
    "I;16B": (sixteen("I;16B", ">u2"), gray_rgb(GRAY), 0),
    "I;16N": (sixteen("I;16N", "=u2"), gray_rgb(GRAY), 0),
    "I": (Image.fromarray(GRAY.astype(np.int32) * 257), gray_rgb(GRAY), 0),  # 16-bit samples in mode I
    "F": (Image.fromarray(GRAY.astype(np.float32) / 255), gray_rgb(GRAY), 0),  # the unit range
}


def test_the_table_covers_every_mode_pillow_makes():
    assert set(Image.MODES) <= set(MODES), f"modes without a test: {set(Image.MODES) - set(MODES)}"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_reads_as_its_8_bit_reference(mode):
    image, expected, tolerance = MODES[mode]
    assert image.mode == mode
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == SIZE
    difference = np.abs(np.asarray(rgb).astype(np.int64) - np.rint(expected).astype(np.int64))
    assert difference.max() <= tolerance, (mode, difference.max())
    if tolerance > 2:  # a lossy colour space: close on average too
        assert difference.mean() < 2.5, (mode, difference.mean())


@pytest.mark.parametrize("image, expected", [
    (Image.fromarray(GRAY.astype(np.int32)), GRAY),  # 8-bit samples in mode I (convert("I") of an L image)
    (Image.fromarray(GRAY.astype(np.float32)), GRAY),  # 0..255 floats (convert("F") of an L image)
    (Image.fromarray(GRAY.astype(np.float32) * 257), GRAY),  # 16-bit values as floats
])
def test_32_bit_modes_take_the_smallest_range_that_holds_their_values(image, expected):
    assert np.array_equal(np.asarray(to_rgb(image))[..., 0], expected)


@pytest.mark.parametrize("values", [np.full((4, 4), -1, dtype=np.int32), np.full((4, 4), 70000, dtype=np.int32),
                                    np.full((4, 4), np.nan, dtype=np.float32)])
def test_32_bit_values_without_a_known_scale_are_refused_in_one_line(values):
    with pytest.raises(UnusableImage, match=r"32-bit image \(mode [IF]\).*8- or 16-bit") as caught:
        to_rgb(Image.fromarray(values))
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_file_reads_as_its_8_bit_reference(tmp_path, fmt):
    """Pillow's convert("RGB") clips 16-bit samples at 255: the image came out almost white."""
    path = tmp_path / f"deep.{fmt.lower()}"
    sixteen("I;16", "<u2").save(path, format=fmt)
    assert Image.open(path).mode.startswith("I")
    assert np.array_equal(np.asarray(read_image(path)), gray_rgb(GRAY))


def test_a_transparent_palette_entry_is_white():
    image = gray_palette()
    image.info["transparency"] = int(GRAY[0, 0])
    rgb = np.asarray(to_rgb(image))
    assert (rgb[GRAY == GRAY[0, 0]] == 255).all() and np.array_equal(rgb[GRAY != GRAY[0, 0]],
                                                                      gray_rgb(GRAY)[GRAY != GRAY[0, 0]])


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header states this size (its pixel data is a 1x1 image's)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR's width and height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # and its checksum
    return bytes(data)


def test_unreadable_images_are_one_line_naming_the_image(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_claiming(20000, 20000))
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "bomb.png").read_bytes()[:40])
    cases = {"bomb.png": "decompression bomb", "notes.png": "is not a readable image",
             "cut.png": "is not a readable image", "missing.png": "does not exist"}
    for name, message in cases.items():
        with pytest.raises(UnusableImage, match=message) as caught:
            read_image(name, tmp_path)
        assert str(tmp_path / name) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UnusableImage, match=r"pic\.png \(bytes stored in the row\)"):
        read_image({"bytes": b"junk", "path": "pic.png"})
    with pytest.raises(UnusableImage, match="has no image"):
        read_image(None)
