"""evaluate stage of avatar-jax: ARMSE (3D, section 4.3 of the paper) and landmark NME (2D)."""

from avatar_jax.evaluate.align import (
    apply_similarity,
    icp,
    identity_similarity,
    similarity_from_correspondences,
)
from avatar_jax.evaluate.armse import ArmseResult, armse
from avatar_jax.evaluate.nme import landmark_nme

__all__ = [
    "ArmseResult",
    "apply_similarity",
    "armse",
    "icp",
    "identity_similarity",
    "landmark_nme",
    "similarity_from_correspondences",
]
