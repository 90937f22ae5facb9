"""model stage of avatar-jax: the low-poly head model (data + pure functions on it)."""

from .head import (
    ALIGNMENT_LANDMARKS,
    JAW_LANDMARKS,
    HeadModel,
    apply_laplacian,
    landmarks,
    laplacian_matrix,
    sample_surface,
    vertices,
)
from .arkit import ARKIT_NAMES
from .load import HeadModelError, load_head_model

__all__ = [
    "ALIGNMENT_LANDMARKS", "ARKIT_NAMES", "JAW_LANDMARKS", "HeadModel", "HeadModelError", "apply_laplacian",
    "landmarks", "laplacian_matrix", "load_head_model", "sample_surface", "vertices",
]
