"""Readers: bit depths, colour, TIFF, truncated files, mask value rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from toothseg.data.io import mask_from_array, read_image, read_mask, read_mask_array, to_uint8, write_png
from toothseg.errors import InputError


def _ramp(h: int = 16, w: int = 32, dtype=np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return (np.linspace(0, top, h * w).reshape(h, w)).astype(dtype)


def test_8bit_png_is_read_unchanged(tmp_path):
    a = _ramp()
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), a)


def test_16bit_png_is_scaled_to_uint8(tmp_path):
    a = np.zeros((16, 32), np.uint16)
    a[:, 16:] = 4000
    a[0, 0] = 1000
    Image.fromarray(a).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (16, 32)
    assert out[5, 20] == 255 and out[5, 5] == 0
    assert out[0, 0] == round(1000 / 4000 * 255)


def test_tiff_16bit_and_planar_rgb(tmp_path):
    a = _ramp(dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), to_uint8(a))
    rgb = np.stack([_ramp()] * 3)  # planar (3, H, W)
    tifffile.imwrite(tmp_path / "p.tiff", rgb, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "p.tiff"), _ramp())


def test_rgb_to_gray(tmp_path):
    g = _ramp()
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), g)  # identical channels: exact
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png")[0, 0] == round(0.299 * 200 + 0.587 * 100)


def test_truncated_png_names_the_file(tmp_path):
    p = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(InputError) as e:
        read_image(p)
    msg = str(e.value)
    assert "cut.png" in msg and "\n" not in msg and "truncated" in msg


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"hello, not a png")
    with pytest.raises(InputError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="TIFF"):
        read_image(tmp_path / "junk.tif")


def test_tiny_image_rejected(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "t.png")
    with pytest.raises(InputError, match="too small"):
        read_image(tmp_path / "t.png")


@pytest.mark.parametrize("fg", [1, 255])
def test_binary_masks(tmp_path, fg):
    m = np.zeros((16, 32), np.uint8)
    m[4:8, 4:20] = fg
    Image.fromarray(m).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool and out.sum() == 4 * 16
    np.testing.assert_array_equal(read_mask_array(tmp_path / "m.png"), m)


def test_label_image_mask_nonzero_is_tooth(tmp_path):
    m = np.zeros((16, 32), np.uint16)
    m[2:5, 2:5] = 11
    m[8:12, 8:12] = 48
    Image.fromarray(m).save(tmp_path / "lab.png")
    out = read_mask(tmp_path / "lab.png")
    assert out.sum() == 9 + 16
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[1:3, 1:3] = (255, 0, 0)
    rgb[5:7, 5:7] = (0, 0, 200)
    assert mask_from_array(rgb).sum() == 8  # colour-coded labels: any non-black pixel


def test_lossy_and_fractional_masks_rejected(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    cv2.circle(m, (30, 33), 17, 255, -1)  # curved edges: JPEG cannot code them exactly
    Image.fromarray(m).save(tmp_path / "m.jpg", quality=30)
    with pytest.raises(InputError, match="m.jpg: JPEG masks are lossy"):
        read_mask(tmp_path / "m.jpg")
    # the same JPEG's pixels saved as PNG: compression ringing near 0 and 255 gives it away
    Image.open(tmp_path / "m.jpg").save(tmp_path / "ring.png")
    with pytest.raises(InputError, match="ring.png: .*lossy"):
        read_mask(tmp_path / "ring.png")
    ringing = np.array([[0, 3, 255, 250], [0, 0, 255, 255]], np.uint8)  # few values, but lossy edges
    with pytest.raises(InputError, match="near 0 and near 255"):
        mask_from_array(ringing)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # a grayscale picture
    with pytest.raises(InputError, match="distinct values"):
        mask_from_array(noisy)
    with pytest.raises(InputError, match="fractional"):
        mask_from_array(np.array([[0.0, 0.5], [1.0, 0.0]]))
    with pytest.raises(InputError, match="negative"):
        mask_from_array(np.array([[0, -1], [2, 0]], np.int16))


def test_write_png_roundtrip(tmp_path):
    m = np.zeros((8, 16), bool)
    m[2:4, 2:8] = True
    write_png(tmp_path / "sub" / "m.png", m)
    assert set(np.unique(np.array(Image.open(tmp_path / "sub" / "m.png"))).tolist()) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "sub" / "m.png"), m)
