"""The geometric encoder: MediaPipe's 478-point face mesh, normalised for pose and scale.

MediaPipe returns x, y in pixels and a relative depth z on the same scale. The pose and the
distance to the camera say nothing about the person, so each mesh is mapped onto a template
by the best similarity (rotation, uniform scale, translation; Umeyama) and flattened:
``[B, 478, 3] -> [B, 1434]``. The template is the generalised-Procrustes mean of the training
meshes (:func:`mesh_template`) and travels with the trained regressor.

Images are y-down, so the meshes are flipped to y-up (a right-handed frame, with z towards the
camera) before alignment; a mirror is never used to align.
"""

from __future__ import annotations

import numpy as np

MESH_POINTS = 478


def _check_meshes(meshes, name: str) -> np.ndarray:
    meshes = np.asarray(meshes, np.float64)
    if meshes.ndim != 3 or meshes.shape[1:] != (MESH_POINTS, 3):
        raise ValueError(f"{name}: meshes must be [B, {MESH_POINTS}, 3], got {meshes.shape}")
    return meshes


def _y_up(meshes: np.ndarray) -> np.ndarray:
    return meshes * np.array([1.0, -1.0, -1.0])


def _normalised(meshes: np.ndarray) -> np.ndarray:
    """Centred, unit RMS radius ``[B, P, 3]``."""
    centred = meshes - meshes.mean(1, keepdims=True)
    return centred / np.sqrt(np.mean(np.sum(centred**2, -1), -1))[:, None, None]


def _align_to(meshes: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Each normalised mesh rotated and scaled onto ``template`` (least squares, no reflection)."""
    h = np.einsum("bpi,pj->bij", meshes, template)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", u, vt)))
    fix = np.ones((len(meshes), 3))
    fix[:, 2] = d
    rot = np.einsum("bij,bj,bjk->bik", u, fix, vt)  # maps mesh rows onto the template: x @ rot
    aligned = np.einsum("bpi,bij->bpj", meshes, rot)
    scale = np.sum(aligned * template, (1, 2)) / np.sum(aligned**2, (1, 2))
    return aligned * scale[:, None, None]


def mesh_template(meshes, iterations: int = 5) -> np.ndarray:
    """``[478, 3]`` generalised-Procrustes mean of training meshes ``[N, 478, 3]`` (NaN-free
    rows only; at least one)."""
    meshes = _check_meshes(meshes, "mesh_template")
    ok = np.all(np.isfinite(meshes), (1, 2))
    if not ok.any():
        raise ValueError("mesh_template: no mesh without NaN")
    shapes = _normalised(_y_up(meshes[ok]))
    template = shapes[0]
    for _ in range(iterations):
        template = _normalised(_align_to(shapes, template).mean(0, keepdims=True))[0]
    return template.astype(np.float32)


def mesh_features(meshes, template) -> np.ndarray:
    """``[B, 1434]`` float32 features of ``[B, 478, 3]`` meshes aligned onto ``template``
    ``[478, 3]``; rows of meshes with any NaN are NaN."""
    meshes = _check_meshes(meshes, "mesh_features")
    template = np.asarray(template, np.float64)
    if template.shape != (MESH_POINTS, 3):
        raise ValueError(f"mesh_features: template must be [{MESH_POINTS}, 3], got {template.shape}")
    ok = np.all(np.isfinite(meshes), (1, 2))
    out = np.full((len(meshes), MESH_POINTS * 3), np.nan, np.float32)
    if ok.any():
        out[ok] = _align_to(_normalised(_y_up(meshes[ok])), template).reshape(int(ok.sum()), -1)
    return out
