"""Bilinear image sampling as JAX gathers (differentiable w.r.t. image and coordinates)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bilinear_sample(image: jax.Array, xy: jax.Array) -> jax.Array:
    """Sample ``image`` ``[H, W, C]`` at pixel coordinates ``xy`` ``[..., 2]`` = (x right, y down).

    Pixel centres are at integer coordinates; coordinates outside the image are clamped to the
    border pixels. Returns ``[..., C]``. Differentiable w.r.t. ``image`` and ``xy`` (piecewise
    linear in ``xy``).
    """
    if image.ndim != 3:
        raise ValueError(f"image must have shape [H, W, C], got {tuple(image.shape)}")
    if xy.shape[-1] != 2:
        raise ValueError(f"xy must have shape [..., 2], got {tuple(xy.shape)}")
    h, w = image.shape[:2]
    x = jnp.clip(xy[..., 0], 0.0, w - 1.0)
    y = jnp.clip(xy[..., 1], 0.0, h - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, max(w - 2, 0)).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, max(h - 2, 0)).astype(jnp.int32)
    x1 = jnp.minimum(x0 + 1, w - 1)
    y1 = jnp.minimum(y0 + 1, h - 1)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    flat = image.reshape(h * w, -1)

    def at(yi, xi):
        return flat[yi * w + xi]

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy
