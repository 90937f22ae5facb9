"""landmarks stage of avatar-jax: face detection and 68/478-point landmarks (see docs/landmarks.md)."""

from avatar_jax.landmarks.api import (FaceLandmarks, ImageError, ImageFaces, detect_batch,
                                      detect_faces)

__all__ = ["FaceLandmarks", "ImageError", "ImageFaces", "detect_batch", "detect_faces",
           "fit_dense", "fitted_landmarks68", "mediapipe_landmark_set"]
_DENSE = ("fit_dense", "fitted_landmarks68", "mediapipe_landmark_set")


def __getattr__(name):
    # Lazy: the dense fit pulls in JAX and the fitter, which plain detection does not need.
    if name in _DENSE:
        from avatar_jax.landmarks import dense

        return getattr(dense, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
