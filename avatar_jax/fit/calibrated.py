"""iBUG-68 landmarks of the head model placed where the 68-point detector sees them.

ICT FaceKit's 68 landmark vertices follow its authors' convention; the detector's points (on
renders with known meshes) sit off them by several millimetres in places, which a fit to detected
points would absorb into the identity. ``tools/calibrate_ibug68_on_head.py`` moves each inner
point (17-67) to the surface point whose projection best matches the detector; the jaw still
slides along the silhouette. Pass the set as ``fit(..., landmark_set=calibrated_ibug68(model))``.
Measured effect: docs/landmarks.md ("Landmarks on the head").
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from avatar_jax._identity_cache import IdentityCache
from avatar_jax.fit.operators import LandmarkSet
from avatar_jax.model.head import JAW_LANDMARKS, HeadModel

CALIBRATED_FILE = Path(__file__).resolve().parent / "data" / "ibug68_calibrated.npz"
_SETS = IdentityCache()


def load_surface_points(path: str | Path, num_points: int, model: HeadModel,
                        caller: str) -> tuple[np.ndarray, np.ndarray]:
    """``faces`` ``[K, 3]`` int32 and ``bary`` ``[K, 3]`` float32 of K = ``num_points`` surface
    points stored in ``path``, checked against ``model`` (errors name ``caller``).

    Raises:
      FileNotFoundError: no such file. ValueError: wrong shapes, or vertex ids beyond the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: no landmark file {path}")
    with np.load(path) as data:
        faces, bary = np.asarray(data["faces"], np.int32), np.asarray(data["bary"], np.float32)
    if faces.shape != (num_points, 3) or bary.shape != (num_points, 3):
        raise ValueError(f"{caller}: {path} must hold faces and bary of shape [{num_points}, 3], "
                         f"got {faces.shape} and {bary.shape}")
    if faces.min() < 0 or faces.max() >= model.num_vertices:
        raise ValueError(f"{caller}: {path} refers to vertex {int(faces.max())}, the model has "
                         f"{model.num_vertices} (built for another head?)")
    return faces, bary


def load_ibug68_set(model: HeadModel, path: str | Path = CALIBRATED_FILE) -> LandmarkSet:
    """The 68-point :class:`LandmarkSet` stored in ``path`` (``faces``/``bary`` ``[68, 3]``) for ``model``.

    Raises:
      FileNotFoundError: no such file. ValueError: wrong shapes, or vertex ids beyond the model.
    """
    faces, bary = load_surface_points(path, 68, model, "load_ibug68_set")
    return LandmarkSet(jnp.asarray(faces), jnp.asarray(bary), JAW_LANDMARKS)


def calibrated_ibug68(model: HeadModel) -> LandmarkSet:
    """The packaged calibrated set (the same object per model, so the fit's precomputation is reused)."""
    return _SETS.get((model,), None, lambda: load_ibug68_set(model))
