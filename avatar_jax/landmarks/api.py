"""Face detection + landmarks: one call per image, one per batch of files.

    faces = detect_faces(load_image("photo.jpg"))       # list[FaceLandmarks], largest first
    results = detect_batch(["a.jpg", "b.png"])           # list[ImageFaces | ImageError]

Backends: ``"mediapipe"`` (default; packaged LiteRT models) and ``"dlib"`` (optional extra
``avatar-jax[dlib]``). Routes from the 468/478 mesh to iBUG-68 (mediapipe only):
``"refined"`` (default; silhouette jaw + barycentric mapping, see :mod:`.ibug68`),
``"silhouette"`` (the same jaw with the plain mesh vertices), ``"baseline"`` (the plain index
list), or a callable ``route(mesh478 [478, 3], image_size (h, w)) -> [68, 2]``. The routes that
fit the head model to the mesh (``avatar_jax.fit.dense.fitted68`` and ``hybrid68``) are such
callables: this stage never fits, so pass them in (``avatar_jax.pipeline.detect`` also takes
them by name). Accuracy and cost of each: docs/landmarks.md.

The mediapipe backend keeps one loaded :class:`~.mediapipe.FaceMeshPipeline` per option set in a
small module cache (LiteRT interpreters are expensive to create); pass ``pipeline=`` to control it.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Sequence, Union

import numpy as np

from avatar_jax.io.image import ImageLoadError, load_image
from avatar_jax.landmarks import ibug68
from avatar_jax.landmarks.mediapipe import FaceMeshPipeline
from avatar_jax.landmarks.types import FaceLandmarks, ImageError, ImageFaces
from avatar_jax.status import Status

Route = Union[str, Callable[[np.ndarray], np.ndarray]]
BACKENDS = ("mediapipe", "dlib")


@functools.lru_cache(maxsize=4)
def default_pipeline(num_threads: int = 1, iris: bool = True) -> FaceMeshPipeline:
    """The shared mediapipe pipeline for these options (created on first use)."""
    return FaceMeshPipeline(num_threads=num_threads, iris=iris)


def detect_faces(image: np.ndarray, backend: str = "mediapipe", max_faces: int | None = None,
                 route: Route = "refined", small_faces: bool | None = None,
                 pipeline: FaceMeshPipeline | None = None) -> list[FaceLandmarks]:
    """All faces in an RGB image ``[H, W, 3]`` uint8, largest first (at most ``max_faces``).

    Args:
      backend: ``"mediapipe"`` or ``"dlib"``.
      route: 468 -> 68 mapping for mediapipe (their accuracy, measured by
        ``benchmarks/landmarks.py``, is in docs/landmarks.md): ``"refined"`` (default: silhouette
        jaw and the packaged mapping, fitted to dlib's 300-W-trained predictor on other photos --
        treat it as non-commercial, see ``avatar_jax/landmarks/data/README.md``),
        ``"silhouette"`` (the same silhouette jaw with the plain mesh vertices, nothing fitted
        to labels), ``"baseline"`` (the common index list) or a callable
        ``(mesh [478, 3], image_size) -> [68, 2]`` such as ``avatar_jax.fit.dense.hybrid68``
        (refined jaw + inner points of the head model fitted to all 468 points).
      small_faces: tiled pass for small faces: None = only if the full frame finds none,
        True = always, False = never (see :class:`~.mediapipe.FaceMeshPipeline`).
      pipeline: a mediapipe pipeline to use instead of :func:`default_pipeline`.

    Raises:
      ValueError: bad image shape/dtype, unknown backend or route, ``max_faces`` < 1.
    """
    image = _check_image(image)
    if max_faces is not None and max_faces < 1:
        raise ValueError(f"detect_faces: max_faces must be >= 1 or None, got {max_faces}")
    if backend == "dlib":
        from avatar_jax.landmarks.dlib_backend import detect_faces_dlib

        return detect_faces_dlib(image, max_faces=max_faces)
    if backend != "mediapipe":
        raise ValueError(f"detect_faces: unknown backend {backend!r}; expected one of {BACKENDS}")
    to68 = _route_fn(route, image.shape[:2])
    pipeline = pipeline or default_pipeline()
    return [FaceLandmarks(box=np.concatenate([r.landmarks[:, :2].min(0), r.landmarks[:, :2].max(0)]),
                          score=r.detection.score, landmarks68=to68(r.landmarks),
                          landmarks478=r.landmarks, backend="mediapipe")
            for r in pipeline(image, max_faces=max_faces, small_faces=small_faces)]


def detect_batch(paths: Sequence[str | os.PathLike], **kwargs) -> list[ImageFaces | ImageError]:
    """:func:`detect_faces` on each file; a file that fails gives an :class:`ImageError` (one
    line: path and reason) in its place and the others carry on. Same order as ``paths``."""
    results: list[ImageFaces | ImageError] = []
    for path in paths:
        try:
            image = load_image(path)
            faces = detect_faces(image, **kwargs)
            results.append(ImageFaces(path=str(path), faces=faces, image_size=image.shape[:2]))
        except ImageLoadError as e:
            results.append(ImageError(path=str(path), message=str(e)))
        except (ValueError, RuntimeError, OSError) as e:
            results.append(ImageError(path=str(path), message=f"{path}: {type(e).__name__}: {e}",
                                      status=Status.FAILED))
    return results


ROUTES = ("refined", "silhouette", "baseline")
FITTED_ROUTES = ("fitted", "hybrid")  # resolved by avatar_jax.pipeline (they fit the head model)


def _route_fn(route: Route, image_size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    if callable(route):
        return lambda mesh: route(mesh, image_size)
    if route == "refined":
        return ibug68.refined68
    if route == "silhouette":
        return lambda mesh: ibug68.refined68(mesh, ibug68.identity_mapping())
    if route == "baseline":
        return ibug68.baseline68
    if route in FITTED_ROUTES:
        raise ValueError(f"detect_faces: route {route!r} fits the head model, which the landmarks "
                         f"stage does not do: pass avatar_jax.fit.dense.{route}68 as the route, or "
                         f"call avatar_jax.pipeline.detect(image, route={route!r})")
    raise ValueError(f"detect_faces: unknown route {route!r}; expected one of {ROUTES} or a callable")


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"detect_faces: image must be [H, W, 3] uint8 RGB, got shape {image.shape} "
                         f"dtype {image.dtype} (use avatar_jax.io.image.load_image)")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"detect_faces: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)
