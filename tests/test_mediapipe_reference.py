"""Our MediaPipe re-implementation vs the official MediaPipe 0.10.14 pipeline.

The reference (``tests/data/mediapipe_reference.npz``) was written by
``tools/mediapipe_reference.py`` in a separate venv with the ``mediapipe`` wheel; this file never
imports mediapipe. Coordinates there are MediaPipe's normalised values times the image size.

    python tests/test_mediapipe_reference.py     # prints the tables in docs/landmarks.md

NME between the two implementations = mean 2-D point distance / sqrt(w * h) of the official
landmarks' box, in %. Faces are matched by the IoU of the landmark boxes.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache, cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_jax.io.image import load_image
from avatar_jax.landmarks import mediapipe as M

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "mediapipe_reference.npz"
PHOTOS = REPO / "tests" / "data" / "photos"  # the reference's "testdata/" images that the repo ships


@lru_cache(maxsize=1)
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def _path(name: str) -> Path:
    return PHOTOS / name.removeprefix("testdata/") if name.startswith("testdata/") else REPO / name


@cache
def _image(index: int) -> np.ndarray:
    return load_image(_path(str(reference()["images"][index])))


def _per_image(key: str, index: int) -> np.ndarray:
    ref = reference()
    return ref[key][ref[key.split("_")[0] + "_image"] == index]


def landmark_box(points: np.ndarray) -> np.ndarray:
    """``[4]`` (x0, y0, x1, y1) of ``[N, 2|3]`` points."""
    return np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])


def match_faces(ours: list[np.ndarray], official: np.ndarray, min_iou: float = 0.5):
    """Pairs (official index, our landmarks) by landmark-box IoU; unmatched official faces get None."""
    pairs = []
    for k, ref in enumerate(official):
        ious = [float(M.box_iou(landmark_box(o), landmark_box(ref))) for o in ours]
        best = int(np.argmax(ious)) if ious else -1
        pairs.append((k, ours[best] if ious and ious[best] > min_iou else None))
    return pairs


def nme_between(ours: np.ndarray, official: np.ndarray) -> float:
    """Mean 2-D distance over the 468 points / sqrt(w h) of the official landmark box, in %."""
    box = landmark_box(official)
    scale = np.sqrt(np.prod(box[2:] - box[:2]))
    return 100.0 * float(np.linalg.norm(ours[:468, :2] - official[:468, :2], axis=1).mean() / scale)


@cache
def pipeline(kind: str) -> M.FaceMeshPipeline:
    cv2.setNumThreads(1)
    if kind == "official":
        return M.FaceMeshPipeline.official()
    if kind == "official+2pass":
        return M.FaceMeshPipeline.official(two_pass=True)
    return M.FaceMeshPipeline()  # the package default


@cache
def run(kind: str, index: int) -> tuple[list[np.ndarray], list[M.Detection]]:
    """Our meshes (no tiled pass: MediaPipe does not tile) and full-frame detections."""
    pipe, image = pipeline(kind), _image(index)
    return [r.landmarks for r in pipe(image, small_faces=False)], pipe.detect(image)


@cache
def image_indices() -> tuple[int, ...]:
    """The reference's images that the repo has: examples/ and those listed in tests/data/photos.
    The reference was recorded on the whole dev set; the rest (e.g. eos_image_0010, research-use
    terms) is not redistributable."""
    shipped = {e["file"] for e in json.loads((PHOTOS / "manifest.json").read_text())["images"]}
    names = [str(n) for n in reference()["images"]]
    return tuple(i for i, n in enumerate(names)
                 if not n.startswith("testdata/") or n.removeprefix("testdata/") in shipped)


# ----------------------------------------------------------------------------- tests

def test_reference_file_is_complete():
    ref = reference()
    assert str(ref["mediapipe_version"]) == "0.10.14"
    names = [str(n) for n in ref["images"]]
    assert "testdata/dlib_dogs.jpg" in names and "examples/obama.jpg" in names
    assert ref["mesh_landmarks"].shape[1:] == (468, 3) and ref["attn_landmarks"].shape[1:] == (478, 3)
    assert len(ref["mesh_image"]) >= 15 and len(ref["det_image"]) >= len(ref["mesh_image"])
    # the images checked here: 14 of 21, with 13 of the 19 official meshes and 15 of 22 detections
    assert len(image_indices()) >= 14 and np.isin(ref["mesh_image"], image_indices()).sum() >= 13


def test_same_pixels_as_the_reference(testdata):
    for i in image_indices():
        digest = hashlib.sha1(np.ascontiguousarray(_image(i)).tobytes()).hexdigest()
        assert digest == str(reference()["image_sha1"][i]), reference()["images"][i]


def test_detection_and_landmark_rois_are_mediapipes():
    """ROI geometry alone (no inference): the official detections give the official ROIs, and the
    official landmarks give its next-frame ROIs (rotation from the outer eye corners 33 -> 263)."""
    ref = reference()
    for i in range(len(ref["images"])):  # every recorded image: no pixels needed
        boxes, kps = _per_image("det_box", i), _per_image("det_keypoints", i)
        for roi in _per_image("roi", i):
            ours = [M.detection_to_roi(M.Detection(box=b.astype(np.float64), keypoints=k.astype(np.float64),
                                                   score=1.0)) for b, k in zip(boxes, kps)]
            err = min(np.abs(np.r_[o.center, o.size, o.rotation] - np.r_[roi[:3], roi[4]]).max() for o in ours)
            assert err < 2e-3, (ref["images"][i], err)
    for lm, nxt in zip(ref["mesh_landmarks"], ref["mesh_next_roi"]):
        roi = M.landmarks_to_roi(lm.astype(np.float64))
        np.testing.assert_allclose(roi.center, nxt[:2], atol=2e-3)
        np.testing.assert_allclose([roi.size, roi.size], nxt[2:4], rtol=1e-5)
        assert abs(roi.rotation - nxt[4]) < 1e-5


def test_official_mode_detector_matches(testdata):
    """Same detections as MediaPipe's short-range detector: box IoU, scores, keypoints."""
    ious, dscore = [], []
    for i in image_indices():
        _, dets = run("official", i)
        ref_boxes, ref_scores = _per_image("det_box", i), _per_image("det_score", i)
        assert len(dets) == len(ref_boxes), reference()["images"][i]
        for d in dets:
            iou = M.box_iou(d.box[None], ref_boxes)
            j = int(np.argmax(iou))
            ious.append(float(iou[j]))
            dscore.append(abs(d.score - float(ref_scores[j])))
            scale = np.sqrt(np.prod(ref_boxes[j, 2:] - ref_boxes[j, :2]))
            kp_err = np.linalg.norm(d.keypoints - _per_image("det_keypoints", i)[j], axis=1).max()
            assert kp_err < 0.03 * scale
    assert np.median(ious) > 0.998 and min(ious) > 0.9, ious
    assert max(dscore) < 0.005, dscore


def test_official_mode_meshes_match(testdata):
    """Single-pass mode reproduces FaceMesh(static_image_mode=True): the same faces (none on
    dlib_dogs, where the detector alone fires once) and the 468 points to a fraction of a pixel."""
    px, nmes = [], []
    for i in image_indices():
        ours, _ = run("official", i)
        official = _per_image("mesh_landmarks", i)
        assert len(ours) == len(official), reference()["images"][i]
        for k, mine in match_faces(ours, official):
            assert mine is not None, (reference()["images"][i], k)
            ref = official[k]
            px.append(np.linalg.norm(mine[:, :2] - ref[:, :2], axis=1).mean())
            nmes.append(nme_between(mine, ref))
            assert np.abs(mine[:, 2] - ref[:, 2]).mean() < 0.5  # z scaled like x, same origin
    assert max(nmes) < 0.15, nmes
    assert np.mean(px) < 0.25 and max(px) < 0.6, px
    dogs = [str(n) for n in reference()["images"]].index("testdata/dlib_dogs.jpg")
    assert len(_per_image("det_box", dogs)) == 1 and len(run("official", dogs)[0]) == 0


def test_default_pipeline_finds_the_official_faces(testdata):
    """The package default (second pass, antialiased crops on the pixel-centre grid, iris) finds
    every face MediaPipe finds, within a few % of its points (see docs/landmarks.md for why)."""
    for i in image_indices():
        ours, _ = run("default", i)
        for k, mine in match_faces(ours, _per_image("mesh_landmarks", i)):
            assert mine is not None and mine.shape == (478, 3), (reference()["images"][i], k)
            assert nme_between(mine, _per_image("mesh_landmarks", i)[k]) < 4.0


def test_iris_points_follow_the_attention_mesh_order(testdata):
    """Side note (different model): our iris-model points 468..477 against the attention model's
    (FaceMesh ``refine_landmarks=True``): same ordering for both eyes (the mirrored eye's points
    are swapped back), close positions."""
    errs = []
    for i in image_indices():
        ours, _ = run("default", i)
        for k, mine in match_faces(ours, _per_image("attn_landmarks", i)):
            attn = _per_image("attn_landmarks", i)[k]
            for right, left in ((469, 471), (474, 476)):
                axis = attn[right, :2] - attn[left, :2]
                assert (mine[right, :2] - mine[left, :2]) @ axis > 0, (reference()["images"][i], right)
            box = landmark_box(attn)
            errs.append(np.linalg.norm(mine[468:, :2] - attn[468:, :2], axis=1).mean()
                        / np.sqrt(np.prod(box[2:] - box[:2])))
    assert len(errs) >= 13 and np.mean(errs) < 0.015 and max(errs) < 0.04, errs


def test_crop_grids_on_a_ramp():
    """On a linear ramp bilinear sampling is exact, so each grid's sample positions can be read off:
    a full-size axis-aligned crop returns the image on either grid's own full-frame centre, and
    the antialiased (supersampled, area-averaged) crop lands on the same grid as the plain one."""
    h = w = 64
    ramp = (np.arange(w)[None, :] * 2 + np.arange(h)[:, None] * 1).astype(np.float32)
    image = np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8)
    for grid, center in (("centres", (w - 1) / 2), ("mediapipe", w / 2)):
        roi = M.Roi(center=np.array([center, center]), size=float(w))
        out = M.crop(image, roi, w, cv2.BORDER_REPLICATE, antialias=False, grid=grid)
        np.testing.assert_array_equal(out, image)
        big = M.Roi(center=np.array([40.0, 40.0]), size=48.0)
        plain = M.crop(image, big, 12, cv2.BORDER_REPLICATE, antialias=False, grid=grid).astype(int)
        smooth = M.crop(image, big, 12, cv2.BORDER_REPLICATE, antialias=True, grid=grid).astype(int)
        assert np.abs(plain - smooth)[1:-1, 1:-1].max() <= 1  # rounding only
    with pytest.raises(ValueError, match="grid"):
        M.crop(image, M.Roi(center=np.zeros(2), size=8.0), 8, cv2.BORDER_REPLICATE, grid="corners")
    with pytest.raises(ValueError, match="grid"):
        M.FaceMeshPipeline(grid="opencv")


# ----------------------------------------------------------------------------- report

def _report() -> None:
    ref = reference()
    print("| image | face | det IoU | |d score| | official mode: NME % / mean px | "
          "+ 2nd pass: NME % | default: NME % | default iris vs attention model: px |")
    print("|---|---|---|---|---|---|---|---|")
    cols = {k: [] for k in ("iou", "ds", "nme1", "px1", "nme2", "nmed", "iris")}
    for i in image_indices():
        name = str(ref["images"][i]).split("/")[-1]
        official = _per_image("mesh_landmarks", i)
        _, dets = run("official", i)
        boxes, scores = _per_image("det_box", i), _per_image("det_score", i)
        det_cells = []
        for d in dets:
            iou = M.box_iou(d.box[None], boxes)
            j = int(np.argmax(iou))
            det_cells.append((float(iou[j]), abs(d.score - float(scores[j]))))
        if not len(official):
            cells = ", ".join(f"{a:.4f}" for a, _ in det_cells) or "-"
            print(f"| {name} | none (MediaPipe: no face) | {cells} | " + " | ".join("-" * 1 for _ in range(5)) + " |")
            continue
        attn = _per_image("attn_landmarks", i)
        runs = {k: match_faces(run(k, i)[0], official) for k in ("official", "official+2pass", "default")}
        for k in range(len(official)):
            ref_k = official[k]
            iou, ds = max(det_cells, key=lambda c: c[0]) if det_cells else (np.nan, np.nan)
            m1, m2, md = runs["official"][k][1], runs["official+2pass"][k][1], runs["default"][k][1]
            px1 = np.linalg.norm(m1[:, :2] - ref_k[:, :2], axis=1).mean()
            a = dict(match_faces(list(attn), ref_k[None]))[0]  # the attention model's same face
            iris = np.linalg.norm(md[468:, :2] - a[468:, :2], axis=1).mean() if a is not None else np.nan
            vals = dict(iou=iou, ds=ds, nme1=nme_between(m1, ref_k), px1=px1, nme2=nme_between(m2, ref_k),
                        nmed=nme_between(md, ref_k), iris=iris / np.sqrt(np.prod(np.ptp(ref_k[:, :2], 0))) * 100)
            for key, v in vals.items():
                cols[key].append(v)
            print(f"| {name} | {k} | {iou:.4f} | {ds:.4f} | {vals['nme1']:.3f} / {px1:.2f} | "
                  f"{vals['nme2']:.2f} | {vals['nmed']:.2f} | {iris:.2f} ({vals['iris']:.2f} %) |")
    mean = {k: np.nanmean(v) for k, v in cols.items()}
    print(f"| **mean** | | {mean['iou']:.4f} | {mean['ds']:.4f} | {mean['nme1']:.3f} / {mean['px1']:.2f} | "
          f"{mean['nme2']:.2f} | {mean['nmed']:.2f} | ({mean['iris']:.2f} %) |")


CONFIGS = {
    "official (1 pass, MediaPipe grid, plain crops, no iris)": dict(iris=False, two_pass=False, antialias=False, grid="mediapipe"),
    "official + 2nd pass": dict(iris=False, two_pass=True, antialias=False, grid="mediapipe"),
    "centres grid, 1 pass, plain crops": dict(iris=False, two_pass=False, antialias=False),
    "centres grid, 2 passes, plain crops": dict(iris=False, two_pass=True, antialias=False),
    "centres grid, 1 pass, antialiased": dict(iris=False, two_pass=False),
    "centres grid, 2 passes, antialiased": dict(iris=False, two_pass=True),
    "default (centres, 2 passes, antialiased, iris)": dict(),
    "MediaPipe grid, 2 passes, antialiased, iris": dict(grid="mediapipe"),
}


def _configs_report() -> None:
    """68-point NME on the labelled photos (benchmarks/landmarks.py's labels, matching and NME;
    baseline and silhouette routes only: no dense fit) for each pipeline configuration."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import landmarks as bench  # benchmarks/landmarks.py

    from avatar_jax.landmarks import ibug68

    faces = list(bench.labelled_faces())
    images = {name: load_image(bench.TESTDATA / name) for name, _, _ in faces}
    print("\n| configuration | human: baseline | human: silhouette | silhouette per image | "
          "dlib-model labels: faces found | silhouette |")
    print("|---|---|---|---|---|---|")
    for label, options in CONFIGS.items():
        pipe = M.FaceMeshPipeline(**options)
        meshes = {name: [r.landmarks for r in pipe(img)] for name, img in images.items()}
        err = {True: ([], []), False: ([], [])}
        for name, gt, human in faces:
            mesh = bench.match(meshes[name], gt)
            if mesh is not None:
                err[human][0].append(bench.nme(ibug68.baseline68(mesh), gt))
                err[human][1].append(bench.nme(ibug68.refined68(mesh, ibug68.identity_mapping()), gt))
        per = " ".join(f"{100 * e:.2f}" for e in err[True][1])
        print(f"| {label} | {100 * np.mean(err[True][0]):.2f} | {100 * np.mean(err[True][1]):.2f} | {per} | "
              f"{len(err[False][1])} | {100 * np.mean(err[False][1]):.2f} |")


def _flip_report() -> None:
    """Where each model puts the crop's mirror axis: run it on a crop and on the crop mirrored;
    for a mirror-symmetric point set (mesh, iris contour, detector keypoints of one face) the
    mean of x + x_mirrored is the model's 2 * centre: S on the pixel-centre grid, S - 1 on an
    index grid. Crops: the official ROIs of the faces MediaPipe found."""
    pipe = M.FaceMeshPipeline(iris=True)
    sums = {"mesh (S=192)": [], "detector keypoints (S=128)": [], "iris (S=64)": []}

    def both(model, patch, scale, offset=0.0):
        """Model outputs on the crop and on the crop mirrored left-right."""
        return [model(np.ascontiguousarray(p, np.float32) * scale - offset) for p in (patch, patch[:, ::-1])]

    for i in image_indices():
        image = _image(i)
        for lm in _per_image("mesh_landmarks", i):
            roi = M.landmarks_to_roi(lm.astype(np.float64))
            a, b = both(pipe.mesh, M.crop(image, roi, 192, cv2.BORDER_REPLICATE, False), 1 / 255)
            sums["mesh (S=192)"].append(a[0].reshape(468, 3)[:, 0].mean() + b[0].reshape(468, 3)[:, 0].mean())
            a, b = both(pipe.detector, M.crop(image, roi, 128, cv2.BORDER_CONSTANT, False), 1 / 127.5, 1.0)
            ka, kb = (M.decode_detections(r[0], r[1][:, 0], 0.0) for r in (a, b))
            sums["detector keypoints (S=128)"].append(
                128 * (ka[1][ka[2].argmax(), :, 0].mean() + kb[1][kb[2].argmax(), :, 0].mean()))
            eye = M.eye_roi(lm[33, :2].astype(np.float64), lm[133, :2].astype(np.float64))
            a, b = both(pipe.iris, M.crop(image, eye, 64, cv2.BORDER_REPLICATE, False), 1 / 255)
            sums["iris (S=64)"].append(a[1].reshape(5, 3)[:, 0].mean() + b[1].reshape(5, 3)[:, 0].mean())
    print("\n| model | faces | mean of x + x_mirrored | median | pixel-centre grid | index grid |")
    print("|---|---|---|---|---|---|")
    for name, v in sums.items():
        size = int(name.split("S=")[1][:-1])
        print(f"| {name} | {len(v)} | {np.mean(v):.2f} +- {np.std(v) / np.sqrt(len(v)):.2f} | "
              f"{np.median(v):.2f} | {size} | {size - 1} |")


if __name__ == "__main__":
    _report()
    _flip_report()
    _configs_report()
