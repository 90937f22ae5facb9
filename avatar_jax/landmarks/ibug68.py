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

  The silhouette is where the mesh's cheek turns away, which is not exactly where an annotator
  puts iBUG's jaw points (they crowd towards the chin and sit a little inside the outline, more
  so as the head turns), so each jaw point moves by a fitted offset along and across the
  contour: ``jaw_offsets`` ``[3, 17, 2]``, linear in ``(1, yaw, |yaw|)`` (:func:`jaw_features`),
  in units of the face size (:func:`face_size`). The inner points' annotated positions also move
  on the mesh as the head turns (a brow's visible edge, the nose tip's outline), so they get yaw
  offsets too (``inner_offsets``, in the face's own axes).

The packaged mapping (``data/ibug68_refined.npz``) is fitted by ``tools/build_ibug68_mapping.py``
to the 68 points of dlib's shape predictor on photos that are not the labelled test photos (see
``data/README.md`` for provenance and terms).
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
      jaw_offsets: ``[3, 17, 2]`` per jaw point, its offset (along the contour towards higher
        point numbers, across it) as a linear function of :func:`jaw_features`, in units of
        :func:`face_size`; None = no offsets.
      inner_offsets: ``[3, 51, 2]`` offsets of points 17..67 in the face's own axes
        (:func:`face_axes`), linear in :func:`jaw_features` like the jaw's (the constant term is
        0: the weights already hold a fixed offset), in units of :func:`face_size`; None = none.
    """

    vertex_ids: np.ndarray
    weights: np.ndarray
    contour_end: float
    jaw_offsets: np.ndarray | None = None
    inner_offsets: np.ndarray | None = None


# iBUG-68 left/right pairs: a face mirrored horizontally has its point i where point MIRROR_68[i]
# of the original was (jaw and brows reverse, eyes swap with their corners reversed, the
# nose bridge and the lips' midline stay).
_MIRROR_PAIRS = (
    [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
MIRROR_68 = tuple(dict(_MIRROR_PAIRS + [(b, a) for a, b in _MIRROR_PAIRS]).get(i, i) for i in range(68))
JAW_FEATURES = ("1", "yaw", "|yaw|")  # yaw in radians, see head_yaw


def mirror68(points: np.ndarray, width: int) -> np.ndarray:
    """iBUG-68 points ``[68, 2]`` of a face, as they are on the image mirrored left-right.

    ``width`` is the image width in pixels (x is 0-based with the centre of the top-left pixel at
    0, so x maps to ``width - 1 - x``).
    """
    points = np.asarray(points, np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"mirror68: points must be [68, 2], got {points.shape}")
    out = points[list(MIRROR_68)].copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out


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
    pts = xy[list(oval)]
    center = xy[:468].mean(0)
    tangent = np.gradient(pts, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal *= np.sign(np.sum(normal * (pts - center), axis=1, keepdims=True) + 1e-12)
    cand = xy[_chain_table(oval)]  # [len(oval), CHAIN_DEPTH, 2]
    best = np.argmax(np.einsum("ocd,od->oc", cand - pts[:, None], normal), axis=1)
    return cand[np.arange(len(oval)), best]


@functools.lru_cache(maxsize=4)
def _chain_table(oval: tuple[int, ...]) -> np.ndarray:
    """``[len(oval), CHAIN_DEPTH]`` cheek-chain vertex ids, short chains padded with their last
    vertex (a repeated candidate cannot change which one is outermost)."""
    chains = cheek_chains()
    return np.array([list(chains[v]) + [chains[v][-1]] * (CHAIN_DEPTH - len(chains[v])) for v in oval])


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


def silhouette_jaw(landmarks: np.ndarray, contour_end: float,
                   jaw_offsets: np.ndarray | None = None) -> np.ndarray:
    """Jaw points ``[17, 2]`` (iBUG 0..16) on the mesh silhouette, moved by ``jaw_offsets``
    ``[3, 17, 2]`` (see :class:`Ibug68Mapping`; these need the mesh's depth column)."""
    xy = np.asarray(landmarks)[:, :2]
    jaw = _jaw_on_contour(_silhouette_sides(xy), contour_end)
    if jaw_offsets is None:
        return jaw
    return _offset_jaw(jaw, jaw_features(landmarks), face_size(xy), jaw_offsets)


def _silhouette_sides(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return silhouette_side(xy, OVAL_TO_RIGHT), silhouette_side(xy, OVAL_TO_LEFT)


def _jaw_on_contour(sides: tuple[np.ndarray, np.ndarray], contour_end: float) -> np.ndarray:
    right = _resample(sides[0], contour_end, 9)  # 8, 7, ..., 0
    left = _resample(sides[1], contour_end, 9)  # 8, 9, ..., 16
    return np.concatenate([right[::-1], left[1:]], axis=0)


def _offset_jaw(jaw: np.ndarray, features: np.ndarray, size: float, jaw_offsets: np.ndarray) -> np.ndarray:
    along, across = jaw_frame(jaw)
    off = np.einsum("f,fpc->pc", features, jaw_offsets) * size
    return jaw + off[:, :1] * along + off[:, 1:] * across


def jaw_frame(jaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``[17, 2]`` along the jaw polyline (towards higher point numbers) and across
    it (the along vector turned by -90 degrees in image axes: into the face)."""
    along = np.gradient(jaw, axis=0)
    along /= np.maximum(np.linalg.norm(along, axis=1, keepdims=True), 1e-12)
    return along, np.stack([along[:, 1], -along[:, 0]], axis=1)


def face_size(landmarks: np.ndarray) -> float:
    """√(w·h) of the box of the baseline 68 points of a mesh ``[>=468, 2|3]`` (pixels)."""
    return _label_scale(baseline68(landmarks))


def head_yaw(landmarks: np.ndarray) -> float:
    """Head yaw (radians; positive: the face turned towards image right) of a mesh ``[>=468, 3]``
    (x, y pixels, z relative depth): rotation of the best rigid fit of the canonical face."""
    mesh = np.asarray(landmarks, np.float64)
    if mesh.ndim != 2 or mesh.shape[0] < 468 or mesh.shape[1] != 3:
        raise ValueError(f"head_yaw: need mesh landmarks [>=468, 3] with depth, got {mesh.shape}")
    canon, _ = canonical_mesh()
    x = mesh[:468] * np.array([1.0, -1.0, -1.0])  # image axes (y down, z away) -> model axes
    a, b = canon - canon.mean(0), x - x.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    r = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    return float(np.arctan2(r[0, 2], r[2, 2]))


def jaw_features(landmarks: np.ndarray) -> np.ndarray:
    """``[3]`` the terms the jaw offsets are linear in: :data:`JAW_FEATURES` of a mesh."""
    yaw = head_yaw(landmarks)
    return np.array([1.0, yaw, abs(yaw)])


def apply_mapping(landmarks: np.ndarray, mapping: Ibug68Mapping) -> np.ndarray:
    """``[68, 2]`` from mesh landmarks ``[>=468, 2|3]`` (``[>=468, 3]`` when the mapping has jaw
    or inner offsets) with a refined mapping."""
    mesh = np.asarray(landmarks)
    inner = np.einsum("lk,lkd->ld", mapping.weights, mesh[mapping.vertex_ids, :2])
    if mapping.inner_offsets is not None:
        off = np.einsum("f,fpc->pc", jaw_features(mesh), mapping.inner_offsets) * face_size(mesh)
        inner = inner + off @ face_axes(mesh)
    return np.concatenate([silhouette_jaw(mesh, mapping.contour_end, mapping.jaw_offsets), inner], axis=0)


def face_axes(landmarks: np.ndarray) -> np.ndarray:
    """``[2, 2]`` rows: unit vector from eye corner 33 to eye corner 263 (image left to right on
    an upright face), and that vector turned by +90 degrees in image axes (down the face)."""
    xy = np.asarray(landmarks)[:, :2]
    u = xy[263] - xy[33]
    u = u / max(float(np.linalg.norm(u)), 1e-12)
    return np.array([u, [-u[1], u[0]]])


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


def fit_mapping(meshes: list[np.ndarray], targets: list[np.ndarray], ridge: float = 0.005,
                contour_ends: tuple[float, ...] = tuple(np.arange(9.0, 12.51, 0.25)),
                jaw_terms: tuple[str, ...] = JAW_FEATURES, jaw_ridge: float = 0.1,
                inner_terms: tuple[str, ...] = (), inner_terms_ridge: float = 0.01) -> Ibug68Mapping:
    """Fit weights, contour end, jaw and inner offsets to labelled faces.

    Deterministic (closed-form ridge solves and an exhaustive search over ``contour_ends``).

    Args:
      meshes: per face, mesh landmarks ``[>=468, 3]`` in image pixels (``[>=468, 2]`` is enough
        when ``jaw_terms`` and ``inner_terms`` are empty).
      targets: per face, iBUG-68 ground truth ``[68, 2]`` in the same pixels.
      ridge: penalty on weights moving away from the baseline vertex, in units of squared
        normalised error (coordinates are divided by each face's √(w·h) of its label box).
      contour_ends: candidates for the jaw contour end; the one with the least (training) jaw
        error after its offsets are fitted wins.
      jaw_terms: which of :data:`JAW_FEATURES` the jaw offsets may use (the others stay 0);
        empty: no offsets (the silhouette points as they are).
      jaw_ridge: ridge on the offsets' coefficients, per face.
      inner_terms: which of ``("yaw", "|yaw|")`` the inner points' offsets use (fitted jointly
        with their weights); empty: none.
      inner_terms_ridge: ridge on those coefficients, per face.
    """
    if len(meshes) != len(targets) or not meshes:
        raise ValueError(f"fit_mapping: need equally many meshes and targets, got {len(meshes)}, {len(targets)}")
    unknown = set(jaw_terms) - set(JAW_FEATURES)
    if unknown:
        raise ValueError(f"fit_mapping: unknown jaw_terms {sorted(unknown)}; expected some of {JAW_FEATURES}")
    unknown = set(inner_terms) - set(JAW_FEATURES[1:])
    if unknown:
        raise ValueError(f"fit_mapping: unknown inner_terms {sorted(unknown)}; expected some of {JAW_FEATURES[1:]}")
    for i, t in enumerate(targets):
        if np.shape(t) != (68, 2):
            raise ValueError(f"fit_mapping: targets[{i}] must be [68, 2], got {np.shape(t)}")
    ids, weights, inner_offsets = _fit_inner(meshes, targets, ridge, inner_terms, inner_terms_ridge)
    # per face, everything about its jaw that does not depend on the contour end
    sides = [_silhouette_sides(np.asarray(m)[:, :2]) for m in meshes]
    features = [jaw_features(m) if jaw_terms else None for m in meshes]
    sizes = [face_size(m) for m in meshes]
    truth = [np.asarray(t, np.float64)[:17] for t in targets]
    best = None
    for end in contour_ends:
        jaws = [_jaw_on_contour(sd, float(end)) for sd in sides]
        offsets = _fit_jaw_offsets(jaws, features, sizes, truth, jaw_terms, jaw_ridge)
        if offsets is not None:
            jaws = [_offset_jaw(j, f, s, offsets) for j, f, s in zip(jaws, features, sizes)]
        err = sum(np.sum(((j - t) / _label_scale(t)) ** 2) for j, t in zip(jaws, truth))
        if best is None or err < best[0]:
            best = (err, float(end), offsets)
    return Ibug68Mapping(vertex_ids=ids, weights=weights, contour_end=best[1], jaw_offsets=best[2],
                         inner_offsets=inner_offsets)


def _fit_inner(meshes, targets, ridge: float, terms: tuple[str, ...] = (), terms_ridge: float = 0.01):
    """Barycentric one-ring weights ``[51, K]`` for points 17..67 (ridge towards the baseline) and,
    with ``terms``, their yaw offsets ``[3, 51, 2]`` (else None), one joint ridge solve per point."""
    ids, mask = _one_ring_ids()
    meshes = [np.asarray(m, np.float64) for m in meshes]
    scales = np.array([_label_scale(t) for t in targets])
    used = [JAW_FEATURES.index(t) for t in JAW_FEATURES if t in terms]
    if used:
        # offset of coordinate d = size * sum_{f, c} feature_f * coef[f, c] * axes[c, d]
        feats = np.array([jaw_features(m)[used] for m in meshes])
        basis = np.einsum("n,nf,ncd->ndfc", np.array([face_size(m) for m in meshes]) / scales, feats,
                          np.array([face_axes(m) for m in meshes])).reshape(len(meshes), 2, -1)
    weights = np.zeros_like(mask)
    coefs = np.zeros((len(JAW_FEATURES), ids.shape[0], 2))
    for l in range(ids.shape[0]):
        n = int(mask[l].sum())
        # w = e0 + Q z with Q spanning sum-zero vectors: stays an affine combination
        q = np.vstack([-np.ones((1, n - 1)), np.eye(n - 1)])
        pts = np.array([m[ids[l, :n], :2] for m in meshes])  # [faces, n, 2]
        a = np.einsum("fnd,nk->fdk", pts, q) / scales[:, None, None]
        b = (np.asarray(targets, np.float64)[:, 17 + l] - pts[:, 0]) / scales[:, None]
        reg = np.full(n - 1, ridge)
        if used:
            a = np.concatenate([a, basis], axis=2)
            reg = np.concatenate([reg, np.full(basis.shape[2], terms_ridge * len(meshes))])
        a, b = a.reshape(-1, a.shape[2]), b.reshape(-1)
        z = np.linalg.solve(a.T @ a + np.diag(reg), a.T @ b)
        weights[l, :n] = np.concatenate([[1.0], np.zeros(n - 1)]) + q @ z[:n - 1]
        if used:
            coefs[used, l] = z[n - 1:].reshape(len(used), 2)
    return ids, weights, (coefs if used else None)


def _fit_jaw_offsets(jaws, features, sizes, truth, jaw_terms: tuple[str, ...],
                     jaw_ridge: float) -> np.ndarray | None:
    """``[3, 17, 2]`` ridge fit of the jaw offsets (see :class:`Ibug68Mapping`) from each face's
    unmoved jaw ``[17, 2]``, features ``[3]``, face size and true jaw ``[17, 2]``; None if no terms."""
    if not jaw_terms:
        return None
    used = [JAW_FEATURES.index(t) for t in JAW_FEATURES if t in jaw_terms]
    resid = []
    for jaw, size, t in zip(jaws, sizes, truth):
        along, across = jaw_frame(jaw)
        d = (t - jaw) / size
        resid.append(np.stack([np.sum(d * along, 1), np.sum(d * across, 1)], axis=1).ravel())
    x, y = np.array(features)[:, used], np.array(resid)
    coef = np.linalg.solve(x.T @ x + jaw_ridge * len(x) * np.eye(len(used)), x.T @ y)
    offsets = np.zeros((len(JAW_FEATURES), 17, 2))
    offsets[used] = coef.reshape(len(used), 17, 2)
    return offsets


def _label_scale(target: np.ndarray) -> float:
    """√(w·h) of the bounding box of ``[68, 2]`` labels (the NME normaliser)."""
    span = target.max(0) - target.min(0)
    return float(np.sqrt(span[0] * span[1]))


def save_mapping(mapping: Ibug68Mapping, path: Path = REFINED_MAPPING_FILE, **metadata) -> None:
    """Write ``mapping`` (and ``metadata``: extra arrays/strings, e.g. how it was fitted)."""
    offsets = np.zeros((len(JAW_FEATURES), 17, 2)) if mapping.jaw_offsets is None else mapping.jaw_offsets
    inner = np.zeros((len(JAW_FEATURES), 51, 2)) if mapping.inner_offsets is None else mapping.inner_offsets
    np.savez(path, vertex_ids=mapping.vertex_ids.astype(np.int32),
             weights=mapping.weights.astype(np.float32), contour_end=np.float32(mapping.contour_end),
             jaw_offsets=offsets.astype(np.float32), inner_offsets=inner.astype(np.float32), **metadata)


def load_mapping(path: Path) -> Ibug68Mapping:
    """Read a mapping written by :func:`save_mapping` (files without offsets, or all-zero ones:
    None, so such mappings also work on 2-column landmarks)."""
    try:
        d = np.load(path)
        offsets, inner = (d[k].astype(np.float64) if k in d.files and np.any(d[k]) else None
                          for k in ("jaw_offsets", "inner_offsets"))
        mapping = Ibug68Mapping(vertex_ids=d["vertex_ids"].astype(np.int64),
                                weights=d["weights"].astype(np.float64),
                                contour_end=float(d["contour_end"]), jaw_offsets=offsets, inner_offsets=inner)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"load_mapping: {path} is not a 468->68 mapping file: {e}") from None
    if mapping.weights.shape != mapping.vertex_ids.shape or mapping.weights.shape[0] != 51 or (
            offsets is not None and offsets.shape != (len(JAW_FEATURES), 17, 2)) or (
            inner is not None and inner.shape != (len(JAW_FEATURES), 51, 2)):
        raise ValueError(f"load_mapping: {path}: bad shapes vertex_ids {mapping.vertex_ids.shape}, "
                         f"weights {mapping.weights.shape}, jaw_offsets {None if offsets is None else offsets.shape}, "
                         f"inner_offsets {None if inner is None else inner.shape}")
    return mapping


@functools.lru_cache(maxsize=1)
def refined_mapping() -> Ibug68Mapping:
    """The packaged refined mapping (``tools/build_ibug68_mapping.py``: fitted to dlib's 68-point
    predictor on photos other than the labelled test photos); the identity mapping if none is
    packaged."""
    if not REFINED_MAPPING_FILE.is_file():
        return identity_mapping()
    return load_mapping(REFINED_MAPPING_FILE)


def refined68(landmarks: np.ndarray, mapping: Ibug68Mapping | None = None) -> np.ndarray:
    """``[68, 2]`` from mesh landmarks ``[>=468, 3]`` with the silhouette jaw and the packaged (or
    given) refined mapping (``[>=468, 2]`` will do for a mapping without offsets)."""
    return apply_mapping(landmarks, refined_mapping() if mapping is None else mapping)
