"""Photo -> textured head avatar: detection, fitting, texture, export (paper sections 3.4-3.5).

``reconstruct(paths, out_dir)`` runs the whole pipeline on a batch of photos. Every failure (an
unreadable file, no face, a failed fit) is reported per photo and never stops the others.

The base shape P is pluggable: ``shape_source(image, face) -> [V, 3] | None``. None (the default,
until a regressor checkpoint exists) fits the identity jointly from the landmarks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import jax
import numpy as np

from avatar_jax.fit import FitConfig, fit
from avatar_jax.fit.fitting import STATUS_NAMES, STATUS_OK
from avatar_jax.io.export import write_glb, write_obj
from avatar_jax.io.image import ImageLoadError, load_image
from avatar_jax.landmarks.api import FaceLandmarks, detect_faces
from avatar_jax.model import HeadModel, load_head_model

FORMATS = ("glb", "obj")
ShapeSource = Callable[[np.ndarray, FaceLandmarks], "np.ndarray | None"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one photo (or one face of it)."""

    path: str
    status: str  # "ok", "unreadable", "no face", "fit failed", "failed" (texture/export error)
    message: str = ""
    files: tuple[str, ...] = ()
    face: int = 0


@dataclasses.dataclass(frozen=True)
class Options:
    texture_size: int = 2048
    formats: tuple[str, ...] = FORMATS
    backend: str = "mediapipe"
    all_faces: bool = False
    overlay: bool = True
    config: FitConfig = FitConfig()


def _detect(path: str, options: Options):
    """(image, faces) or an Outcome saying why not."""
    try:
        image = load_image(path)
    except ImageLoadError as err:
        return Outcome(path, "unreadable", str(err))
    # No tiled small-face pass: a face under ~100 px gives no usable texture, and the tiled pass
    # can fire on animal faces (see docs/landmarks.md).
    faces = detect_faces(image, backend=options.backend, max_faces=None if options.all_faces else 1,
                         **({"small_faces": False} if options.backend == "mediapipe" else {}))
    if not faces:
        return Outcome(path, "no face", f"{path}: no face found")
    return image, faces


def reconstruct(paths: Sequence[str | Path], out_dir: str | Path, options: Options = Options(), *,
                model: HeadModel | None = None, shape_source: ShapeSource | None = None,
                progress: Callable | None = None) -> list[Outcome]:
    """Reconstruct a textured avatar for each photo into ``out_dir``; one Outcome per face."""
    model = model or load_head_model()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    iterator = progress(paths) if progress else paths
    for path in iterator:
        path = str(path)
        t0 = time.perf_counter()
        found = _detect(path, options)
        if isinstance(found, Outcome):
            outcomes.append(found)
            continue
        image, faces = found
        timings = {"detect_s": time.perf_counter() - t0}
        for i, face in enumerate(faces):
            try:
                outcomes.append(_one_face(path, image, face, i, len(faces), out_dir, options, model,
                                          shape_source, dict(timings)))
            except (ValueError, RuntimeError, OSError) as err:  # keep the batch going
                outcomes.append(Outcome(path, "failed", f"{path}: {type(err).__name__}: {err}", face=i))
    return outcomes


def _one_face(path, image, face, index, count, out_dir, options, model, shape_source, timings):
    stem = Path(path).stem + (f"_face{index}" if count > 1 else "")
    t = time.perf_counter()
    base = shape_source(image, face) if shape_source else None
    res = fit(face.landmarks68[None], np.array([image.shape[:2]], np.float32),
              None if base is None else np.asarray(base)[None], options.config, model=model)
    res = jax.tree.map(lambda a: np.asarray(a)[0], res)
    timings["fit_s"] = time.perf_counter() - t
    if int(res.status) != STATUS_OK:
        return Outcome(path, "fit failed", f"{path}: fit failed ({STATUS_NAMES[int(res.status)]})", face=index)
    from avatar_jax.texture.caps import capped_model, extend_vertices

    # The eye and mouth openings are capped (caps follow their rims in every morph target):
    # the texture is laid out for, and the files hold, the capped mesh.
    capped, caps = capped_model(model)
    verts = np.asarray(extend_vertices(caps, res.vertices))
    texture, timings = _texture(image, verts, res.camera, capped, caps, options.texture_size, timings)
    files = _export(out_dir / stem, verts, texture, capped, options, timings)
    if options.overlay:
        files.append(_write_overlay(out_dir / f"{stem}_overlay.png", image, face, res, model))
    files.append(_write_report(out_dir / f"{stem}.json", path, face, res, model, timings))
    return Outcome(path, "ok", "", tuple(str(f) for f in files), index)


def _texture(image, verts, camera, capped, caps, size, timings):
    """Texture ``[S, S, 3]`` of the capped mesh ``verts`` (so the photo's eyes and teeth land on
    the caps): :func:`avatar_jax.texture.bake.bake_texture` does projection, foreground
    restriction, mirroring and the skin fill."""
    from avatar_jax.texture.bake import bake_plan, bake_texture

    plan = bake_plan(capped, size, np.arange(capped.num_vertices) >= caps.num_base)
    info = {}
    texture = bake_texture(np.asarray(image, np.uint8), verts, camera, capped, size, plan=plan,
                           diagnostics=info)
    timings["texture_project_s"] = info["timings"]["project"]
    timings["texture_complete_s"] = info["timings"]["fill"] + info["timings"]["compose"]
    return texture, timings


def _export(stem: Path, verts, texture, capped, options, timings) -> list[Path]:
    """Write the capped mesh ``verts``; its expression shapes become glTF morph targets."""
    t = time.perf_counter()
    files = []
    tris, uvs, tuv = (np.asarray(a) for a in (capped.triangles, capped.uvs, capped.triangle_uvs))
    if "obj" in options.formats:
        files += list(write_obj(stem, verts, tris, uvs, tuv, texture))
    if "glb" in options.formats:
        basis = np.asarray(capped.expression_basis)
        morphs = {n: basis[j] for j, n in enumerate(capped.expression_names)}
        files.append(write_glb(stem.with_suffix(".glb"), verts, tris, uvs, tuv, texture,
                               morph_targets=morphs, image_format="jpeg"))
    timings["export_s"] = time.perf_counter() - t
    return files


def _write_overlay(path: Path, image, face, res, model) -> Path:
    """Photo with the mesh wireframe (grey), detected (green) and fitted (red) landmarks."""
    from avatar_jax.geometry.camera import project

    canvas = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    px = np.asarray(project(res.camera, res.vertices))
    edges = np.asarray(model.triangles)[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    lines = np.round(px[edges]).astype(np.int32)
    cv2.polylines(canvas, list(lines), False, (200, 200, 200), 1, cv2.LINE_AA)
    radius = max(1, round(max(image.shape[:2]) / 400))
    for pts, colour in ((face.landmarks68, (0, 200, 0)), (res.landmarks2d, (0, 0, 255))):
        for x, y in np.round(pts).astype(int):
            cv2.circle(canvas, (int(x), int(y)), radius + 1, colour, -1, cv2.LINE_AA)
    cv2.imwrite(str(path), canvas)
    return path


def _write_report(path: Path, photo, face, res, model, timings) -> Path:
    cam = res.camera
    report = {
        "photo": photo,
        "face": {"box": np.asarray(face.box).tolist(), "score": float(face.score), "backend": face.backend},
        "camera": {"rotvec": cam.rotvec.tolist(), "translation_mm": cam.translation.tolist(),
                   "focal_scale": float(np.exp(cam.log_fs)), "focal_px": float(np.exp(cam.log_fs) * cam.focal),
                   "principal_px": cam.principal.tolist(),
                   "convention": "X_view = R(rotvec) X + t, OpenGL eye space; see avatar_jax.geometry.camera"},
        "identity": res.identity.tolist(),
        "expression": dict(zip(model.expression_names, res.expression.tolist())),
        "energy": float(res.energy),
        "energy_terms": {k: float(v) for k, v in res.energy_terms.items()},
        "reprojection_error_px": float(res.reprojection_error),
        "timings_s": timings,
    }
    path.write_text(json.dumps(report, indent=1))
    return path
