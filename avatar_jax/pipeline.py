"""The public pipeline, one function per stage: photo -> faces -> fit -> textured avatar -> files.

    image = load_image("me.jpg")
    faces = detect(image)                                  # [FaceLandmarks], largest first
    fits = fit_faces(image, faces)                         # FitResult, leading dim = len(faces)
    avatar = texture_avatar(image, face_fit(fits, 0))      # capped mesh + [S, S, 3] texture
    export_avatar(avatar, "out/me", formats=("glb", "obj"))

Each step takes the previous one's output and nothing private, so a caller can stop anywhere,
swap a stage (bring its own landmarks to ``fit_faces``, its own texture to :class:`Avatar`) or run
only the batched core (``avatar_jax.fit.fit``) on thousands of landmark sets.
:func:`avatar_jax.reconstruct.reconstruct` is these steps over a list of photos, with per-photo
error handling and reports.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

import cv2
import jax
import numpy as np

from avatar_jax.fit import FitConfig, FitResult, fit
from avatar_jax.fit import dense
from avatar_jax.fit.calibrated import calibrated_ibug68
from avatar_jax.fit.operators import LandmarkSet, ibug68 as ibug68_set
from avatar_jax.geometry.camera import Camera, project
from avatar_jax.io.export import write_glb, write_obj
from avatar_jax.landmarks import api as landmark_api
from avatar_jax.landmarks.api import FaceLandmarks, detect_faces
from avatar_jax.model import HeadModel, arkit, head, load_head_model
from avatar_jax.status import Status
from avatar_jax.texture import eyes, mouth
from avatar_jax.texture.bake import bake_plan, bake_texture
from avatar_jax.texture.caps import capped_model, extend_vertices

FORMATS = ("glb", "obj")
# The landmarks stage names the routes that fit the head model to MediaPipe's 468 points (and
# refuses them); their functions live in fit.dense as ``<name>68``, and detect() resolves them.
FITTED_ROUTES = {name: getattr(dense, f"{name}68") for name in landmark_api.FITTED_ROUTES}

SHAPE_SOURCES = ("landmarks", "dense", "regressor")
LANDMARKS_ON_HEAD = ("calibrated", "ict")

__all__ = ["FORMATS", "LANDMARKS_ON_HEAD", "SHAPE_SOURCES", "Avatar", "base_shapes", "batch_base_shapes", "detect",
           "export_avatar", "face_fit", "fit_faces", "fit_report", "head_landmark_set", "texture_avatar",
           "write_overlay", "write_report"]


def base_shapes(image: np.ndarray, faces: Sequence[FaceLandmarks], source: str = "landmarks", *,
                regressor=None, model: HeadModel | None = None) -> np.ndarray | None:
    """Base shapes P ``[F, V, 3]`` for :func:`fit_faces`, or None for ``"landmarks"``.

    - ``"landmarks"``: None: the fit estimates the identity from the 68 points with its prior.
    - ``"dense"``: the identity of the head model fitted to MediaPipe's 468 mesh points
      (:func:`avatar_jax.fit.dense.fit_dense` at their calibrated places with the shape source's
      prior, ``dense.SHAPE_CONFIG``), without its expression.
    - ``"regressor"``: a trained :class:`~avatar_jax.regress.Regressor` on the photo
      (:func:`avatar_jax.regress.regress`).

    Raises:
      ValueError: unknown source, a face without the 478-point mesh, no regressor given.
    """
    return batch_base_shapes([image] * len(faces), faces, source, regressor=regressor, model=model)


def batch_base_shapes(images: Sequence[np.ndarray], faces: Sequence[FaceLandmarks], source: str = "landmarks", *,
                      regressor=None, model: HeadModel | None = None) -> np.ndarray | None:
    """:func:`base_shapes` for faces of several photos (``images[i]`` holds ``faces[i]``), batched."""
    if source not in SHAPE_SOURCES:
        raise ValueError(f"base_shapes: source must be one of {SHAPE_SOURCES}, got {source!r}")
    if source == "landmarks":
        return None
    if source == "regressor":
        if regressor is None:
            raise ValueError("base_shapes: source 'regressor' needs a regressor (avatar_jax.regress.load_regressor)")
        from avatar_jax.regress import regress_faces

        return np.asarray(regress_faces(regressor, images, faces), np.float32)
    model = model or load_head_model()
    if any(f.landmarks478 is None for f in faces):
        raise ValueError("base_shapes: source 'dense' needs MediaPipe's mesh on every face (the mediapipe backend)")
    sizes = np.array([im.shape[:2] for im in images], np.float32)
    res = dense.fit_dense(np.stack([f.landmarks478 for f in faces]), sizes, model=model, config=dense.SHAPE_CONFIG,
                          landmark_set=dense.calibrated_mediapipe_set(model))
    return np.asarray(jax.vmap(lambda identity: head.vertices(model, identity))(res.identity), np.float32)


def detect(image: np.ndarray, *, backend: str = "mediapipe", route="refined", max_faces: int | None = 1,
           small_faces: bool | None = None) -> list[FaceLandmarks]:
    """Faces of an RGB ``[H, W, 3]`` uint8 image with 68 landmarks each, largest first.

    ``route`` is any of :func:`avatar_jax.landmarks.detect_faces`'s routes or ``"fitted"`` /
    ``"hybrid"`` (the head model fitted to all 468 MediaPipe points, ``avatar_jax.fit.dense``).
    ``small_faces``: None (default) tiles the image for small faces when the full frame (the
    full-range detector) finds none; True always tiles, False never (docs/landmarks.md).
    """
    route = FITTED_ROUTES.get(route, route) if isinstance(route, str) else route
    extra = {"route": route, "small_faces": small_faces} if backend == "mediapipe" else {}
    return detect_faces(image, backend=backend, max_faces=max_faces, **extra)


def head_landmark_set(model: HeadModel, name: str = "calibrated") -> LandmarkSet:
    """Where the 68 detected points sit on the head: ``"calibrated"`` (default for photos: where
    the detector sees them, :mod:`avatar_jax.fit.calibrated`) or ``"ict"`` (ICT FaceKit's own
    landmark vertices, the convention of landmarks projected from the model itself)."""
    if name not in LANDMARKS_ON_HEAD:
        raise ValueError(f"landmarks on head must be one of {LANDMARKS_ON_HEAD}, got {name!r}")
    return calibrated_ibug68(model) if name == "calibrated" else ibug68_set(model)


def fit_faces(image: np.ndarray, faces: Sequence[FaceLandmarks], *, config: FitConfig = FitConfig(),
              model: HeadModel | None = None, base_shapes=None, landmarks_on_head: str = "calibrated") -> FitResult:
    """Fit the head model to every face of one image in one batched call.

    Args:
      image: ``[H, W, 3]`` the photo (only its size is used).
      faces: detections with ``landmarks68 [68, 2]`` (NaN marks a missing point).
      base_shapes: optional ``[F, V, 3]`` base shapes P (e.g. from the regressor), one per face.
      landmarks_on_head: see :func:`head_landmark_set`.

    Returns:
      :class:`~avatar_jax.fit.FitResult` with leading dim F = ``len(faces)``; check ``status``.
    """
    if not faces:
        raise ValueError("fit_faces: no faces to fit")
    landmarks = np.stack([np.asarray(f.landmarks68, np.float32) for f in faces])
    sizes = np.tile(np.array(image.shape[:2], np.float32), (len(faces), 1))
    model = model or load_head_model()
    return fit(landmarks, sizes, base_shapes, config, model=model,
               landmark_set=head_landmark_set(model, landmarks_on_head))


def face_fit(result: FitResult, index: int) -> FitResult:
    """Item ``index`` of a batched :class:`FitResult`, as host numpy arrays (no leading dim)."""
    return jax.tree.map(lambda a: np.asarray(a)[index], result)


@dataclasses.dataclass(frozen=True)
class Avatar:
    """A textured head ready for export.

    Attributes:
      mesh: the capped head model (eye and mouth openings closed; its expression shapes become
        the glTF morph targets).
      vertices: ``[V', 3]`` the fitted head on ``mesh`` in millimetres, model space.
      texture: ``[S, S, 3]`` uint8 RGB UV texture.
      camera: the fitted camera (for overlays and re-projection).
      timings: seconds spent per texture step (``texture_project_s``, ``texture_complete_s``).
      expression: ``[Ke]`` the fitted expression weights that ``vertices`` contain (None: none);
        the .glb's rest pose takes them out and its default morph weights put them back.
    """

    mesh: HeadModel
    vertices: np.ndarray
    texture: np.ndarray
    camera: Camera
    timings: dict = dataclasses.field(default_factory=dict)
    expression: np.ndarray | None = None


def texture_avatar(image: np.ndarray, result: FitResult, *, model: HeadModel | None = None,
                   texture_size: int = 2048, hair: bool = True, delight: bool = True,
                   landmarks478: np.ndarray | None = None, mouth_interior: bool = True) -> Avatar:
    """Cap the fitted head's openings and bake the photo into a ``texture_size``² UV texture.

    ``result`` is one face's fit (:func:`face_fit`); ``model`` the head model it was fitted with.
    The caps follow their rims in every morph target, and the photo's eyes and teeth land on
    them (:func:`avatar_jax.texture.bake.bake_texture`: projection, foreground restriction,
    mirroring and the skin fill; with ``hair``, the unseen scalp in the photo's hair colour where
    the photo shows hair there; with ``delight``, the photo's light divided out so that the avatar
    can be lit anew, :mod:`avatar_jax.texture.delight`). With the face's MediaPipe ``landmarks478``
    (iris included, :class:`~avatar_jax.landmarks.FaceLandmarks`) the eye caps get a clean eye in
    the photo's iris colour and gaze (:mod:`avatar_jax.texture.eyes`) and, with ``mouth_interior``,
    the mouth cap a mouth interior, the photo inside its mouth opening and a dark cavity elsewhere
    (:mod:`avatar_jax.texture.mouth`); without, the photo's eyes and mouth.
    """
    if not 16 <= texture_size <= 8192:
        raise ValueError(f"texture_avatar: texture_size must be in [16, 8192], got {texture_size}")
    if np.ndim(result.vertices) != 2:
        raise ValueError("texture_avatar: pass one face's fit (face_fit(result, i)), got vertices of "
                         f"shape {np.shape(result.vertices)}")
    capped, caps = capped_model(model or load_head_model())
    vertices = np.asarray(extend_vertices(caps, result.vertices))
    plan = bake_plan(capped, texture_size, np.arange(capped.num_vertices) >= caps.num_base)
    info = {}
    image = np.asarray(image, np.uint8)
    texture = bake_texture(image, vertices, result.camera, capped, texture_size,
                           plan=plan, hair=hair, delight=delight, diagnostics=info)
    t = time.perf_counter()
    if landmarks478 is not None and len(landmarks478) >= 478:
        rims = eyes.eye_rims_px(vertices, caps.loops, result.camera, int(capped.nose_tip))
        loop_map = eyes.cap_loop_map(capped, caps, plan.uv_low)
        texture = eyes.paint_eye_caps(texture, info["pos"], loop_map, rims, eyes.observe_eyes(image, landmarks478))
        loop = mouth.mouth_loop(vertices, caps.loops, int(capped.nose_tip))
        if mouth_interior and loop is not None:
            texture = mouth.paint_mouth_cap(texture, image, info["pos"], info["gain"], loop_map, loop,
                                            mouth.observe_mouth(image, landmarks478))
    timings = {"texture_project_s": info["timings"]["project"],
               "texture_complete_s": info["timings"]["fill"] + info["timings"]["compose"],
               "texture_eyes_mouth_s": time.perf_counter() - t}
    return Avatar(capped, vertices, texture, result.camera, timings, np.asarray(result.expression))


def export_avatar(avatar: Avatar, stem: str | Path, formats: Sequence[str] = FORMATS, *,
                  blendshape_names: str = "arkit") -> list[Path]:
    """Write ``stem.glb`` (a rig: expression shapes as morph targets, JPEG texture) and/or
    ``stem.obj`` (+ .mtl and .png, the head as fitted); returns the paths written.

    The .glb's rest pose is the fitted head without its expression, and its default morph weights
    are the fitted expression, so it shows the photo's expression until a rig or an animation
    drives the weights. ``blendshape_names``: ``"arkit"`` (Apple's 52 names,
    :mod:`avatar_jax.model.arkit`) or ``"ict"`` (the head model's 53 ICT-FaceKit shapes as they are).
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"export_avatar: unknown formats {sorted(unknown)}; expected some of {FORMATS}")
    if blendshape_names not in arkit.NAMINGS:
        raise ValueError(f"export_avatar: blendshape_names must be one of {arkit.NAMINGS}, got {blendshape_names!r}")
    stem, mesh = Path(stem), avatar.mesh
    tris, uvs, tuv = (np.asarray(a) for a in (mesh.triangles, mesh.uvs, mesh.triangle_uvs))
    files = []
    if "obj" in formats:
        files += list(write_obj(stem, avatar.vertices, tris, uvs, tuv, avatar.texture))
    if "glb" in formats:
        morphs = arkit.blendshapes(mesh.expression_basis, mesh.expression_names, blendshape_names)
        weights = _morph_weights(avatar, blendshape_names)
        rest = np.asarray(avatar.vertices) - np.einsum("k,kvd->vd", weights, np.stack(list(morphs.values())))
        files.append(write_glb(stem.with_suffix(".glb"), rest, tris, uvs, tuv, avatar.texture,
                               morph_targets=morphs, morph_weights=weights, image_format="jpeg"))
    return files


def _morph_weights(avatar: Avatar, naming: str) -> np.ndarray:
    """``[K]`` the avatar's fitted expression as weights of the ``naming`` morph targets."""
    mesh = avatar.mesh
    if avatar.expression is None:
        return np.zeros(len(arkit.ARKIT_NAMES) if naming == "arkit" else mesh.num_expression)
    weights = arkit.expression_weights(avatar.expression, mesh.expression_basis, mesh.expression_names, naming)
    return np.array(list(weights.values()))


def write_overlay(path: str | Path, image: np.ndarray, face: FaceLandmarks, result: FitResult,
                  model: HeadModel) -> Path:
    """The photo with the fitted mesh's wireframe (grey), detected (green) and fitted (red)
    landmarks, as an image file."""
    canvas = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    px = np.asarray(project(result.camera, result.vertices))
    edges = np.asarray(model.triangles)[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    cv2.polylines(canvas, list(np.round(px[edges]).astype(np.int32)), False, (200, 200, 200), 1, cv2.LINE_AA)
    radius = max(1, round(max(image.shape[:2]) / 400))
    for pts, colour in ((face.landmarks68, (0, 200, 0)), (result.landmarks2d, (0, 0, 255))):
        for x, y in np.round(np.nan_to_num(pts, nan=-10.0)).astype(int):
            cv2.circle(canvas, (int(x), int(y)), radius + 1, colour, -1, cv2.LINE_AA)
    path = Path(path)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"write_overlay: could not write {path}")
    return path


def fit_report(result: FitResult, model: HeadModel, *, blendshape_names: str = "arkit") -> dict:
    """One face's fit as JSON-ready numbers: camera, identity, expression (weights under
    ``blendshape_names``, as :func:`export_avatar` names the morph targets), energies, status."""
    cam = result.camera
    return {
        "status": Status.of(result.status).label,
        "camera": {"rotvec": np.asarray(cam.rotvec).tolist(), "translation_mm": np.asarray(cam.translation).tolist(),
                   "focal_scale": float(np.exp(cam.log_fs)), "focal_px": float(np.exp(cam.log_fs) * cam.focal),
                   "principal_px": np.asarray(cam.principal).tolist(),
                   "convention": "X_view = R(rotvec) X + t, OpenGL eye space; see avatar_jax.geometry.camera"},
        "identity": np.asarray(result.identity).tolist(),
        "blendshape_names": blendshape_names,
        "expression": arkit.expression_weights(result.expression, model.expression_basis, model.expression_names,
                                               blendshape_names),
        "energy": float(result.energy),
        "energy_terms": {k: float(v) for k, v in result.energy_terms.items()},
        "reprojection_error_px": float(result.reprojection_error),
    }


def write_report(path: str | Path, photo: str, face: FaceLandmarks, result: FitResult, model: HeadModel,
                 timings: dict, *, blendshape_names: str = "arkit", shape_source: str = "landmarks") -> Path:
    """``path`` (.json): the photo, the detection, the base shape's source and :func:`fit_report`,
    with per-stage timings."""
    report = {"photo": photo,
              "face": {"box": np.asarray(face.box).tolist(), "score": float(face.score), "backend": face.backend},
              "shape_source": shape_source,
              **fit_report(result, model, blendshape_names=blendshape_names), "timings_s": timings}
    path = Path(path)
    path.write_text(json.dumps(report, indent=1))
    return path

