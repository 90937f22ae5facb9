"""The bake's skin-colour test, for JAX (inside jit) and numpy arrays alike.

Skin statistics are robust (median, 1.4826 MAD) YCrCb values of the well-seen face core; a colour
is skin when its chroma is within a few robust sigmas of the median and its luminance within a
band around it. :func:`avatar_jax.texture.bake.bake_texture` uses it to keep clothing off the
neck, :mod:`avatar_jax.texture.hair` to tell hair from skin.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SkinStats:
    """Robust YCrCb statistics of the skin (scalars, numpy or JAX).

    Attributes:
      y: median luminance. cr, cb: median chroma. cr_sigma, cb_sigma: their robust sigmas.
    """

    y: float
    cr: float
    cr_sigma: float
    cb: float
    cb_sigma: float

    def as_array(self):
        """``[5]`` (y, cr, cr_sigma, cb, cb_sigma)."""
        xp = jnp if isinstance(self.y, jax.Array) else np
        return xp.stack([xp.asarray(v) for v in dataclasses.astuple(self)])

    def rgb(self) -> np.ndarray:
        """``[3]`` RGB in [0, 1] of the median colour (the inverse of :func:`ycrcb`)."""
        y, cr, cb = (float(v) for v in (self.y, self.cr, self.cb))
        r, b = y + cr / 0.713, y + cb / 0.564
        return np.clip([r, (y - 0.299 * r - 0.114 * b) / 0.587, b], 0.0, 1.0)

    @classmethod
    def from_array(cls, a) -> SkinStats:
        """Inverse of :meth:`as_array`."""
        return cls(*(a[i] for i in range(5)))


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def ycrcb(rgb):
    """``[..., 3]`` RGB in [0, 1] -> (Y, Cr, Cb), each ``[...]``."""
    xp = _xp(rgb)
    y = rgb @ xp.asarray([0.299, 0.587, 0.114], dtype=rgb.dtype)
    return y, 0.713 * (rgb[..., 0] - y), 0.564 * (rgb[..., 2] - y)


def _ramp(x, xp):
    x = xp.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _chroma_distance(cr, cb, stats: SkinStats, xp):
    """``[...]``: distance of chroma ``cr``, ``cb`` from the skin's median, in units of 2.5
    robust sigmas (at least 0.015 each)."""
    return xp.hypot((cr - stats.cr) / xp.maximum(2.5 * stats.cr_sigma, 0.015),
                    (cb - stats.cb) / xp.maximum(2.5 * stats.cb_sigma, 0.015))


def skin_probability(rgb, stats: SkinStats):
    """``[...]`` in [0, 1]: how skin-like each RGB colour ``[..., 3]`` (in [0, 1]) is.

    Chroma distance in units of 2.5 robust sigmas: full pass up to 1, none beyond 1.8.
    Luminance within [0.35, 1.6] x the median: dark suits and hair, white collars fail.
    """
    xp = _xp(rgb)
    y, cr, cb = ycrcb(rgb)
    d = _chroma_distance(cr, cb, stats, xp)
    ratio = y / xp.maximum(stats.y, 1e-3)
    return _ramp((1.8 - d) / 0.8, xp) * _ramp((ratio - 0.3) / 0.2, xp) * _ramp((1.8 - ratio) / 0.3, xp)


def skin_highlight(rgb, stats: SkinStats):
    """``[...]`` bool: skin's chroma but brighter than its median: a shine on a bald scalp or a
    forehead, which the luminance band of :func:`skin_probability` may reject, but no hair
    (white and grey hair are low in chroma, blond hair yellower than skin)."""
    xp = _xp(rgb)
    y, cr, cb = ycrcb(rgb)
    return (_chroma_distance(cr, cb, stats, xp) < 1.0) & (y > xp.maximum(stats.y, 1e-3))
