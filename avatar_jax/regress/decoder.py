"""The paper's FC vertex decoder (section 3.3): an embedding of the face to the head's vertices.

    features [B, D] -> Dense(128) -> ReLU -> Dense(200) -> Dense(3V) -> [B, V, 3]

The last layer starts as the training shapes' PCA: its kernel holds the top principal
components (scaled by their standard deviations, so the 200-unit layer starts as unit-variance
PCA coefficients) and its bias the mean shape; the 200-unit layer is therefore linear (a ReLU
there would keep every coefficient positive). An untrained decoder whose middle layer outputs
zeros returns exactly the training mean, and :func:`init_decoder` starts it there.

The loss is the paper's per-vertex L1 with face vertices weighted up: ``face_weight`` within
``face_radius_mm`` of the mean shape's nose tip, 1 elsewhere (:func:`vertex_weights`,
:func:`weighted_l1`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HIDDEN = 128
COMPONENTS = 200


class VertexDecoder(nn.Module):
    """``[B, D]`` normalised features -> ``[B, V, 3]`` vertices (mm, model frame)."""

    num_vertices: int
    hidden: int = HIDDEN
    components: int = COMPONENTS

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(features))
        coefficients = nn.Dense(self.components, name="coefficients")(h)
        flat = nn.Dense(3 * self.num_vertices, name="shape")(coefficients)
        return flat.reshape(features.shape[:-1] + (self.num_vertices, 3))


@dataclasses.dataclass(frozen=True)
class ShapePCA:
    """Mean ``[V, 3]`` and ``components`` ``[C, V, 3]`` (each scaled by its standard deviation, mm)."""

    mean: np.ndarray
    components: np.ndarray


def shape_pca(shapes, num_components: int = COMPONENTS) -> ShapePCA:
    """PCA of training shapes ``[N, V, 3]``; components past the data's rank are zero, so the
    decoder's layer sizes do not depend on N."""
    shapes = np.asarray(shapes, np.float64)
    if shapes.ndim != 3 or shapes.shape[-1] != 3 or len(shapes) < 2:
        raise ValueError(f"shape_pca: shapes must be [N >= 2, V, 3], got {shapes.shape}")
    if not np.all(np.isfinite(shapes)):
        raise ValueError("shape_pca: shapes contain NaN or inf")
    n, v = shapes.shape[:2]
    mean = shapes.mean(0)
    _, sv, vt = np.linalg.svd((shapes - mean).reshape(n, -1), full_matrices=False)
    k = min(num_components, len(sv))
    comps = np.zeros((num_components, v * 3))
    comps[:k] = vt[:k] * (sv[:k, None] / np.sqrt(n - 1))
    return ShapePCA(mean.astype(np.float32), comps.reshape(num_components, v, 3).astype(np.float32))


def init_decoder(decoder: VertexDecoder, key: jax.Array, input_dim: int, pca: ShapePCA) -> dict:
    """Decoder parameters: random hidden layers (Flax defaults), the last layer set to ``pca``."""
    if pca.components.shape != (decoder.components, decoder.num_vertices, 3):
        raise ValueError(f"init_decoder: PCA components {pca.components.shape} do not match the decoder "
                         f"({decoder.components}, {decoder.num_vertices}, 3)")
    params = decoder.init(key, jnp.zeros((1, input_dim), jnp.float32))["params"]
    shape_layer = {"kernel": jnp.asarray(pca.components.reshape(decoder.components, -1)),
                   "bias": jnp.asarray(pca.mean.reshape(-1))}
    # Zero coefficients at the start: training begins exactly at the mean shape (the bar to beat)
    # instead of at a random PCA combination; the gradient reaches the hidden layer from step 2.
    coefficients = {**params["coefficients"], "kernel": jnp.zeros_like(params["coefficients"]["kernel"])}
    return {**params, "coefficients": coefficients, "shape": shape_layer}


def vertex_weights(mean_shape, nose_tip: int, face_radius_mm: float = 95.0,
                   face_weight: float = 5.0) -> np.ndarray:
    """``[V]`` loss weights: ``face_weight`` within ``face_radius_mm`` of the nose tip, else 1."""
    mean_shape = np.asarray(mean_shape, np.float32)
    near = np.linalg.norm(mean_shape - mean_shape[nose_tip], axis=-1) < face_radius_mm
    return np.where(near, face_weight, 1.0).astype(np.float32)


def weighted_l1(pred: jax.Array, true: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean over the batch of ``sum_v w_v |pred_v - true_v|_1 / sum_v w_v`` (mm); ``[B, V, 3]``."""
    per_vertex = jnp.sum(jnp.abs(pred - true), -1)
    return jnp.mean(per_vertex @ weights / jnp.sum(weights))


def face_error_mm(pred, true, face_mask) -> jax.Array:
    """``[B]`` RMS vertex distance (mm) over the ``[V]`` bool face mask (same frame, no alignment:
    both are neutral identity shapes in the model frame)."""
    d2 = jnp.sum((jnp.asarray(pred) - jnp.asarray(true)) ** 2, -1)
    mask = jnp.asarray(face_mask, jnp.float32)
    return jnp.sqrt(d2 @ mask / jnp.sum(mask))
