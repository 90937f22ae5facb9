"""Record the official MediaPipe face pipeline's output on the test photos.

    python -m venv /tmp/mpvenv
    /tmp/mpvenv/bin/pip install mediapipe==0.10.14 imageio
    /tmp/mpvenv/bin/python tools/mediapipe_reference.py [--out tests/data/mediapipe_reference.npz]

Runs in its own virtual environment (the mediapipe wheel is not a dependency of avatar-jax; its
0.10.14 wheel still ships the .tflite models and .binarypb graphs, later ones do not), on every
image of ``../shared/testdata`` (manifest order) and ``examples/*.jpg``, and writes one small
``.npz`` that ``tests/test_mediapipe_reference.py`` compares ``FaceMeshPipeline`` against:

* the FaceMesh graph (``face_landmark_front_cpu``) in static-image mode, ``refine_landmarks=False``
  (``face_landmark.tflite``, the model avatar-jax ships): per face the 468 landmarks, and per
  detection the ROI it was run on (``face_rects_from_detections``) and the ROI the landmarks give
  for a next frame (``face_rects_from_landmarks``);
* the same graph with ``refine_landmarks=True`` (the attention model, 478 points; a side note);
* the detector alone (``mp.solutions.face_detection``, ``model_selection=0``: short range):
  boxes, 6 keypoints and scores.

Coordinates are MediaPipe's normalised values times the image size (x * W, y * H, z * W), i.e.
image pixels in the convention of MediaPipe's OpenCV crops (pixel centres at integers). ROIs are
(x_centre, y_centre, width, height, rotation) in the same pixels. The images are read with
``avatar_jax/io/image.py`` (loaded by file path, so this venv needs no JAX) and the SHA-1 of each
RGB array is stored, so the test can check it feeds the same pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
MAX_FACES = 20


def _load_image_fn():
    spec = importlib.util.spec_from_file_location("_avatar_image", REPO / "avatar_jax" / "io" / "image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_image


def image_paths() -> list[tuple[str, Path]]:
    """(stored name, path) for the test photos (manifest order) and the examples."""
    manifest = json.loads((TESTDATA / "manifest.json").read_text())
    out = [(f"testdata/{e['file']}", TESTDATA / e["file"]) for e in manifest["images"]]
    out += [(f"examples/{p.name}", p) for p in sorted((REPO / "examples").glob("*.jpg"))]
    return out


def _graph(mp, refine: bool):
    """FaceMesh's graph with its detections and ROIs exposed as outputs (static-image mode)."""
    from mediapipe.python.solution_base import SolutionBase
    from mediapipe.python.solutions import face_mesh

    return SolutionBase(
        binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
        side_inputs={"num_faces": MAX_FACES, "with_attention": refine, "use_prev_landmarks": False},
        outputs=["multi_face_landmarks", "face_detections", "face_rects_from_detections",
                 "face_rects_from_landmarks"])


def _landmarks(lms, w: int, h: int) -> np.ndarray:
    return np.array([[p.x * w, p.y * h, p.z * w] for p in lms.landmark], np.float32)


def _rect(r, w: int, h: int) -> list[float]:
    return [r.x_center * w, r.y_center * h, r.width * w, r.height * h, r.rotation]


def _detection(d, w: int, h: int) -> tuple[list[float], np.ndarray, float]:
    b = d.location_data.relative_bounding_box
    box = [b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]
    kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints], np.float32)
    return box, kps, float(d.score[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "mediapipe_reference.npz")
    args = parser.parse_args()

    import mediapipe as mp

    load_image = _load_image_fn()
    rec = {k: [] for k in ("det_image", "det_box", "det_keypoints", "det_score", "roi_image", "roi",
                           "mesh_image", "mesh_landmarks", "mesh_next_roi", "attn_image",
                           "attn_landmarks")}
    names, sizes, hashes = [], [], []
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    mesh, attn = _graph(mp, refine=False), _graph(mp, refine=True)
    for i, (name, path) in enumerate(image_paths()):
        image = load_image(path)
        h, w = image.shape[:2]
        names.append(name)
        sizes.append((w, h))
        hashes.append(hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())
        for d in detector.process(image).detections or []:
            box, kps, score = _detection(d, w, h)
            rec["det_image"].append(i), rec["det_box"].append(box)
            rec["det_keypoints"].append(kps), rec["det_score"].append(score)
        out = mesh.process({"image": image})
        for r in out.face_rects_from_detections or []:
            rec["roi_image"].append(i), rec["roi"].append(_rect(r, w, h))
        for lms, nxt in zip(out.multi_face_landmarks or [], out.face_rects_from_landmarks or []):
            rec["mesh_image"].append(i), rec["mesh_landmarks"].append(_landmarks(lms, w, h))
            rec["mesh_next_roi"].append(_rect(nxt, w, h))
        for lms in attn.process({"image": image}).multi_face_landmarks or []:
            rec["attn_image"].append(i), rec["attn_landmarks"].append(_landmarks(lms, w, h))
        n_det = sum(1 for j in rec["det_image"] if j == i)
        n_mesh = sum(1 for j in rec["mesh_image"] if j == i)
        print(f"{name}: {w}x{h}, {n_det} detections, {n_mesh} meshes")

    shapes = {"det_box": (0, 4), "det_keypoints": (0, 6, 2), "roi": (0, 5), "mesh_landmarks": (0, 468, 3),
              "mesh_next_roi": (0, 5), "attn_landmarks": (0, 478, 3)}
    arrays = {}
    for key, values in rec.items():
        if key.endswith("_image"):
            arrays[key] = np.array(values, np.int32)
        elif values:
            arrays[key] = np.array(values, np.float32)
        else:
            arrays[key] = np.zeros(shapes.get(key, (0,)), np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=np.array(names), image_size=np.array(sizes, np.int32),
                        image_sha1=np.array(hashes), mediapipe_version=np.array(mp.__version__),
                        **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
