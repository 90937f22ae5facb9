"""iBUG-68 landmarks from MediaPipe's 468/478-point face mesh.

Two mappings:

* :func:`baseline68` -- the widely copied one-vertex-per-landmark index list
  (:data:`BASELINE_INDICES`; found verbatim in many projects, e.g. LatentSync's
  ``LM68_FROM_MP478``). Its jaw points are fixed vertices of the mesh's face oval, which lie on
  the silhouette only for a frontal face.
* :func:`refined68` -- the jaw (0-16) taken from the mesh's *silhouette* in the image: for each
  lower face-oval vertex, a short chain of vertices running inward across the cheek (successive
  rings of the mesh topology); the chain point projecting furthest outward (along the oval's
  image normal) is on the occluding contour under the head pose the mesh already encodes. The
  17 jaw points are then spaced evenly by arc length along that contour, chin (152's chain) to
  each end, like the iBUG annotation. The other 51 points are barycentric combinations of each
  baseline vertex and its one-ring neighbours (:class:`Ibug68Mapping`), and the contour end
  position is a parameter; both may be fitted to labelled photos with :func:`fit_mapping`
  (ridge towards the baseline). Numbers reported for fitted mappings must be cross-validated
  (leave one image out), see ``benchmarks/landmarks.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
REFINED_MAPPING_FILE = DATA / "ibug68_refined.npz"

BASELINE_INDICES = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,  # jaw
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,  # brows
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
)
# The mesh's face oval from the chin (152) up each side: subject's right (image left) and left.
OVAL_TO_RIGHT = (152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21)
OVAL_TO_LEFT = (152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251)
CHAIN_DEPTH = 5  # oval vertex + 4 rings inward (about 2.5 cm of cheek on the canonical face)


@dataclasses.dataclass(frozen=True)
class Ibug68Mapping:
    """A 468 -> 68 mapping.

    Attributes:
      vertex_ids: ``[51, K]`` mesh vertex ids for landmarks 17..67 (padded by repeating the first).
      weights: ``[51, K]`` combination weights (rows sum to 1; padding weight 0).
      contour_end: fractional position along :data:`OVAL_TO_RIGHT` / ``OVAL_TO_LEFT`` of jaw
        points 0 and 16 (0 = chin vertex 152).
    """

    vertex_ids: np.ndarray
    weights: np.ndarray
    contour_end: float


def baseline68(landmarks: np.ndarray) -> np.ndarray:
    """``[68, 2]`` from mesh landmarks ``[>=468, 2|3]`` by the plain index list."""
    return np.asarray(landmarks)[list(BASELINE_INDICES), :2]


@functools.lru_cache(maxsize=1)
def canonical_mesh() -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe canonical face: vertices ``[468, 3]`` (cm) and triangles ``[898, 3]``."""
    d = np.load(DATA / "canonical_face_model.npz")
    return d["vertices"].astype(np.float64), d["triangles"].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _neighbours() -> tuple[frozenset[int], ...]:
    _, tris = canonical_mesh()
    nbrs: list[set[int]] = [set() for _ in range(468)]
    for a, b, c in tris:
        nbrs[a] |= {b, c}
        nbrs[b] |= {a, c}
        nbrs[c] |= {a, b}
    return tuple(frozenset(n) for n in nbrs)


@functools.lru_cache(maxsize=1)
def cheek_chains() -> dict[int, tuple[int, ...]]:
    """For each oval vertex, the vertices inward across the cheek: ring by ring (topological
    distance from the oval), each step to the next ring's neighbour nearest on the canonical face."""
    verts, _ = canonical_mesh()
    nbrs = _neighbours()
    oval = set(OVAL_TO_RIGHT) | set(OVAL_TO_LEFT)
    ring = dict.fromkeys(oval, 0)
    frontier = set(oval)
    for depth in range(1, CHAIN_DEPTH):
        frontier = {n for v in frontier for n in nbrs[v] if n not in ring}
        ring.update(dict.fromkeys(frontier, depth))
    chains = {}
    for start in oval:
        chain = [start]
        for depth in range(1, CHAIN_DEPTH):
            options = [n for n in nbrs[chain[-1]] if ring.get(n) == depth]
            if not options:
                break
            chain.append(min(options, key=lambda n: np.linalg.norm(verts[n] - verts[start])))
        chains[start] = tuple(chain)
    return chains


def silhouette_side(xy: np.ndarray, oval: tuple[int, ...]) -> np.ndarray:
    """Outermost image point ``[len(oval), 2]`` of each oval vertex's cheek chain.

    "Outward" is the image normal of the oval polyline at that vertex, pointing away from the
    face centre (mean of all mesh points).
    """
    chains = cheek_chains()
    pts = xy[list(oval)]
    center = xy[:468].mean(0)
    tangent = np.gradient(pts, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal *= np.sign(np.sum(normal * (pts - center), axis=1, keepdims=True) + 1e-12)
    out = np.empty_like(pts)
    for i, v in enumerate(oval):
        cand = xy[list(chains[v])]
        out[i] = cand[np.argmax((cand - pts[i]) @ normal[i])]
    return out


def _resample(polyline: np.ndarray, end: float, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length from ``polyline[0]`` to fractional index ``end``."""
    k = int(np.floor(end))
    frac = end - k
    tail = polyline[k] if frac == 0 else (1 - frac) * polyline[k] + frac * polyline[k + 1]
    pts = np.concatenate([polyline[:k + 1], tail[None]], axis=0)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(targets, s, pts[:, d]) for d in range(2)], axis=1)


def silhouette_jaw(landmarks: np.ndarray, contour_end: float) -> np.ndarray:
    """Jaw points ``[17, 2]`` (iBUG 0..16) on the mesh silhouette."""
    xy = np.asarray(landmarks)[:, :2]
    right = _resample(silhouette_side(xy, OVAL_TO_RIGHT), contour_end, 9)  # 8, 7, ..., 0
    left = _resample(silhouette_side(xy, OVAL_TO_LEFT), contour_end, 9)  # 8, 9, ..., 16
    return np.concatenate([right[::-1], left[1:]], axis=0)


def apply_mapping(landmarks: np.ndarray, mapping: Ibug68Mapping) -> np.ndarray:
    """``[68, 2]`` from mesh landmarks ``[>=468, 2|3]`` with a refined mapping."""
    xy = np.asarray(landmarks)[:, :2]
    inner = np.einsum("lk,lkd->ld", mapping.weights, xy[mapping.vertex_ids])
    return np.concatenate([silhouette_jaw(xy, mapping.contour_end), inner], axis=0)


def identity_mapping(contour_end: float = 11.0) -> Ibug68Mapping:
    """Baseline vertices for 17..67 (weight 1 on the vertex itself) with the silhouette jaw."""
    ids, weights = _one_ring_ids()
    w = np.zeros_like(weights)
    w[:, 0] = 1.0
    return Ibug68Mapping(vertex_ids=ids, weights=w, contour_end=contour_end)


@functools.lru_cache(maxsize=1)
def _one_ring_ids() -> tuple[np.ndarray, np.ndarray]:
    """``[51, K]`` ids: each baseline vertex then its one-ring, padded; mask of real entries."""
    nbrs = _neighbours()
    rows = [[v] + sorted(nbrs[v]) for v in BASELINE_INDICES[17:]]
    k = max(len(r) for r in rows)
    ids = np.array([r + [r[0]] * (k - len(r)) for r in rows], np.int64)
    mask = np.array([[1.0] * len(r) + [0.0] * (k - len(r)) for r in rows])
    return ids, mask


def fit_mapping(meshes: list[np.ndarray], targets: list[np.ndarray], ridge: float = 0.05,
                contour_ends: tuple[float, ...] = tuple(np.arange(9.0, 12.51, 0.25))) -> Ibug68Mapping:
    """Fit weights and contour end to labelled faces.

    Args:
      meshes: per face, mesh landmarks ``[>=468, 2|3]`` in image pixels.
      targets: per face, iBUG-68 ground truth ``[68, 2]`` in the same pixels.
      ridge: penalty on weights moving away from the baseline vertex, in units of squared
        normalised error (coordinates are divided by each face's √(w·h) of its label box).
      contour_ends: candidates for the jaw contour end; the one with the least jaw error wins.
    """
    if len(meshes) != len(targets) or not meshes:
        raise ValueError(f"fit_mapping: need equally many meshes and targets, got {len(meshes)}, {len(targets)}")
    ids, mask = _one_ring_ids()
    scales = [_label_scale(t) for t in targets]
    weights = np.zeros_like(mask)
    for l in range(ids.shape[0]):
        n = int(mask[l].sum())
        # w = e0 + Q z with Q spanning sum-zero vectors: stays an affine combination
        q = np.vstack([-np.ones((1, n - 1)), np.eye(n - 1)])
        a = np.concatenate([(m[ids[l, :n], :2].T @ q) / s for m, s in zip(meshes, scales)])
        b = np.concatenate([(t[17 + l] - m[ids[l, 0], :2]) / s for m, t, s in zip(meshes, targets, scales)])
        z = np.linalg.solve(a.T @ a + ridge * np.eye(n - 1), a.T @ b)
        weights[l, :n] = np.concatenate([[1.0], np.zeros(n - 1)]) + q @ z
    jaw_err = [sum(np.sum(((silhouette_jaw(m, e) - t[:17]) / s) ** 2)
                   for m, t, s in zip(meshes, targets, scales)) for e in contour_ends]
    return Ibug68Mapping(vertex_ids=ids, weights=weights, contour_end=float(contour_ends[int(np.argmin(jaw_err))]))


def _label_scale(target: np.ndarray) -> float:
    """√(w·h) of the bounding box of ``[68, 2]`` labels (the NME normaliser)."""
    span = target.max(0) - target.min(0)
    return float(np.sqrt(span[0] * span[1]))


def save_mapping(mapping: Ibug68Mapping, path: Path = REFINED_MAPPING_FILE) -> None:
    np.savez(path, vertex_ids=mapping.vertex_ids.astype(np.int32),
             weights=mapping.weights.astype(np.float32), contour_end=np.float32(mapping.contour_end))


@functools.lru_cache(maxsize=1)
def refined_mapping() -> Ibug68Mapping:
    """The packaged refined mapping (fitted on the labelled dev photos by
    ``benchmarks/landmarks.py --write-mapping``); the identity mapping if none is packaged."""
    if not REFINED_MAPPING_FILE.is_file():
        return identity_mapping()
    d = np.load(REFINED_MAPPING_FILE)
    return Ibug68Mapping(vertex_ids=d["vertex_ids"].astype(np.int64),
                         weights=d["weights"].astype(np.float64), contour_end=float(d["contour_end"]))


def refined68(landmarks: np.ndarray, mapping: Ibug68Mapping | None = None) -> np.ndarray:
    """``[68, 2]`` with the silhouette jaw and the packaged (or given) refined mapping."""
    return apply_mapping(landmarks, refined_mapping() if mapping is None else mapping)
