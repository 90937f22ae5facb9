"""Normalised mean error (NME) of 2D landmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def landmark_nme(pred: jax.Array, gt: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Mean point-to-point error divided by sqrt(w * h) of the ground-truth landmark box.

    Args:
      pred: ``[..., N, 2]`` predicted landmarks (pixels; N = 68 for iBUG).
      gt: ``[..., N, 2]`` human-labelled landmarks, same pixel convention as ``pred``.
      valid: ``[..., N]`` bool, landmarks to score (default all); the box is taken over the
        valid gt landmarks too.

    Returns:
      ``[...]`` NME (a fraction; multiply by 100 for %). NaN where fewer than two landmarks are
      valid or the gt box has zero area.
    """
    pred, gt = jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)
    if pred.shape != gt.shape or pred.ndim < 2 or pred.shape[-1] != 2:
        raise ValueError(f"landmark_nme: pred and gt must both be [..., N, 2], got {pred.shape} "
                         f"and {gt.shape}")
    if valid is None:
        valid = jnp.ones(gt.shape[:-1], bool)
    valid = jnp.asarray(valid, bool)
    if valid.shape != gt.shape[:-1]:
        raise ValueError(f"landmark_nme: valid must be {gt.shape[:-1]}, got {valid.shape}")
    lo = jnp.min(jnp.where(valid[..., None], gt, jnp.inf), axis=-2)
    hi = jnp.max(jnp.where(valid[..., None], gt, -jnp.inf), axis=-2)
    size = jnp.sqrt(jnp.prod(hi - lo, axis=-1))
    count = jnp.sum(valid, axis=-1)
    err = jnp.where(valid, jnp.linalg.norm(pred - gt, axis=-1), 0.0)
    nme = jnp.sum(err, axis=-1) / count / size
    return jnp.where((count >= 2) & (size > 0), nme, jnp.nan)
