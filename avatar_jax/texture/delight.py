"""Lighting removal for the baked texture: fit the photo's light, divide its shading out.

A texel of the photo is modelled as ``albedo * shading(n)`` with ``shading`` the second-order
spherical-harmonics irradiance of :mod:`avatar_jax.render.scene` (9 coefficients per RGB channel,
evaluated at the fitted mesh's **view-space** normal, the renderer's convention). Over the
well-seen skin of the face the albedo is taken as constant, so ``colour_c = Y(n) . l_c`` is a
linear least-squares problem in the 9 coefficients ``l_c`` (the skin colour folded in). It is
solved robustly (iteratively reweighted on residuals in robust-sigma units, Huber then Tukey
weights: brows, stubble, freckles, specular spots and background at the silhouette are outliers)
with a light ridge on bands 1-2.

The de-lit colour is ``colour * ref / shading(n)`` where ``ref`` is the median shading of the
fitted texels: the face keeps its average colour and brightness (the global scale of albedo and
light cannot be told apart from one photo); only the variation with the normal goes. The
shading ratio is clamped (:data:`SHADING_CLAMP`) so that deep shadows and normals far from the
fitted ones (under the chin, in the ear folds) are not blown up.

All functions are pure JAX (jit-able, fixed shapes): :func:`avatar_jax.texture.bake.bake_texture`
runs them inside its projection step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avatar_jax.render.scene import NUM_SH, sh_basis, sh_shading

SHADING_CLAMP = (0.5, 1.6)  # shading / ref: darker or brighter than this is only partly undone
RIDGE = 1e-2  # bands 1-2 ridge, relative to the mean diagonal of the normal equations
HUBER_SIGMAS = 1.5
TUKEY_SIGMAS = 4.685
IRLS_STEPS = 6
MIN_TEXELS = 64


def fit_sh_light(colors: jax.Array, normals: jax.Array, ok: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Robust SH light of a constant-albedo surface.

    Args:
      colors: ``[N, 3]`` observed RGB in [0, 1].
      normals: ``[N, 3]`` unit normals (the light comes out in their frame).
      ok: ``[N]`` bool, the samples to fit (the rest are ignored; fixed shapes for jit).

    Returns:
      ``sh`` ``[9, 3]`` (albedo times irradiance, :func:`~avatar_jax.render.scene.sh_shading`
      convention) and ``found`` (scalar bool: at least :data:`MIN_TEXELS` samples). Without
      enough samples the light is flat (uniform shading).
    """
    if colors.ndim != 2 or colors.shape[1] != 3 or normals.shape != colors.shape or ok.shape != colors.shape[:1]:
        raise ValueError(f"fit_sh_light: colors and normals must be [N, 3] and ok [N], got "
                         f"{colors.shape}, {normals.shape}, {ok.shape}")
    basis = sh_basis(normals)  # [N, 9]
    w0 = ok.astype(jnp.float32)
    ridge = jnp.asarray([0.0] + [1.0] * (NUM_SH - 1))

    def solve(w):  # [N, 3] per-channel weights -> [9, 3]
        a = jnp.einsum("nk,nc,nj->ckj", basis, w, basis)
        a = a + RIDGE * jnp.trace(a, axis1=1, axis2=2)[:, None, None] / NUM_SH * jnp.diag(ridge)
        b = jnp.einsum("nk,nc,nc->ck", basis, w, colors)
        return jnp.linalg.solve(a + 1e-9 * jnp.eye(NUM_SH), b[..., None])[..., 0].T

    def step(w, k):
        sh = solve(w)
        r = jnp.where(ok[:, None], colors - basis @ sh, jnp.nan)
        sigma = jnp.maximum(1.4826 * jnp.nanmedian(jnp.abs(r), axis=0), 1e-3)
        u = jnp.abs(jnp.nan_to_num(r)) / sigma
        # Huber first (convex: a safe start), then Tukey's biweight, which gives gross outliers
        # (background mixed into silhouette texels, brows) no weight at all.
        huber = jnp.minimum(1.0, HUBER_SIGMAS / jnp.maximum(u, 1e-6))
        tukey = jnp.square(jnp.maximum(1.0 - jnp.square(u / TUKEY_SIGMAS), 0.0))
        return w0[:, None] * jnp.where(k < IRLS_STEPS // 2, huber, tukey), None

    w, _ = jax.lax.scan(step, jnp.broadcast_to(w0[:, None], colors.shape), jnp.arange(IRLS_STEPS))
    found = jnp.sum(ok) >= MIN_TEXELS
    flat = jnp.zeros((NUM_SH, 3)).at[0].set(1.0)
    return jnp.where(found, solve(w), flat), found


def reference_shading(sh: jax.Array, normals: jax.Array, ok: jax.Array) -> jax.Array:
    """``[3]`` median shading of the ``ok`` ``[N]`` samples at ``normals`` ``[N, 3]``."""
    s = jnp.where(ok[:, None], sh_shading(sh, normals), jnp.nan)
    return jnp.maximum(jnp.nanmedian(s, axis=0), 1e-3)


def delight_gain(sh: jax.Array, ref: jax.Array, normals: jax.Array) -> jax.Array:
    """``[..., 3]`` factor taking a colour at unit ``normals`` ``[..., 3]`` to albedo * ``ref``:
    ``ref / shading`` with ``shading / ref`` clamped to :data:`SHADING_CLAMP`."""
    lo, hi = SHADING_CLAMP
    ratio = jnp.clip(sh_shading(sh, normals) / ref, lo, hi)
    return 1.0 / ratio
