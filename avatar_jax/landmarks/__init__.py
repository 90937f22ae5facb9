"""landmarks stage of avatar-jax: face detection and 68/478-point landmarks (see docs/landmarks.md)."""

from avatar_jax.landmarks.api import (FaceLandmarks, ImageError, ImageFaces, detect_batch,
                                      detect_faces)

__all__ = ["FaceLandmarks", "ImageError", "ImageFaces", "detect_batch", "detect_faces"]
