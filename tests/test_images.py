"""`sspl.data.images.to_rgb`: every image mode to 8-bit RGB, checked pixel by pixel on hand-made images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sspl import api, viz
from sspl.data.images import to_rgb


def _grey(image: Image.Image) -> list[int]:
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape[-1] == 3
    assert (rgb == rgb[..., :1]).all(), "a grey image came out coloured"
    return rgb[0, :, 0].tolist()


@pytest.mark.parametrize(("mode", "dtype"), [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_sixteen_bit_grey_is_scaled_by_its_bit_depth(mode, dtype):
    values = np.array([0, 257, 1000, 32768, 65535])
    image = Image.frombytes(mode, (5, 1), values.astype(dtype).tobytes())
    assert _grey(image) == [0, 1, 4, 128, 255]  # v * 255 / 65535, rounded
    # Not stretched to the image's own range: a flat mid-grey stays mid-grey, a dark image dark.
    flat = Image.frombytes(mode, (3, 1), np.full(3, 32768).astype(dtype).tobytes())
    assert _grey(flat) == [128, 128, 128]
    dark = Image.frombytes(mode, (2, 1), np.array([0, 2570]).astype(dtype).tobytes())
    assert _grey(dark) == [0, 10]


def test_a_sixteen_bit_png_as_pillow_opens_it(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535, 6553]], np.uint16)).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode in ("I;16", "I")
        assert _grey(image) == [0, 128, 255, 25]  # 6553 * 255 / 65535 = 25.5 - 0.002


def test_thirty_two_bit_and_float_grey():
    # "I" holds 16-bit samples as int32 (older Pillow opens 16-bit PNGs so): clipped to 0-65535.
    assert _grey(Image.fromarray(np.array([[-5, 0, 32768, 65535, 70000]], np.int32))) == [0, 0, 128, 255, 255]
    floats = np.array([[-1.0, 0.0, 0.25, 0.5, 1.0, 2.0, np.nan]], np.float32)
    assert _grey(Image.fromarray(floats)) == [0, 0, 64, 128, 255, 255, 0]


def test_palette_with_and_without_transparency():
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0])
    image.putdata([0, 1, 2])
    assert np.asarray(to_rgb(image)).tolist() == [[[10, 20, 30], [200, 100, 50], [0, 255, 0]]]
    image.info["transparency"] = 1  # a transparent colour: composited over black
    assert np.asarray(to_rgb(image)).tolist() == [[[10, 20, 30], [0, 0, 0], [0, 255, 0]]]
    pa = Image.frombytes("PA", (2, 1), bytes([1, 255, 1, 0]))
    pa.putpalette([10, 20, 30, 200, 100, 50])
    assert np.asarray(to_rgb(pa)).tolist() == [[[200, 100, 50], [0, 0, 0]]]


def test_alpha_is_composited_over_black():
    rgba = Image.frombytes("RGBA", (3, 1), bytes([200, 100, 50, 255, 200, 100, 50, 128, 200, 100, 50, 0]))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[200, 100, 50], [100, 50, 25], [0, 0, 0]]]
    la = Image.frombytes("LA", (3, 1), bytes([200, 255, 200, 128, 200, 0]))
    assert _grey(la) == [200, 100, 0]


def test_cmyk_one_bit_and_rgb():
    cmyk = Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 255]))
    assert np.asarray(to_rgb(cmyk)).tolist() == [[[255, 255, 255], [155, 255, 255], [0, 0, 0]]]
    assert _grey(Image.frombytes("1", (8, 1), bytes([0b10000000])))[:2] == [255, 0]
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert np.array_equal(np.asarray(to_rgb(rgb)), np.asarray(rgb))


def test_one_conversion_for_every_command():
    # localize (through sspl.api) and the overlays use the very same function as prepare.
    assert api.to_rgb is to_rgb and viz.to_rgb is to_rgb
