"""The head model fitted to MediaPipe's 468 mesh points, and the fitted landmark routes to iBUG-68.

    lms = mediapipe_landmark_set(model)                  # LandmarkSet, K = 468
    result = fit_dense(face.landmarks478, image.shape[:2])   # FitResult, B = 1
    pts68 = fitted_landmarks68(result)[0]               # [68, 2] pixels
    faces = detect_faces(image, route=hybrid68)         # a fitted route, passed in

The embedding (``data/mediapipe468_on_head.npz``, built by ``tools/embed_mediapipe_on_head.py``)
puts each canonical-face point on a triangle of the head (face ids + barycentric coordinates).
:func:`fit_dense` fits the head to the 468 points' image x/y (MediaPipe's z is relative, not
metric, and is ignored) with the fitting issue's energy; :func:`fitted_landmarks68` projects the
fitted mesh's own 68 landmarks, the jaw on the fitted mesh's silhouette under the fitted camera.
The 3D model thereby regularises the places where the mesh detector is weak (the jaw).

Per-point weights (:func:`dense_confidence`) are set from the embedding alone, never from
labelled photos: every point gets ``68 / 468`` so that the total landmark weight equals the
68-point fit's (the paper's weights wc, wr were set for that), times a down-weight for points the
head represents poorly (embedding residual) and for the eyelid-margin rings, which sit over the
head's eye opening and move with blinks the expression model barely spans.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax._identity_cache import IdentityCache
from avatar_jax.fit.calibrated import load_surface_points
from avatar_jax.fit.config import FitConfig
from avatar_jax.fit.fitting import FitResult, fit
from avatar_jax.fit.operators import LandmarkSet
from avatar_jax.geometry import camera as cam
from avatar_jax.landmarks import ibug68
from avatar_jax.model.head import HeadModel, silhouette_landmarks
from avatar_jax.model.head import landmarks as head_landmarks

DATA = Path(__file__).resolve().parent / "data"
EMBEDDING_FILE = DATA / "mediapipe468_on_head.npz"
NUM_MESH_POINTS = 468
EYE_CORNERS = (33, 263)  # outermost eye corners (subject's right, left): W_eye of the landmark term
# Eyelid-margin rings of the mesh (MediaPipe's FACEMESH_RIGHT_EYE / FACEMESH_LEFT_EYE contours).
EYE_CONTOURS = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
)
EYE_CONTOUR_WEIGHT = 0.25
RESIDUAL_SCALE_MM = 1.0  # embedding residual at which a point's weight halves
# The dense routes were designed and measured (docs/landmarks.md) with this identity prior: 468
# points pin the identity far better than 68, so the 68-point default (tuned on detector noise)
# would only pull their jaw towards the mean face.
DENSE_CONFIG = FitConfig(identity_weight=0.1)
# The dense *shape source* (pipeline.base_shapes "dense") asks another question, the identity
# itself, and detector noise then wants a stronger prior; the weight and the calibrated places
# were chosen on training renders (docs/regress.md, "dense shape source").
CALIBRATED_FILE = DATA / "mediapipe468_calibrated.npz"
SHAPE_CONFIG = FitConfig(identity_weight=3.0)


@functools.lru_cache(maxsize=1)
def embedding() -> dict[str, np.ndarray]:
    """The packaged embedding: ``faces [468, 3]`` int32, ``bary [468, 3]`` float32,
    ``residual_mm [468]`` float32 (see ``tools/embed_mediapipe_on_head.py``)."""
    if not EMBEDDING_FILE.is_file():
        raise ValueError(f"MediaPipe embedding file missing: {EMBEDDING_FILE} "
                         "(run tools/embed_mediapipe_on_head.py)")
    with np.load(EMBEDDING_FILE) as d:
        out = {k: d[k] for k in ("faces", "bary", "residual_mm")}
    for name, shape in (("faces", (NUM_MESH_POINTS, 3)), ("bary", (NUM_MESH_POINTS, 3)),
                        ("residual_mm", (NUM_MESH_POINTS,))):
        if out[name].shape != shape:
            raise ValueError(f"{EMBEDDING_FILE}: {name} has shape {out[name].shape}, expected {shape}")
    return out


_SETS: IdentityCache[LandmarkSet] = IdentityCache(maxsize=4)


def mediapipe_landmark_set(model: HeadModel) -> LandmarkSet:
    """The 468 MediaPipe points as a :class:`LandmarkSet` of ``model`` (no sliding points; eye
    corners 33/263). The same object is returned for the same model, so :func:`fit`'s
    precomputation is reused."""
    def make():
        emb = embedding()
        if int(emb["faces"].max()) >= model.num_vertices:
            raise ValueError(f"MediaPipe embedding refers to vertex {int(emb['faces'].max())}, the model "
                             f"has {model.num_vertices} vertices (embedding built for another head?)")
        return LandmarkSet(jnp.asarray(emb["faces"]), jnp.asarray(emb["bary"]), sliding=(),
                           eye_corners=EYE_CORNERS)

    return _SETS.get((model,), None, make)


def calibrated_mediapipe_set(model: HeadModel) -> LandmarkSet:
    """The 468 points placed where MediaPipe sees them on renders with known meshes
    (``data/mediapipe468_calibrated.npz``, ``tools/calibrate_ibug68_on_head.py --points
    mediapipe468``), as a :class:`LandmarkSet` of ``model``; the same object for the same model."""
    def make():
        faces, bary = load_surface_points(CALIBRATED_FILE, NUM_MESH_POINTS, model, "calibrated_mediapipe_set")
        return LandmarkSet(jnp.asarray(faces), jnp.asarray(bary), sliding=(), eye_corners=EYE_CORNERS)

    return _SETS.get((model,), "calibrated", make)


@functools.lru_cache(maxsize=1)
def dense_confidence() -> np.ndarray:
    """Per-point weights ``[468]`` float32 from the embedding (no labels involved): ``68/468``
    times ``1 / (1 + (residual / 1 mm)^2)``, times 0.25 on the eyelid-margin rings."""
    res = embedding()["residual_mm"].astype(np.float64)
    w = (68.0 / NUM_MESH_POINTS) / (1.0 + (res / RESIDUAL_SCALE_MM) ** 2)
    w[list(EYE_CONTOURS)] *= EYE_CONTOUR_WEIGHT
    return w.astype(np.float32)


def _default_model(model):
    if model is not None:
        return model
    from avatar_jax.model import load_head_model

    return load_head_model()


def fit_dense(landmarks, image_size, *, model: HeadModel | None = None,
              config: FitConfig = DENSE_CONFIG, confidence=None,
              landmark_set: LandmarkSet | None = None) -> FitResult:
    """Fit the head model to MediaPipe mesh points.

    Args:
      landmarks: ``[B, N, 2|3]`` or ``[N, 2|3]`` mesh points in pixels, N = 468 or 478 (the 10
        iris points are not used; z is ignored).
      image_size: ``(h, w)`` for all images, or ``[B, 2]``.
      model: head model (default: the bundled one).
      config: the fitting energy (default :data:`DENSE_CONFIG`, the paper's weights).
      confidence: ``[468]`` or ``[B, 468]`` per-point weights (default :func:`dense_confidence`).
      landmark_set: where the points sit on the head (default :func:`mediapipe_landmark_set`, the
        embedding; :func:`calibrated_mediapipe_set` for the places the detector sees).

    Returns:
      :class:`FitResult` with leading dimension B (1 for a single face).
    """
    model = _default_model(model)
    pts = np.asarray(landmarks, np.float32)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1] not in (468, 478) or pts.shape[2] not in (2, 3):
        raise ValueError(f"fit_dense: landmarks must be [B, 468|478, 2|3] or [468|478, 2|3], "
                         f"got {np.shape(landmarks)}")
    b = pts.shape[0]
    sizes = np.asarray(image_size, np.float32)
    sizes = np.broadcast_to(sizes, (b, 2)) if sizes.shape == (2,) else sizes
    if sizes.shape != (b, 2):
        raise ValueError(f"fit_dense: image_size must be (h, w) or [B, 2] = ({b}, 2), got {np.shape(image_size)}")
    conf = dense_confidence() if confidence is None else np.asarray(confidence, np.float32)
    conf = np.broadcast_to(conf, (b, NUM_MESH_POINTS)) if conf.shape == (NUM_MESH_POINTS,) else conf
    if conf.shape != (b, NUM_MESH_POINTS):
        raise ValueError(f"fit_dense: confidence must be [468] or [B, 468], got {np.shape(confidence)}")
    return fit(pts[:, :NUM_MESH_POINTS, :2], sizes, config=config, model=model,
               confidence=np.ascontiguousarray(conf),
               landmark_set=mediapipe_landmark_set(model) if landmark_set is None else landmark_set)


JAW_CONVENTIONS = ("silhouette", "3d")


@functools.partial(jax.jit, static_argnames="jaw")
def _projected68(model: HeadModel, vertices, camera: cam.Camera, jaw: str = "silhouette"):
    if jaw == "silhouette":
        one = lambda v, c: cam.project(c, silhouette_landmarks(model, v, c))
    else:
        one = lambda v, c: cam.project(c, head_landmarks(model, v))
    return jax.vmap(one)(vertices, camera)


def fitted_landmarks68(result: FitResult, model: HeadModel | None = None, jaw: str = "silhouette",
                       landmark_set: LandmarkSet | None = None) -> np.ndarray:
    """The fitted meshes' iBUG-68 landmarks projected by the fitted cameras, ``[B, 68, 2]`` pixels.

    ``jaw`` picks the convention of points 0-16: ``"silhouette"`` (default) takes the contour
    candidate on each fitted mesh's silhouette (smallest ``|n . view|``), where a 300-W annotator
    draws the jaw line of a turned head; ``"3d"`` projects the jaw landmarks' fixed surface points,
    hidden or not, as AFLW2000-3D and other 3D-fitted labels place them. Points 17-67 are the same.
    ``landmark_set``: the 68 points' embedding (default the model's own; e.g.
    :func:`avatar_jax.fit.calibrated.calibrated_ibug68`).
    """
    if jaw not in JAW_CONVENTIONS:
        raise ValueError(f"fitted_landmarks68: jaw must be one of {JAW_CONVENTIONS}, got {jaw!r}")
    model = _default_model(model)
    if landmark_set is not None:
        model = dataclasses.replace(model, landmark_faces=landmark_set.faces, landmark_bary=landmark_set.bary)
    return np.asarray(_projected68(model, result.vertices, result.camera, jaw=jaw))


def fitted68(mesh478: np.ndarray, image_size, model: HeadModel | None = None,
             config: FitConfig = DENSE_CONFIG) -> np.ndarray:
    """Route "fitted": ``[68, 2]`` from one face's mesh points ``[468|478, 2|3]``."""
    model = _default_model(model)
    return fitted_landmarks68(fit_dense(mesh478, image_size, model=model, config=config), model)[0]


def hybrid68(mesh478: np.ndarray, image_size, model: HeadModel | None = None,
             config: FitConfig = DENSE_CONFIG) -> np.ndarray:
    """Route "hybrid": the detector mesh's silhouette jaw (0-16, as route "refined") with the
    fitted model's inner points (17-67). The model's own jaw rule (contour candidates on the
    fitted silhouette) misplaces the far-side jaw of turned heads, while the mesh silhouette
    follows it; the fitted inner points are steadier than single mesh vertices."""
    out = fitted68(mesh478, image_size, model, config).copy()
    out[:17] = ibug68.refined68(mesh478)[:17]
    return out
