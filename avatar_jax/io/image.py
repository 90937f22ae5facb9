"""Robust image loading: any file Pillow/imageio reads becomes an upright RGB uint8 array.

* EXIF orientation is applied (``ImageOps.exif_transpose``), so the pixels are as a viewer
  shows them.
* Grayscale, palette, CMYK, 16-bit and float images become RGB uint8 (16-bit is scaled, not
  clipped); images with alpha are composited over white, so transparent backgrounds do not turn
  into arbitrary colours.
* Multi-frame files (GIF, multi-page TIFF) give their first frame.
* Every failure (missing, empty, truncated or corrupt file, non-image, unsupported format, too
  large) raises :class:`ImageLoadError`, a ``ValueError`` carrying the path and the reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's decompression-bomb guard is raised to this many pixels (a 20k x 20k photo passes;
# a crafted 100k x 100k header does not allocate 30 GB before failing).
MAX_PIXELS = 400_000_000


class ImageLoadError(ValueError):
    """An image file could not be turned into pixels. ``path`` and ``reason`` are attributes."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB, upright (EXIF orientation applied).

    Raises:
      ImageLoadError: the file is missing, empty, corrupt/truncated, not an image, in an
        unsupported format, or larger than :data:`MAX_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "empty file")
    try:
        return _load_with_pillow(path)
    except UnidentifiedImageError:
        return _load_with_imageio(path)


def _load_with_pillow(path: Path) -> np.ndarray:
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb_uint8(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(path, f"image too large ({e})") from None
    except UnidentifiedImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow signals truncation and corrupt streams as OSError/SyntaxError/ValueError.
        raise ImageLoadError(path, f"corrupt or truncated image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _load_with_imageio(path: Path) -> np.ndarray:
    """Fallback for formats Pillow does not identify but another imageio plugin may read."""
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path, index=0))
    except Exception as e:  # imageio raises many unrelated types for "cannot read this"
        raise ImageLoadError(path, f"not an image or unsupported format ({type(e).__name__})") from None
    return array_to_rgb_uint8(arr, name=str(path))


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to ``[H, W, 3]`` uint8 RGB."""
    mode = img.mode
    if mode in ("RGB",):
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb_uint8(np.asarray(img), name=f"mode {mode}")
    if (mode == "P" and "transparency" in img.info) or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _composite_over_white(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _composite_over_white(rgba: Image.Image) -> np.ndarray:
    arr = np.asarray(rgba, dtype=np.float32)
    alpha = arr[..., 3:4] / 255.0
    rgb = arr[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def array_to_rgb_uint8(arr: np.ndarray, name: str = "array") -> np.ndarray:
    """Convert an ``[H, W]``, ``[H, W, 1|2|3|4]`` array of any numeric dtype to RGB uint8.

    Integer types are scaled by their range (uint16 / 257); a 32-bit integer image holding
    16-bit data (Pillow mode ``I``) is scaled as 16-bit; floats are taken as [0, 1] when their
    maximum is at most 1, else as [0, 255].
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected an image of shape [H, W] or [H, W, 1-4], got {arr.shape}")
    arr = _scale_to_unit_range(arr, name) * 255.0
    if arr.shape[2] in (2, 4):  # gray+alpha or RGBA
        alpha = arr[..., -1:] / 255.0
        arr = arr[..., :-1] * alpha + 255.0 * (1.0 - alpha)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _scale_to_unit_range(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: image contains NaN or infinite values")
        peak = float(arr.max(initial=0.0))
        return arr.astype(np.float32) / (1.0 if peak <= 1.0 else 255.0)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.itemsize == 1:
            return arr.astype(np.float32) / 255.0
        # uint16 data, or 16-bit data in a wider int container (Pillow mode "I").
        full = 65535.0 if arr.max(initial=0) <= 65535 else float(np.iinfo(arr.dtype).max)
        return np.clip(arr.astype(np.float64), 0, None).astype(np.float32) / full
    raise ValueError(f"{name}: unsupported pixel type {arr.dtype}")
