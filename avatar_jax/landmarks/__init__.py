"""landmarks stage of avatar-jax: face detection and 68/478-point landmarks (see docs/landmarks.md).

This stage never fits the head model: the fitted routes (``avatar_jax.fit.dense``) are passed in
as callables, or resolved by name in ``avatar_jax.pipeline.detect``.
"""

from avatar_jax.landmarks.api import ROUTES, detect_batch, detect_faces
from avatar_jax.landmarks.types import FaceLandmarks, ImageError, ImageFaces

__all__ = ["ROUTES", "FaceLandmarks", "ImageError", "ImageFaces", "detect_batch", "detect_faces"]
