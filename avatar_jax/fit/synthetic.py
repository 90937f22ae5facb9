"""Synthetic fitting problems with ground truth, sampled from the head model.

Used by the tests, the speed benchmark and the evaluation suite. Landmarks are the projections of
the true mesh's landmark points; the 17 jaw landmarks follow the silhouette of the true mesh (the
contour candidate with the smallest |n . view direction| under the true pose, n the true mesh's
normal), which is how a human annotates a jaw line.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from avatar_jax.geometry import camera as cam
from avatar_jax.model.head import HeadModel, silhouette_landmarks as model_silhouette_landmarks, vertices


@struct.dataclass
class SyntheticBatch:
    """Ground truth of n synthetic images.

    landmarks ``[n, 68, 2]`` (noisy if noise > 0), clean_landmarks ``[n, 68, 2]``,
    image_sizes ``[n, 2]`` (h, w), vertices ``[n, V, 3]``, identity ``[n, Ki]``,
    expression ``[n, Ke]``, camera (``[n, ...]`` leaves).
    """

    landmarks: jax.Array
    clean_landmarks: jax.Array
    image_sizes: jax.Array
    vertices: jax.Array
    identity: jax.Array
    expression: jax.Array
    camera: cam.Camera


def sample(model: HeadModel, key, n: int, *, yaw_deg=60.0, pitch_deg=20.0, roll_deg=10.0,
           identity_scale=1.0, expression_prob=0.15, expression_max=0.6, noise_px=0.0,
           image_size=(480, 640), distance_mm=(450.0, 900.0), focal_scale=(0.8, 1.25)) -> SyntheticBatch:
    """Sample n heads (identity ~ N(0, scale^2 sigma^2), sparse expressions in [0, max]) and poses
    (yaw/pitch/roll uniform in +-range), and project their landmarks (+ Gaussian pixel noise)."""
    ks = jax.random.split(key, 8)
    ki, ke = model.num_identity, model.num_expression
    alpha = identity_scale * model.identity_sigma * jax.random.normal(ks[0], (n, ki))
    on = jax.random.bernoulli(ks[1], expression_prob, (n, ke))
    beta = jnp.where(on, jax.random.uniform(ks[2], (n, ke), maxval=expression_max), 0.0)
    angles = jnp.deg2rad(jax.random.uniform(ks[3], (n, 3), minval=-1, maxval=1)
                         * jnp.array([pitch_deg, yaw_deg, roll_deg]))
    rotvec = jax.vmap(_euler_to_rotvec)(angles)
    h, w = image_size
    z = jax.random.uniform(ks[4], (n,), minval=distance_mm[0], maxval=distance_mm[1])
    xy = jax.random.uniform(ks[5], (n, 2), minval=-0.08, maxval=0.08) * z[:, None]
    translation = jnp.concatenate([xy, -z[:, None]], -1)
    log_fs = jnp.log(jax.random.uniform(ks[6], (n,), minval=focal_scale[0], maxval=focal_scale[1]))
    sizes = jnp.tile(jnp.array([[h, w]], jnp.float32), (n, 1))
    focal, principal = cam.intrinsics_from_image_size(sizes)
    camera = cam.Camera(rotvec, translation, log_fs, focal, principal)
    verts = jax.vmap(vertices, (None, 0, 0))(model, alpha, beta)
    pts = jax.vmap(lambda v, c: model_silhouette_landmarks(model, v, c))(verts, camera)
    clean = jax.vmap(cam.project)(camera, pts)
    noisy = clean + noise_px * jax.random.normal(ks[7], clean.shape)
    return SyntheticBatch(noisy, clean, sizes, verts, alpha, beta, camera)


def _euler_to_rotvec(angles):
    """(pitch about X, yaw about Y, roll about Z) in radians -> rotation vector of Rz Ry Rx."""
    rx = cam.rotation_matrix(jnp.array([angles[0], 0.0, 0.0]))
    ry = cam.rotation_matrix(jnp.array([0.0, angles[1], 0.0]))
    rz = cam.rotation_matrix(jnp.array([0.0, 0.0, angles[2]]))
    return cam.matrix_to_rotvec(rz @ ry @ rx)


def rotation_error_deg(rotvec_a, rotvec_b):
    """Angle ``[...]`` in degrees between rotations given as rotation vectors ``[..., 3]``."""
    ra, rb = cam.rotation_matrix(rotvec_a), cam.rotation_matrix(rotvec_b)
    rel = jnp.einsum("...ji,...jk->...ik", ra, rb)
    cos = (jnp.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return jnp.rad2deg(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def numpy(batch: SyntheticBatch):
    """Host copy (numpy leaves)."""
    return jax.tree.map(np.asarray, batch)
