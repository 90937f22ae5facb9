"""MediaPipe face detection + 468-point face mesh + iris on LiteRT, in numpy/OpenCV.

Re-implements the pre- and post-processing of the MediaPipe v0.10 graphs around the three
packaged ``.tflite`` models (Apache-2.0, see ``data/README.md``):

* ``face_detection_full_range_sparse`` (BlazeFace, 192x192, the default): letterboxed RGB in
  [-1, 1], 2304 SSD anchors (one 48x48 layer, stride 4, fixed size), sigmoid scores >= 0.6,
  weighted NMS at IoU 0.3 (``face_detection_full_range.pbtxt``); where it finds no face,
  ``face_detection_short_range`` (128x128, 896 anchors at strides 8,16,16,16, scores >= 0.5,
  ``face_detection_short_range.pbtxt``), which also finds faces turned by 90 degrees.
* ROI from a detection: the detector box, rotated so that the eye keypoints (0 -> 1) are
  horizontal, squared on its long side and scaled by 1.5 (``face_detection_front_detection_to_roi``).
* ``face_landmark`` (192x192, RGB in [0, 1], replicated border): 468 x (x, y, z) in crop pixels,
  projected back through the rotated ROI (``face_landmark_cpu.pbtxt``,
  ``LandmarkProjectionCalculator``); the face-presence logit is a sigmoid.
* Second pass: ROI from the first pass's landmarks (tight box of the 468 points, rotation from
  the outer eye corners 33 -> 263, x1.5 squared: ``face_landmark_landmarks_to_roi``) and the mesh
  is run again, as MediaPipe does for the next video frame. MediaPipe's static-image mode runs
  one pass only (:meth:`FaceMeshPipeline.official`).
* ``iris_landmark`` (64x64, RGB in [0, 1]): per eye, a ROI from the two eye corners (33/133 and
  362/263, x2.3 squared), the 362/263 eye crop flipped horizontally (the model is trained on one
  side only). Its 71 eye-contour points replace the mesh's eye points
  (``UpdateFaceLandmarksCalculator``'s index list) and its 5 iris points become 468..477, the
  ordering of MediaPipe's 478-point attention mesh (468 = iris centre of the 33/133 eye; then the
  image-right, top, image-left, bottom iris points of each eye).
  Deviation: only x and y of the eye points are replaced; their z stays the mesh's, and the iris z
  is shifted into the mesh's depth frame, so that all 478 z values share one reference.

Coordinates returned are image pixels with the centre of the top-left pixel at (0, 0); z is in
pixels too (MediaPipe scales z like x), relative, smaller = closer to the camera.

Crop grid: MediaPipe's OpenCV crops map the ROI corners to crop *indices* 0 and S, so crop pixel
``i`` samples half a crop pixel up-left of the centre of the ROI's ``i``-th cell, while the model
outputs are projected back as if centred (``x / S - 0.5``). The default ``grid="centres"``
samples the cell centres instead (and centres the full-frame detector ROI on the image centre);
mirrored crops put the detector's and iris model's symmetry centre at S/2, i.e. on this grid.
``grid="mediapipe"`` reproduces MediaPipe exactly: :meth:`FaceMeshPipeline.official` matches
``FaceMesh(static_image_mode=True)`` to ~0.1 px (``tests/test_mediapipe_reference.py``,
docs/landmarks.md); its coordinates are MediaPipe's normalised values times the image size.

Small faces: the detectors see the whole image at 192x192 (128x128), so faces much smaller than
the image are missed (measured in docs/landmarks.md). :func:`tile_levels` covers the image with overlapping
square tiles at several scales (down to tiles ~5x the minimum face size); detections from the
tiles of a level are merged by weighted NMS. :class:`FaceMeshPipeline` runs the levels when the
full-frame pass yields no face, or always with ``small_faces=True``.

Very large images: the working image is downscaled (``cv2.INTER_AREA``) to at most
``max_side`` pixels before anything runs, and all outputs are mapped back to the original.
Crops that shrink the image a lot are anti-aliased (see :func:`crop`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parent / "data"
DETECTOR_SIZE = 128
MESH_SIZE = 192
IRIS_SIZE = 64
NUM_MESH = 468
CROP_GRIDS = ("centres", "mediapipe")

# UpdateFaceLandmarksCalculator (mediapipe/graphs/iris_tracking): the 71 mesh ids refined by the
# iris model's eye-contour output, for the 33/133 eye and then the 362/263 eye.
EYE_CONTOUR_IDS_33 = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
    226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
    35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245,
    156, 70, 63, 105, 66, 107, 55, 193)
EYE_CONTOUR_IDS_263 = (
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
    446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
    265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465,
    383, 300, 293, 334, 296, 336, 285, 417)
# The 16 eyelid points (first two groups) of each list: used to bring the iris z into mesh depth.
_EYELID = slice(0, 16)


@dataclasses.dataclass(frozen=True)
class Roi:
    """A rotated square region in image pixels (pixel centres at integers).

    Attributes:
      center: ``[2]`` (x, y).
      size: side length in pixels.
      rotation: radians, image coordinates (y down): the crop's x axis is the image direction
        ``(cos r, sin r)``.
    """

    center: np.ndarray
    size: float
    rotation: float = 0.0


@dataclasses.dataclass(frozen=True)
class Detection:
    """A BlazeFace detection in image pixels.

    Attributes:
      box: ``[4]`` (x0, y0, x1, y1).
      keypoints: ``[6, 2]``: right eye, left eye, nose tip, mouth, right tragion, left tragion
        (the subject's right is on the image left).
      score: sigmoid confidence.
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float


@dataclasses.dataclass(frozen=True)
class MeshResult:
    """One face from :class:`FaceMeshPipeline`.

    Attributes:
      landmarks: ``[468, 3]`` or ``[478, 3]`` (with iris) image pixels (x, y, z).
      detection: the detection that seeded it.
      presence: face-presence probability from the mesh model's last pass.
      roi: the ROI of the last mesh pass.
    """

    landmarks: np.ndarray
    detection: Detection
    presence: float
    roi: Roi


# ----------------------------------------------------------------------------- geometry

def roi_to_image_matrix(roi: Roi, out_size: int, edge: float = 0.0) -> np.ndarray:
    """``[2, 3]`` affine map from crop pixel indices (of an ``out_size`` square) to image pixels.

    ``edge``: the crop index (in x and in y) that the ROI's top-left corner maps to. -0.5 is the
    pixel-centre grid (the ROI edges are the crop's outer pixel edges, so crop pixel ``i`` samples
    the centre of the ``i``-th of ``out_size`` equal cells); 0 is MediaPipe's grid (its OpenCV
    converter maps the ROI corners to crop *indices* 0 and ``out_size``, half a crop pixel up-left
    of the cell centres). With ``edge=0`` the same matrix maps the models' continuous output
    coordinates to image pixels (see :func:`project`).
    """
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    rot = np.array([[c, -s], [s, c]])
    linear = rot * (roi.size / out_size)
    offset = np.asarray(roi.center, np.float64) - rot @ np.full(2, (0.5 + edge / out_size) * roi.size)
    return np.concatenate([linear, offset[:, None]], axis=1)


def crop(image: np.ndarray, roi: Roi, out_size: int, border: int, antialias: bool = True,
         grid: str = "centres") -> np.ndarray:
    """Rotated square crop ``[out_size, out_size, 3]`` uint8 of ``image`` ``[H, W, 3]``.

    ``grid``: ``"centres"`` samples the crop pixel centres (ROI corner at crop index -0.5),
    ``"mediapipe"`` MediaPipe's grid (ROI corner at crop index 0, see :func:`roi_to_image_matrix`).
    MediaPipe samples bilinearly at the output resolution, which aliases when the ROI is much
    larger than the crop. With ``antialias`` the crop is first sampled at up to 4x the output size
    and then area-averaged down (``cv2.INTER_AREA``), on a grid whose block means are the
    requested grid.
    """
    edge = _grid_edge(grid)
    factor = max(1, min(4, int(roi.size // out_size))) if antialias else 1
    size = out_size * factor
    # a block of `factor` fine samples averages to the coarse sample at index i when the fine
    # grid's ROI corner sits at factor * edge + (factor - 1) / 2
    matrix = roi_to_image_matrix(roi, size, factor * edge + (factor - 1) / 2)
    patch = cv2.warpAffine(image, matrix, (size, size),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border)
    if size == out_size:
        return patch
    return cv2.resize(patch, (out_size, out_size), interpolation=cv2.INTER_AREA)


def _grid_edge(grid: str) -> float:
    if grid not in CROP_GRIDS:
        raise ValueError(f"grid must be one of {CROP_GRIDS}, got {grid!r}")
    return -0.5 if grid == "centres" else 0.0


def project(points: np.ndarray, roi: Roi, out_size: int) -> np.ndarray:
    """Map ``[N, 2|3]`` crop coordinates (model output) to image pixels.

    ``x`` in crop units goes to ``centre + R ((x / out_size - 0.5) size)``, MediaPipe's
    LandmarkProjectionCalculator for either crop grid. z (if present) is scaled like x:
    ``z * roi.size / out_size``.
    """
    m = roi_to_image_matrix(roi, out_size, 0.0)
    xy = points[:, :2] @ m[:, :2].T + m[:, 2]
    if points.shape[1] == 2:
        return xy
    return np.concatenate([xy, points[:, 2:3] * (roi.size / out_size)], axis=1)


def rotation_from(p0: np.ndarray, p1: np.ndarray) -> float:
    """Rotation making the vector p0 -> p1 horizontal (DetectionsToRectsCalculator, target 0)."""
    angle = math.atan2(float(p1[1] - p0[1]), float(p1[0] - p0[0]))
    return (angle + math.pi) % (2 * math.pi) - math.pi


def rect_to_roi(box: np.ndarray, rotation: float, scale: float) -> Roi:
    """Square ROI on the long side of ``box`` (x0, y0, x1, y1), scaled (RectTransformationCalculator)."""
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    size = max(box[2] - box[0], box[3] - box[1]) * scale
    return Roi(center=center, size=float(size), rotation=rotation)


def detection_to_roi(det: Detection) -> Roi:
    """Face ROI from a detection: eyes horizontal, long side x1.5."""
    return rect_to_roi(det.box, rotation_from(det.keypoints[0], det.keypoints[1]), 1.5)


def landmarks_to_roi(landmarks: np.ndarray) -> Roi:
    """Face ROI from mesh landmarks ``[>=468, 2|3]``: tight box, rotation from the outer eye
    corners 33 -> 263, x1.5 (``face_landmark_landmarks_to_roi``)."""
    xy = landmarks[:NUM_MESH, :2]
    box = np.concatenate([xy.min(0), xy.max(0)])
    return rect_to_roi(box, rotation_from(xy[33], xy[263]), 1.5)


def eye_roi(corner_a: np.ndarray, corner_b: np.ndarray) -> Roi:
    """Iris-model ROI from two eye corners (iris_landmark_landmarks_to_roi: x2.3, squared)."""
    box = np.concatenate([np.minimum(corner_a, corner_b), np.maximum(corner_a, corner_b)])
    return rect_to_roi(box, rotation_from(corner_a, corner_b), 2.3)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes ``[..., 4]`` (x0, y0, x1, y1), broadcasting."""
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


# ----------------------------------------------------------------------------- detector decode

def ssd_anchors(input_size: int = DETECTOR_SIZE, strides=(8, 16, 16, 16), per_layer: int = 2) -> np.ndarray:
    """Anchor centres ``[A, 2]`` in [0, 1] (SsdAnchorsCalculator, fixed size, ``per_layer`` anchors
    per layer: 2 with an interpolated-scale anchor, as the short-range model; 1 without)."""
    centers = []
    layer = 0
    while layer < len(strides):
        same = sum(1 for s in strides[layer:] if s == strides[layer])
        # consecutive layers with one stride share a feature map
        fm = math.ceil(input_size / strides[layer])
        grid = (np.stack(np.meshgrid(np.arange(fm), np.arange(fm)), -1).reshape(-1, 2) + 0.5) / fm
        centers.append(np.repeat(grid, per_layer * same, axis=0))
        layer += same
    return np.concatenate(centers).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """A BlazeFace model and its MediaPipe graph options (``face_detection_*.pbtxt``)."""

    model: str
    size: int
    anchors: np.ndarray
    min_score: float
    outputs: tuple[str, str]  # the model's (regressors, scores) output tensors


DETECTORS = {
    # faces within ~2 m: 128x128, 896 anchors, score >= 0.5
    "short_range": DetectorSpec("face_detection_short_range", 128, ssd_anchors(), 0.5,
                                ("regressors", "classificators")),
    # faces within ~5 m (smaller in the frame): 192x192, one 48x48 layer of anchors, score >= 0.6
    "full_range": DetectorSpec("face_detection_full_range_sparse", 192, ssd_anchors(192, (4,), 1), 0.6,
                               ("Identity", "Identity_1")),
}
ANCHORS = DETECTORS["short_range"].anchors


def decode_detections(regressors: np.ndarray, logits: np.ndarray, min_score: float,
                      spec: DetectorSpec = DETECTORS["short_range"]):
    """Decode raw BlazeFace outputs ``[A, 16]``, ``[A]`` to boxes ``[N, 4]``, keypoints
    ``[N, 6, 2]`` in tensor-normalised [0, 1] coordinates, and scores ``[N]`` >= ``min_score``."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    raw, anchors = regressors[keep] / spec.size, spec.anchors[keep]
    center = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([center - half, center + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    return boxes, keypoints, scores[keep]


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = 0.3) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-max suppression: each cluster (IoU > threshold with its best
    member) is replaced by the score-weighted mean box and keypoints, keeping the best score."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        best = order[0]
        cluster = order[box_iou(boxes[best], boxes[order]) > iou_threshold]
        cluster = np.union1d(cluster, [best])
        w = scores[cluster] / scores[cluster].sum()
        out.append((w @ boxes[cluster], np.einsum("n,nkd->kd", w, keypoints[cluster]),
                    float(scores[best])))
        order = order[~np.isin(order, cluster)]
    return out


def tile_levels(width: int, height: int, min_face: float) -> list[list[Roi]]:
    """Overlapping square tiles at halving scales, coarse to fine: from half the long side down to
    tiles about 5x ``min_face`` (so a face of ``min_face`` pixels covers ~38 px of the full-range
    detector's 192-px input). Stride = half a tile, so every face smaller than half a tile lies wholly
    inside some tile of its level."""
    smallest = max(min_face * 5.0, 64.0)
    levels = []
    tile = max(width, height) / 2.0
    while True:
        tile = max(tile, smallest)
        step = tile / 2.0
        nx = max(1, math.ceil((width - tile) / step) + 1)
        ny = max(1, math.ceil((height - tile) / step) + 1)
        xs = np.linspace(tile / 2, max(tile / 2, width - tile / 2), nx)
        ys = np.linspace(tile / 2, max(tile / 2, height - tile / 2), ny)
        levels.append([Roi(center=np.array([x - 0.5, y - 0.5]), size=tile) for y in ys for x in xs])
        if tile <= smallest:
            return levels
        tile /= 2.0


# ----------------------------------------------------------------------------- models

def _interpreter(name: str, num_threads: int):
    from ai_edge_litert.interpreter import Interpreter

    path = DATA / f"{name}.tflite"
    if not path.is_file():
        raise FileNotFoundError(f"MediaPipe model {path} is missing; run tools/copy_mediapipe_assets.py")
    interp = Interpreter(model_path=str(path), num_threads=num_threads)
    interp.allocate_tensors()
    return interp


class LiteRTModel:
    """One packaged ``.tflite`` model (``data/<name>.tflite``) on LiteRT: float32 input
    ``[1, S, S, 3]``; calling it with ``[S, S, 3]`` returns the outputs named ``output_names``,
    in that order, without their batch axis. Also used by :mod:`avatar_jax.texture.hair`."""

    def __init__(self, name: str, output_names: tuple[str, ...], num_threads: int):
        self.interp = _interpreter(name, num_threads)
        self.input_index = self.interp.get_input_details()[0]["index"]
        by_name = {d["name"]: d["index"] for d in self.interp.get_output_details()}
        self.output_indices = [by_name[n] for n in output_names]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.interp.set_tensor(self.input_index, tensor[None])
        self.interp.invoke()
        return [self.interp.get_tensor(i)[0] for i in self.output_indices]


class FaceMeshPipeline:
    """Detector + mesh (+ iris) models, loaded once; :meth:`__call__` processes one image.

    The interpreters are the only state (LiteRT needs them allocated); all geometry is in the
    pure functions above.

    Args:
      num_threads: LiteRT CPU threads per model.
      min_detection_score: BlazeFace score threshold (None: MediaPipe's, 0.5 short range, 0.6 full range).
      min_presence: face-presence threshold of the mesh model; faces below it are dropped.
      iris: run the iris model (478 points) and refine the eye contours.
      two_pass: re-run the mesh from the first pass's landmarks.
      max_side: the working image is downscaled to at most this many pixels on its long side.
      min_face: smallest face side (pixels of the original image) the tiled pass aims to find.
      antialias: area-average crops that shrink the image by 2x or more (see :func:`crop`);
        False samples bilinearly like MediaPipe.
      detector: ``"full_range"`` (default: BlazeFace 192, faces within ~5 m, i.e. smaller in the
        frame; it finds far more of the faces in group photos, docs/landmarks.md) or
        ``"short_range"`` (BlazeFace 128, faces within ~2 m; what MediaPipe's FaceMesh uses).
      grid: crop sampling grid, ``"centres"`` (crop pixel centres; the models' outputs are
        centred on them, see docs/landmarks.md) or ``"mediapipe"`` (MediaPipe's grid, half a crop
        pixel up-left, and its full-frame detector ROI centred at (W/2, H/2)). With
        ``"mediapipe"`` every coordinate is MediaPipe's normalised value times the image size.

    :meth:`official` builds the configuration that reproduces MediaPipe's FaceMesh in static-image
    mode (``refine_landmarks=False``).
    """

    def __init__(self, num_threads: int = 1, min_detection_score: float | None = None,
                 min_presence: float = 0.5, iris: bool = True, two_pass: bool = True,
                 max_side: int = 4096, min_face: float = 40.0, antialias: bool = True,
                 grid: str = "centres", detector: str = "full_range"):
        _grid_edge(grid)  # validate before loading models
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {detector!r}")
        # the full-range model misses faces turned 90 degrees (an un-rotated phone photo), which
        # the short-range one finds: it is the full frame's second try
        names = [detector] + (["short_range"] if detector == "full_range" else [])
        specs = [DETECTORS[n] for n in names]
        self.detectors = [(spec, LiteRTModel(spec.model, spec.outputs, num_threads)) for spec in specs]
        self.mesh = LiteRTModel("face_landmark", ("conv2d_21", "conv2d_31"), num_threads)
        self.iris = LiteRTModel("iris_landmark", ("output_eyes_contours_and_brows", "output_iris"),
                           num_threads) if iris else None
        self.min_detection_score = min_detection_score
        self.min_presence = min_presence
        self.two_pass = two_pass
        self.max_side = max_side
        self.min_face = min_face
        self.antialias = antialias
        self.grid = grid

    @classmethod
    def official(cls, num_threads: int = 1, **kwargs) -> FaceMeshPipeline:
        """MediaPipe FaceMesh, ``static_image_mode=True``, ``refine_landmarks=False``: one mesh pass
        on the detection ROI, plain bilinear crops on MediaPipe's grid, no iris. Call it with
        ``small_faces=False`` (MediaPipe does not tile)."""
        options = dict(iris=False, two_pass=False, antialias=False, grid="mediapipe", detector="short_range")
        return cls(num_threads=num_threads, **(options | kwargs))

    # -- stages ---------------------------------------------------------------------------
    def detect_in(self, image: np.ndarray, roi: Roi, border: int = cv2.BORDER_CONSTANT,
                  detector: int = 0) -> list[Detection]:
        """Run BlazeFace (``self.detectors[detector]``) on the (axis-aligned) square ``roi`` of
        ``image``; image-pixel detections."""
        spec, model = self.detectors[detector]
        size = spec.size
        patch = crop(image, roi, size, border, self.antialias, self.grid)
        regressors, logits = model(patch.astype(np.float32) / 127.5 - 1.0)
        min_score = spec.min_score if self.min_detection_score is None else self.min_detection_score
        boxes, kps, scores = decode_detections(regressors, logits[:, 0], min_score, spec)
        dets = []
        for box, kp, score in weighted_nms(boxes, kps, scores):
            corners = project(box.reshape(2, 2) * size, roi, size)
            dets.append(Detection(box=corners.reshape(4), score=score, keypoints=project(kp * size, roi, size)))
        return dets

    def detect(self, image: np.ndarray, detector: int = 0) -> list[Detection]:
        """Full-frame detection, letterboxed to the detector's square input."""
        h, w = image.shape[:2]
        # MediaPipe's full-image ROI is centred at (W/2, H/2) in its coordinates
        shift = 0.0 if self.grid == "mediapipe" else 0.5
        center = np.array([w / 2 - shift, h / 2 - shift])
        return self.detect_in(image, Roi(center=center, size=float(max(w, h))), detector=detector)

    def detect_tiled(self, image: np.ndarray, level_rois: list[Roi]) -> list[Detection]:
        """Detections from every tile of one level, merged by weighted NMS."""
        return merge_detections([d for roi in level_rois for d in self.detect_in(image, roi)])

    def landmarks_in(self, image: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """Mesh model on ``roi``: ``[468, 3]`` image-pixel landmarks and presence probability."""
        patch = crop(image, roi, MESH_SIZE, cv2.BORDER_REPLICATE, self.antialias, self.grid)
        raw, logit = self.mesh(patch.astype(np.float32) / 255.0)
        presence = float(1.0 / (1.0 + np.exp(-float(np.ravel(logit)[0]))))
        return project(raw.reshape(NUM_MESH, 3), roi, MESH_SIZE), presence

    def refine_eyes(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``[468, 3]`` -> ``[478, 3]``: iris model per eye (see module docstring)."""
        out = np.concatenate([landmarks, np.zeros((10, 3))], axis=0)
        for ids, (a, b), flip, first_iris in ((EYE_CONTOUR_IDS_33, (33, 133), False, 468),
                                               (EYE_CONTOUR_IDS_263, (362, 263), True, 473)):
            roi = eye_roi(landmarks[a, :2], landmarks[b, :2])
            patch = crop(image, roi, IRIS_SIZE, cv2.BORDER_REPLICATE, self.antialias, self.grid)
            if flip:
                patch = patch[:, ::-1]
            contour, iris = self.iris(np.ascontiguousarray(patch, np.float32) / 255.0)
            contour, iris = contour.reshape(71, 3).copy(), iris.reshape(5, 3).copy()
            if flip:
                contour[:, 0] = IRIS_SIZE - contour[:, 0]
                # mirroring swaps the iris's image-right and image-left points (1 and 3); the
                # 478-point ordering has 469/474 on the image right for both eyes
                iris[:, 0] = IRIS_SIZE - iris[:, 0]
                iris = iris[[0, 3, 2, 1, 4]]
            contour, iris = project(contour, roi, IRIS_SIZE), project(iris, roi, IRIS_SIZE)
            ids = np.asarray(ids)
            out[ids, :2] = contour[:, :2]
            # iris z is relative to its own crop: shift it by the eyelids' mean depth difference
            dz = landmarks[ids[_EYELID], 2].mean() - contour[_EYELID, 2].mean()
            out[first_iris:first_iris + 5] = iris + np.array([0.0, 0.0, dz])
        return out

    # -- whole image ----------------------------------------------------------------------
    def __call__(self, image: np.ndarray, max_faces: int | None = None,
                 small_faces: bool | None = None) -> list[MeshResult]:
        """All faces in ``image`` ``[H, W, 3]`` uint8 RGB, largest first, at most ``max_faces``.

        ``small_faces``: None (default) runs the tiled pass only when the full frame yields no
        face, level by level from coarse to fine, stopping at the first level that yields one;
        True always runs every level (slow: hundreds of detector calls on a large photo);
        False never tiles.
        """
        work, scale = self._working_image(image)
        results = []
        for i in range(len(self.detectors)):  # the next detector only where the previous found none
            results = results or self._faces_from(work, self.detect(work, i), [], max_faces)
        if small_faces is not False:
            h, w = work.shape[:2]
            for level in tile_levels(w, h, self.min_face * scale):
                if small_faces is None and results:
                    break
                results = self._faces_from(work, self.detect_tiled(work, level), results, max_faces)
        results = [_rescale(r, 1.0 / scale) for r in results]
        return sorted(results, key=lambda r: _box_area_of(r.landmarks), reverse=True)[:max_faces]

    def _faces_from(self, image: np.ndarray, dets: list[Detection], results: list[MeshResult],
                    max_faces: int | None) -> list[MeshResult]:
        """Mesh for each new detection, largest first, skipping faces already in ``results``."""
        results = list(results)
        for det in sorted(dets, key=_box_area, reverse=True):
            if max_faces is not None and len(results) >= max_faces:
                break
            if _covered(det.box, results):
                continue
            res = self._mesh_for(image, det)
            if res is not None and not _covered(_landmark_box(res.landmarks), results):
                results.append(res)
        return results

    def _mesh_for(self, image: np.ndarray, det: Detection) -> MeshResult | None:
        roi = detection_to_roi(det)
        pts, presence = self.landmarks_in(image, roi)
        if presence < self.min_presence:
            return None
        if self.two_pass:
            roi2 = landmarks_to_roi(pts)
            pts2, presence2 = self.landmarks_in(image, roi2)
            if presence2 >= self.min_presence:
                pts, presence, roi = pts2, presence2, roi2
        if self.iris is not None:
            pts = self.refine_eyes(image, pts)
        return MeshResult(landmarks=pts, detection=det, presence=presence, roi=roi)

    def _work_scale(self, image: np.ndarray) -> float:
        return min(1.0, self.max_side / max(image.shape[:2]))

    def _working_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        scale = self._work_scale(image)
        if scale >= 1.0:
            return image, 1.0
        h, w = image.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, size[0] / w


def merge_detections(dets: list[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Weighted NMS over detections from several crops (image pixels)."""
    if not dets:
        return []
    merged = weighted_nms(np.stack([d.box for d in dets]), np.stack([d.keypoints for d in dets]),
                          np.array([d.score for d in dets]), iou_threshold)
    return [Detection(box=b, keypoints=k, score=s) for b, k, s in merged]


def _box_area(det: Detection) -> float:
    return float(np.prod(det.box[2:] - det.box[:2]))


def _box_area_of(landmarks: np.ndarray) -> float:
    xy = landmarks[:, :2]
    return float(np.prod(xy.max(0) - xy.min(0)))


def _landmark_box(landmarks: np.ndarray) -> np.ndarray:
    xy = landmarks[:, :2]
    return np.concatenate([xy.min(0), xy.max(0)])


def _covered(box: np.ndarray, kept: list[MeshResult], iou: float = 0.4) -> bool:
    """True when ``box`` is the same face as one already kept."""
    return any(box_iou(box, _landmark_box(k.landmarks)) > iou for k in kept)


def _rescale(res: MeshResult, factor: float) -> MeshResult:
    """Map a result from working-image pixels back to original-image pixels."""
    if factor == 1.0:
        return res
    # pixel centres at integers: p_orig + 0.5 = (p_work + 0.5) * factor
    to_orig = lambda p: (p + 0.5) * factor - 0.5  # noqa: E731
    det = res.detection
    lm = res.landmarks.copy()
    lm[:, :2] = to_orig(lm[:, :2])
    lm[:, 2] *= factor
    return MeshResult(
        landmarks=lm, presence=res.presence,
        detection=Detection(box=to_orig(det.box), keypoints=to_orig(det.keypoints), score=det.score),
        roi=Roi(center=to_orig(res.roi.center), size=res.roi.size * factor, rotation=res.roi.rotation))
