"""Non-rigid landmark fitting (paper section 3.4): energy terms, camera, EPnP, batched solver.

Quick use::

    from avatar_jax.fit import fit, FitConfig
    result = fit(landmarks, image_sizes)          # [B, 68, 2], [B, 2] -> FitResult
    joint = fit_joint(landmarks, image_sizes)     # [G, V, 68, 2]: one identity per group of photos

See :mod:`avatar_jax.fit.fitting` for the algorithm and :mod:`avatar_jax.fit.config` for the
energy's terms and weights.
"""

from avatar_jax.geometry.camera import Camera, camera_from_image_size, project, rotation_matrix, transform
from avatar_jax.fit.config import FitConfig, GemanMcClure, LinearTermSpec, PoseTermSpec
from avatar_jax.fit.fitting import FitResult, fit
from avatar_jax.fit.joint import JointFitResult, fit_joint
from avatar_jax.fit.terms import ShapeLayout
from avatar_jax.fit.operators import FitOperators, LandmarkSet, cached_operators, prepare
from avatar_jax.status import Status

__all__ = [
    "Camera", "camera_from_image_size", "project", "rotation_matrix", "transform",
    "FitConfig", "GemanMcClure", "LinearTermSpec", "PoseTermSpec",
    "FitOperators", "FitResult", "JointFitResult", "LandmarkSet", "ShapeLayout", "cached_operators", "fit",
    "fit_joint", "prepare",
    "Status",
]
