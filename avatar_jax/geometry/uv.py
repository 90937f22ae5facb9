"""Texture-space coordinates shared by the UV rasteriser, the texture projection and previews."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def uv_to_texel(uvs, size: int):
    """UV ``[..., 2]`` (v up) to texel coordinates ``[..., 2]`` = (col, row) of a size² image.

    Texel (row r, col c) covers ``u in [c/S, (c+1)/S)`` and ``v in [1-(r+1)/S, 1-r/S)``; its
    centre is ``u = (c + 0.5)/S``, ``v = 1 - (r + 0.5)/S`` (row 0 = top of the image = v 1).
    numpy in, numpy out (host-side tables); JAX in, JAX out (under jit).
    """
    xp = jnp if isinstance(uvs, jax.Array) else np
    uvs = xp.asarray(uvs)
    return xp.stack([uvs[..., 0] * size - 0.5, (1.0 - uvs[..., 1]) * size - 0.5], -1)
