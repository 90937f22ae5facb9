"""Photo -> textured head avatar for a list of photos (paper sections 3.4-3.5).

``reconstruct(paths, out_dir)`` runs :mod:`avatar_jax.pipeline`'s steps on each photo. Every
failure (an unreadable file, no face, a failed fit, an export error) is reported per photo as an
:class:`Outcome` with a :class:`~avatar_jax.status.Status` and never stops the others.

The base shape P is pluggable: ``Options.shape_source`` names one of
:data:`avatar_jax.pipeline.SHAPE_SOURCES` (``"landmarks"``, the default, fits the identity jointly
from the landmarks; ``"regressor"`` uses the shipped checkpoint or ``Options.regressor``), or a
caller passes ``shape_source(image, face) -> [V, 3] | None`` directly.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from avatar_jax import pipeline
from avatar_jax.fit import FitConfig
from avatar_jax.io.image import ImageLoadError, load_image
from avatar_jax.landmarks.api import FaceLandmarks
from avatar_jax.model import HeadModel, load_head_model
from avatar_jax.status import Status

FORMATS = pipeline.FORMATS
ShapeSource = Callable[[np.ndarray, FaceLandmarks], "np.ndarray | None"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one photo (or one face of it): ``status`` is ``OK``, ``UNREADABLE``,
    ``NO_FACE``, ``FIT_FAILED`` or ``FAILED`` (a texture or export error)."""

    path: str
    status: Status
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
    blendshape_names: str = "arkit"
    hair: bool = True  # the unseen scalp in the photo's hair colour (texture_avatar)
    delight: bool = True  # the photo's light divided out of the texture (texture_avatar)
    shape_source: str = "landmarks"  # base shape P: pipeline.SHAPE_SOURCES
    regressor: str | None = None  # a regressor .npz for shape_source "regressor" (None: the shipped one)
    landmarks_on_head: str = "calibrated"  # the 68 points' places on the head: pipeline.LANDMARKS_ON_HEAD


def reconstruct(paths: Sequence[str | Path], out_dir: str | Path, options: Options = Options(), *,
                model: HeadModel | None = None, shape_source: ShapeSource | None = None,
                progress: Callable | None = None) -> list[Outcome]:
    """Reconstruct a textured avatar for each photo into ``out_dir``; one Outcome per face."""
    model = model or load_head_model()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shape_source is None and options.shape_source != "landmarks":
        shape_source = _named_source(options, model)
    outcomes = []
    for path in (progress(paths) if progress else paths):
        outcomes += _one_photo(str(path), out_dir, options, model, shape_source)
    return outcomes


def _named_source(options: Options, model: HeadModel) -> ShapeSource:
    """The ``Options.shape_source`` as a per-face callable (the regressor is loaded once)."""
    if options.shape_source not in pipeline.SHAPE_SOURCES:
        raise ValueError(f"shape_source must be one of {pipeline.SHAPE_SOURCES}, got {options.shape_source!r}")
    regressor = None
    if options.shape_source == "regressor":
        from avatar_jax.regress import load_regressor

        regressor = load_regressor(options.regressor)
    return lambda image, face: pipeline.base_shapes(image, [face], options.shape_source, regressor=regressor,
                                                    model=model)[0]


def _one_photo(path, out_dir, options, model, shape_source) -> list[Outcome]:
    t0 = time.perf_counter()
    try:
        image = load_image(path)
    except ImageLoadError as err:
        return [Outcome(path, Status.UNREADABLE, str(err))]
    try:
        # every face: tile the photo too (a crowd's small faces); the largest: tile only if none is found
        faces = pipeline.detect(image, backend=options.backend, max_faces=None if options.all_faces else 1,
                                small_faces=True if options.all_faces else None)
    except (ValueError, RuntimeError) as err:  # keep the batch going
        return [Outcome(path, Status.FAILED, f"{path}: detection failed: {type(err).__name__}: {err}")]
    if not faces:
        return [Outcome(path, Status.NO_FACE, f"{path}: no face found")]
    timings = {"detect_s": time.perf_counter() - t0}
    t = time.perf_counter()
    try:  # every face of the photo in one batched fit
        bases = [shape_source(image, face) for face in faces] if shape_source else None
        fits = pipeline.fit_faces(image, faces, config=options.config, model=model,
                                  landmarks_on_head=options.landmarks_on_head,
                                  base_shapes=None if bases is None else np.stack([np.asarray(b) for b in bases]))
    except (ValueError, RuntimeError) as err:  # keep the batch going
        return [Outcome(path, Status.FAILED, f"{path}: fit failed: {type(err).__name__}: {err}", face=i)
                for i in range(len(faces))]
    timings["fit_s"] = (time.perf_counter() - t) / len(faces)  # the batch's time, shared among its faces
    outcomes = []
    for i, face in enumerate(faces):
        stem = out_dir / (Path(path).stem + (f"_face{i}" if len(faces) > 1 else ""))
        try:
            outcomes.append(_one_face(path, image, face, pipeline.face_fit(fits, i), i, stem, options, model,
                                      dict(timings)))
        except (ValueError, RuntimeError, OSError) as err:  # keep the batch going
            outcomes.append(Outcome(path, Status.FAILED, f"{path}: {type(err).__name__}: {err}", face=i))
    return outcomes


def _one_face(path, image, face, res, index, stem, options, model, timings) -> Outcome:
    status = Status.of(res.status)
    if status != Status.OK:
        return Outcome(path, Status.FIT_FAILED, f"{path}: fit failed ({status.label}: {status.message})", face=index)
    avatar = pipeline.texture_avatar(image, res, model=model, texture_size=options.texture_size,
                                     hair=options.hair, delight=options.delight, landmarks478=face.landmarks478)
    timings.update(avatar.timings)
    t = time.perf_counter()
    files = pipeline.export_avatar(avatar, stem, options.formats, blendshape_names=options.blendshape_names)
    timings["export_s"] = time.perf_counter() - t
    if options.overlay:
        files.append(pipeline.write_overlay(f"{stem}_overlay.png", image, face, res, model))
    files.append(pipeline.write_report(f"{stem}.json", path, face, res, model, timings,
                                       blendshape_names=options.blendshape_names, shape_source=options.shape_source))
    return Outcome(path, Status.OK, "", tuple(str(f) for f in files), index)
