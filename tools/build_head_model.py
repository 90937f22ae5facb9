"""Build the head model asset (``avatar_jax/model/data/head_<variant>.npz``) from ICT-FaceKit.

    python tools/build_head_model.py --src ../shared/assets/ict_facekit --variant lowpoly \
        --out avatar_jax/model/data/head_lowpoly.npz
    python tools/build_head_model.py --src ../shared/assets/ict_facekit --variant full \
        --out /tmp/head_full.npz

``lowpoly``: quadric edge-collapse decimation of the ICT skin region (11248 vertices) with
wedge texture coordinates (UV seams kept), boundaries (eyes, mouth, neck) kept, no optimal
placement, so the low-poly vertices are a subset of the source vertices and every per-vertex
quantity (identity modes, expression shapes, face flag) is copied, not interpolated.
``full``: the source mesh itself with the same fields.

Deterministic: same source and parameters give the same file (pymeshlab's decimation is
deterministic; np.savez_compressed output is byte-stable).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avatar_jax.geometry.closest import closest_point_on_mesh  # noqa: E402
from avatar_jax.geometry.mesh import (  # noqa: E402
    cotangent_laplacian,
    edge_face_counts,
    face_normals,
    is_consistently_oriented,
)

FORMAT_VERSION = 1
# Paper: 2,925 vertices. With the boundaries kept, F ~ 2 V - 212 + ..., so ~5650 faces.
DEFAULT_TARGET_FACES = 5650
# Decimate in decimetres so positions (|x| < 2) and packed UVs ([0, 1]) weigh alike in the
# texture-aware quadric.
DECIMATION_SCALE = 100.0
# Weight of the UV error in the quadric. At 1, ~1% of wedges near the face/head tile seam get
# the UV of the other tile (stretched texture); at 100 none do (checked in snap_wedge_uvs).
TEXCOORD_WEIGHT = 100.0
# MeshLab's penalty on collapses that create badly shaped triangles (0..1).
QUALITY_THRESHOLD = 0.3
NUM_CONTOUR_CANDIDATES = 10
NOSE_WEIGHT_RADIUS_MM = 95.0
NOSE_WEIGHT = 5.0
# RMS of a weight uniform on [0, 1]: E[w^2] = 1/3.
EXPRESSION_SIGMA_DEFAULT = float(np.sqrt(1.0 / 3.0))
# Correctives meant to be active only with another shape get a tighter prior.
EXPRESSION_SIGMA_OVERRIDES = {"mouthClose": 0.3}
REQUIRED_SOURCE_KEYS = (
    "vertices", "triangles", "uvs", "triangle_uvs", "identity_basis", "expression_basis",
    "expression_names", "landmarks68", "jawline_right_ext", "jawline_left_ext",
    "vertex_region", "source_commit",
)


# --------------------------------------------------------------------------- source

def load_source(src_dir: Path) -> dict[str, np.ndarray]:
    path = src_dir / "ict_head.npz"
    if not path.is_file():
        raise ValueError(f"ICT source asset not found: {path}")
    with np.load(path) as z:
        missing = [k for k in REQUIRED_SOURCE_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}")
        return {k: z[k] for k in z.files}


def pack_udim(uvs: np.ndarray) -> np.ndarray:
    """UDIM tiles 1001 (face, u in [0,1]) and 1002 (head & neck, u in [1,2]) -> one [0,1] tile."""
    if uvs[:, 0].min() < 0 or uvs[:, 0].max() > 2 or uvs[:, 1].min() < 0 or uvs[:, 1].max() > 1:
        raise ValueError("source UVs outside the two UDIM tiles u in [0,2], v in [0,1]")
    out = uvs.astype(np.float64).copy()
    out[:, 0] *= 0.5
    return out


# --------------------------------------------------------------------------- decimation

def _write_obj(path: Path, verts, faces, uvs, tri_uvs) -> None:
    # MeshLab's texture-aware decimation needs faces with a texture index, i.e. a material
    # with a texture; the texture image itself is irrelevant.
    (path.parent / "skin.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd skin.png\n")
    import imageio.v3 as iio

    iio.imwrite(path.parent / "skin.png", np.zeros((4, 4, 3), np.uint8))
    lines = ["mtllib skin.mtl"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in verts]
    lines += [f"vt {u:.9g} {v:.9g}" for u, v in uvs]
    lines.append("usemtl skin")
    f1, t1 = faces + 1, tri_uvs + 1
    lines += [f"f {a}/{ta} {b}/{tb} {c}/{tc}" for (a, b, c), (ta, tb, tc) in zip(f1, t1)]
    path.write_text("\n".join(lines) + "\n")


def decimate(verts, faces, uvs, tri_uvs, target_faces: int, keep: np.ndarray):
    """Texture-aware quadric edge collapse that keeps the vertices ``keep`` in place.

    Faces touching a kept vertex are left out of the selection, which makes MeshLab lock
    that vertex and its 1-ring (the ring stays at source resolution).
    Returns (verts [V',3], faces [F',3], wedge uv [F',3,2]).
    """
    import pymeshlab

    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "skin.obj"
        _write_obj(obj, verts / DECIMATION_SCALE, faces, uvs, tri_uvs)
        ms = pymeshlab.MeshSet()
        ms.load_new_mesh(str(obj))
    m = ms.current_mesh()
    if m.vertex_number() != len(verts) or not (m.face_matrix() == faces).all():
        raise ValueError("MeshLab reordered the source mesh on import")
    locked_faces = int(np.isin(faces, keep).any(1).sum())
    ms.compute_selection_by_condition_per_vertex(
        condselect="||".join(f"(vi=={int(k)})" for k in keep))
    ms.compute_selection_transfer_vertex_to_face(inclusive=False)
    ms.apply_selection_inverse(invfaces=True)
    ms.meshing_decimation_quadric_edge_collapse_with_texture(
        targetfacenum=int(target_faces) - locked_faces, qualitythr=QUALITY_THRESHOLD,
        extratcoordw=TEXCOORD_WEIGHT, preserveboundary=True, boundaryweight=1.0,
        optimalplacement=False, preservenormal=False, planarquadric=False, selected=True)
    m = ms.current_mesh()
    v = m.vertex_matrix() * DECIMATION_SCALE
    f = m.face_matrix().astype(np.int64)
    w = m.wedge_tex_coord_matrix().reshape(-1, 3, 2)
    # Drop vertices no face uses (MeshLab compacts on save, not necessarily in memory).
    used = np.unique(f)
    remap = -np.ones(len(v), np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f], w


def _angles(verts: np.ndarray, tri: tuple[int, int, int]) -> np.ndarray:
    p = verts[list(tri)]
    out = np.empty(3)
    for i in range(3):
        u, w = p[(i + 1) % 3] - p[i], p[(i + 2) % 3] - p[i]
        c = u @ w / (np.linalg.norm(u) * np.linalg.norm(w))
        out[i] = np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
    return out


def _segment_distance(p0, p1, q0, q1) -> float:
    """Closest distance between segments p0p1 and q0q1 (sampled; precise enough for a bound)."""
    t = np.linspace(0.0, 1.0, 33)[:, None]
    a = p0 + t * (p1 - p0)
    b = q0 + t * (q1 - q0)
    return float(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min())


def _uv_area(uvs: np.ndarray, tri) -> float:
    """Signed UV area (positive = counter-clockwise, like the 3D winding)."""
    p = uvs[list(tri)]
    e1, e2 = p[1] - p[0], p[2] - p[0]
    return 0.5 * float(e1[0] * e2[1] - e1[1] * e2[0])


def uv_folded_faces(uvs: np.ndarray, tri_uvs: np.ndarray) -> np.ndarray:
    """Boolean ``[F]``: triangle is clockwise (or zero-area) in UV space."""
    p = uvs[tri_uvs]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] <= 0


def improve_by_edge_flips(verts, faces, tri_uvs, uvs, max_deviation_mm: float = 0.5,
                          unfold_deviation_mm: float = 1.5, max_rounds: int = 20):
    """Lawson-style edge flips that raise the smaller minimum angle of a triangle pair or unfold UVs.

    Decimation next to the locked, dense boundaries (eyes, mouth) leaves slivers, and a few
    triangles folded (clockwise) in UV space; a flip is taken when it raises the pair's minimum
    angle, or unfolds a UV-folded pair, and never folds UVs. A flip
    changes only the connectivity (vertices, hence all per-vertex data, stay exact) and is
    taken only for interior, non-UV-seam edges, when the new diagonal exists nowhere else,
    both new triangles keep the pair's orientation, and the surface moves by at most
    ``max_deviation_mm`` (distance between the two diagonals; ``unfold_deviation_mm`` for a
    flip that unfolds UVs).
    Returns (faces [F,3], tri_uvs [F,3], number of flips).
    """
    faces = faces.copy()
    tri_uvs = tri_uvs.copy()
    nflips = 0
    for _ in range(max_rounds):
        edge_faces: dict[tuple[int, int], list[int]] = {}
        for fi, t in enumerate(faces.tolist()):
            for k in range(3):
                a, b = t[k], t[(k + 1) % 3]
                edge_faces.setdefault((min(a, b), max(a, b)), []).append(fi)
        touched = np.zeros(len(faces), bool)
        flipped = 0
        for (a, b), fs in edge_faces.items():
            if len(fs) != 2 or touched[fs].any():
                continue
            f1, f2 = fs
            t1, t2 = faces[f1].tolist(), faces[f2].tolist()
            # Rotate so that t1 = (a, b, c) with a->b, t2 = (b, a, d).
            k1 = next(k for k in range(3) if {t1[k], t1[(k + 1) % 3]} == {a, b})
            a_, b_, c = t1[k1], t1[(k1 + 1) % 3], t1[(k1 + 2) % 3]
            k2 = t2.index(b_)
            if t2[(k2 + 1) % 3] != a_:
                continue  # incoherent winding; not expected
            d = t2[(k2 + 2) % 3]
            u1 = dict(zip(t1, tri_uvs[f1].tolist()))
            u2 = dict(zip(t2, tri_uvs[f2].tolist()))
            if u1[a_] != u2[a_] or u1[b_] != u2[b_]:
                continue  # UV seam
            if (min(c, d), max(c, d)) in edge_faces or c == d:
                continue
            old_min = min(_angles(verts, (a_, b_, c)).min(), _angles(verts, (b_, a_, d)).min())
            new1, new2 = (a_, d, c), (d, b_, c)
            new_uv1, new_uv2 = [u1[a_], u2[d], u1[c]], [u2[d], u1[b_], u1[c]]
            if min(_uv_area(uvs, new_uv1), _uv_area(uvs, new_uv2)) <= 0:
                continue  # would fold the texture
            uv_folded = min(_uv_area(uvs, tri_uvs[f1]), _uv_area(uvs, tri_uvs[f2])) <= 0
            new_min = min(_angles(verts, new1).min(), _angles(verts, new2).min())
            if not (new_min > old_min + 0.5 or (uv_folded and new_min > 1.0)):
                continue
            n_old = face_normals(verts, np.array([[a_, b_, c], [b_, a_, d]])).sum(0)
            n_new = face_normals(verts, np.array([new1, new2]))
            if (n_new @ n_old <= 0).any():
                continue
            # Unfolding a UV triangle is worth a larger (still sub-mm) change of shape.
            limit = unfold_deviation_mm if uv_folded else max_deviation_mm
            if _segment_distance(verts[a_], verts[b_], verts[c], verts[d]) > limit:
                continue
            faces[f1], faces[f2] = new1, new2
            tri_uvs[f1], tri_uvs[f2] = new_uv1, new_uv2
            touched[[f1, f2]] = True
            flipped += 1
        nflips += flipped
        if flipped == 0:
            break
    return faces, tri_uvs, nflips


def snap_to_source(src_verts: np.ndarray, verts: np.ndarray, tol_mm: float = 1e-3) -> np.ndarray:
    """Source vertex id of each (kept) vertex ``[V']``; raises if a vertex is not a source vertex."""
    dist, idx = cKDTree(src_verts).query(verts)
    if dist.max() > tol_mm:
        raise ValueError(f"decimation moved vertices (max {dist.max():.3g} mm from any source "
                         "vertex); expected optimalplacement=False to keep a subset")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("two decimated vertices snapped to the same source vertex")
    return idx.astype(np.int64)


def snap_wedge_uvs(src_ids, faces, wedge_uv, src_faces, src_tri_uvs, src_uvs_packed):
    """Map each decimated wedge uv to the identical source uv of the same source vertex.

    Returns (uv_source_index [U], triangle_uvs [F, 3]) with uvs = src_uvs_packed[uv_source_index].
    """
    # All (source vertex, source uv index) pairs the source wedges use.
    pairs = np.unique(np.stack([src_faces.ravel(), src_tri_uvs.ravel()], 1), axis=0)
    starts = np.searchsorted(pairs[:, 0], np.arange(src_faces.max() + 2))
    corner_src = src_ids[faces].ravel()
    corner_uv = wedge_uv.reshape(-1, 2)
    chosen = np.empty(len(corner_src), np.int64)
    worst = 0.0
    for n, (s, w) in enumerate(zip(corner_src, corner_uv)):
        opts = pairs[starts[s]:starts[s + 1], 1]
        d = np.abs(src_uvs_packed[opts] - w).sum(1)
        k = int(np.argmin(d))
        worst = max(worst, float(d[k]))
        chosen[n] = opts[k]
    if worst > 1e-5:
        raise ValueError(f"decimated wedge uv differs from every source uv of its vertex by {worst:.3g}")
    uv_src_index, tri_uvs = np.unique(chosen, return_inverse=True)
    return uv_src_index, tri_uvs.reshape(-1, 3)


# --------------------------------------------------------------------------- checks

def check_clean(verts, faces, src_verts, src_faces) -> dict:
    """Raise on degenerate/duplicate faces, incoherent winding, non-manifold edges or inward normals."""
    if (faces[:, 0] == faces[:, 1]).any() or (faces[:, 1] == faces[:, 2]).any() \
            or (faces[:, 0] == faces[:, 2]).any():
        raise ValueError("degenerate triangle (repeated corner)")
    area = 0.5 * np.linalg.norm(np.cross(verts[faces[:, 1]] - verts[faces[:, 0]],
                                         verts[faces[:, 2]] - verts[faces[:, 0]]), axis=1)
    if area.min() < 1e-3:
        raise ValueError(f"near-degenerate triangle, area {area.min():.3g} mm^2")
    if len(np.unique(np.sort(faces, 1), axis=0)) != len(faces):
        raise ValueError("duplicate triangle")
    if len(np.unique(verts, axis=0)) != len(verts):
        raise ValueError("vertices not welded: duplicate positions")
    _, counts = edge_face_counts(faces)
    if counts.max() > 2:
        raise ValueError("non-manifold edge")
    if not is_consistently_oriented(faces):
        raise ValueError("inconsistent triangle winding")
    # Outward: agree with the (CCW, outward) source normal at the same place.
    centroid = verts[faces].mean(1)
    _, _, fid, _ = closest_point_on_mesh(src_verts, src_faces, centroid)
    agree = np.einsum("ij,ij->i", face_normals(verts, faces), face_normals(src_verts, src_faces)[fid])
    if (agree < 0).mean() > 0.01:
        raise ValueError(f"{(agree < 0).mean():.1%} of triangles face inwards")
    return {"min_area_mm2": float(area.min()), "boundary_edges": int((counts == 1).sum()),
            "inward_frac": float((agree < 0).mean())}


# --------------------------------------------------------------------------- derived fields

def embed_landmarks(verts, faces, points):
    """Closest surface point: (corner ids [68,3], bary [68,3], distance [68])."""
    _, dist, fid, bary = closest_point_on_mesh(verts, faces, points)
    return faces[fid], bary, dist


def _section_profile(verts, faces, y: float, side: float):
    """Outermost point of the horizontal section y = const per 1-degree azimuth bin on one side.

    Azimuth phi = atan2(side * x, z) in degrees (0 = straight ahead, 90 = pure side).
    Returns (phi [B], points [B, 3]) sorted by phi; bins with no section point are absent.
    """
    import trimesh

    mesh = trimesh.Trimesh(verts, faces, process=False)
    segs = trimesh.intersections.mesh_plane(mesh, [0, 1, 0], [0, y, 0])
    t = np.linspace(0, 1, 8)[None, :, None]
    pts = (segs[:, :1] * (1 - t) + segs[:, 1:] * t).reshape(-1, 3)
    pts = pts[side * pts[:, 0] > 0]
    phi = np.degrees(np.arctan2(side * pts[:, 0], pts[:, 2]))
    radius = np.hypot(pts[:, 0], pts[:, 2])
    bins = np.floor(phi).astype(int)
    order = np.lexsort((-radius, bins))
    first = order[np.r_[True, bins[order][1:] != bins[order][:-1]]]
    return phi[first], pts[first]


def _ext_azimuth_at(ext_pts: np.ndarray, y: float, side: float) -> float:
    """Azimuth of the ICT extended jawline (ordered by height) at height y (clamped)."""
    order = np.argsort(ext_pts[:, 1])
    ys, xs, zs = ext_pts[order, 1], ext_pts[order, 0], ext_pts[order, 2]
    x, z = np.interp(y, ys, xs), np.interp(y, ys, zs)
    return float(np.degrees(np.arctan2(side * x, z)))


def contour_candidates(verts, faces, src_verts, src, num: int = NUM_CONTOUR_CANDIDATES,
                       margin_deg: float = 8.0) -> np.ndarray:
    """``[17, num]`` vertex ids per jaw landmark, front (the landmark) to back, padded with the last.

    Candidates follow the horizontal section through the landmark from its frontal position
    back to the ICT extended jawline (its profile contour) plus ``margin_deg`` of azimuth, at
    ``num`` even azimuth steps, each snapped to the nearest vertex.
    """
    tree = cKDTree(verts)
    out = np.zeros((17, num), np.int64)
    for i in range(17):
        p = src_verts[src["landmarks68"][i]]
        first = int(tree.query(p)[1])
        ids = [first]
        side = float(np.sign(p[0]))
        if side != 0:
            ext = src_verts[src["jawline_right_ext" if side < 0 else "jawline_left_ext"]]
            phi0 = float(np.degrees(np.arctan2(side * p[0], p[2])))
            phi1 = max(_ext_azimuth_at(ext, p[1], side), phi0) + margin_deg
            prof_phi, prof_pts = _section_profile(verts, faces, p[1], side)
            for a in np.linspace(phi0, phi1, num)[1:]:
                q = prof_pts[np.argmin(np.abs(prof_phi - a))]
                ids.append(int(tree.query(q)[1]))
        uniq = list(dict.fromkeys(ids))
        out[i] = (uniq + [uniq[-1]] * num)[:num]
    return out


def nose_tip_vertex(verts, src_nose: np.ndarray, radius_mm: float = 10.0) -> int:
    """The most forward (max z) vertex within ``radius_mm`` of the source landmark 30."""
    near = np.flatnonzero(np.linalg.norm(verts - src_nose, axis=1) < radius_mm)
    if len(near) == 0:
        raise ValueError("no vertex near the source nose tip")
    return int(near[np.argmax(verts[near, 2])])


def expression_sigma(names) -> np.ndarray:
    return np.array([EXPRESSION_SIGMA_OVERRIDES.get(str(n), EXPRESSION_SIGMA_DEFAULT)
                     for n in names], np.float32)


# --------------------------------------------------------------------------- transfer error

def transfer_errors(src, src_ids, faces, modes=((("identity", 0), 3.0), (("identity", 1), 3.0),
                                                 (("identity", 5), 3.0), (("expression", 26), 1.0))):
    """Source-vertex-to-low-poly-surface distance (mm) for neutral and neutral + s * mode.

    Since low-poly vertices are source vertices, this is the decimation error of the deformed
    surface (how well the low-poly mesh of the deformed head matches the deformed source).
    """
    face = src["vertex_region"] == 0
    res = {}
    cases = [("neutral", None, 0.0)] + [(f"{kind}[{k}]*{s:g}", (kind, k), s) for (kind, k), s in modes]
    for name, mode, s in cases:
        x = src["vertices"].astype(np.float64)
        if mode is not None:
            x = x + s * src[f"{mode[0]}_basis"][mode[1]].astype(np.float64)
        _, d, _, _ = closest_point_on_mesh(x[src_ids], faces, x)
        res[name] = {"face_mean": float(d[face].mean()), "all_mean": float(d.mean()),
                     "face_max": float(d[face].max()), "all_max": float(d.max())}
    return res


# --------------------------------------------------------------------------- main

def build(src_dir: Path, variant: str, target_faces: int = DEFAULT_TARGET_FACES,
          with_errors: bool = True) -> tuple[dict, dict]:
    """Build the model arrays (as saved) and a report; ``with_errors`` adds transfer errors (slow)."""
    src = load_source(src_dir)
    sv = src["vertices"].astype(np.float64)
    sf = src["triangles"].astype(np.int64)
    suv = pack_udim(src["uvs"])
    stuv = src["triangle_uvs"].astype(np.int64)

    if variant == "lowpoly":
        keep = np.unique(np.concatenate([src["landmarks68"], src["jawline_right_ext"],
                                         src["jawline_left_ext"]]))
        v, f, wuv = decimate(sv, sf, suv, stuv, target_faces, keep)
        src_ids = snap_to_source(sv, v)
        if not np.isin(keep, src_ids).all():
            raise ValueError("decimation removed a landmark or extended-jawline vertex")
        uv_src, tri_uvs = snap_wedge_uvs(src_ids, f, wuv, sf, stuv, suv)
        uvs = suv[uv_src]
        f, tri_uvs, nflips = improve_by_edge_flips(sv[src_ids], f, tri_uvs, uvs)
    elif variant == "full":
        src_ids = np.arange(len(sv))
        f, uvs, tri_uvs = sf, suv, stuv
    else:
        raise ValueError(f"unknown variant {variant!r} (expected 'lowpoly' or 'full')")
    verts = sv[src_ids]
    report = {"num_vertices": len(verts), "num_faces": len(f), "num_uvs": len(uvs),
              "uv_folded_faces": int(uv_folded_faces(uvs, tri_uvs).sum()),
              "edge_flips": nflips if variant == "lowpoly" else 0}
    report.update(check_clean(verts, f, sv, sf))

    lm_faces, lm_bary, lm_dist = embed_landmarks(verts, f, sv[src["landmarks68"]])
    report["landmark_dist_mm"] = {"max": float(lm_dist.max()), "mean": float(lm_dist.mean())}
    if lm_dist.max() > 2.0:
        raise ValueError(f"landmark embedding {lm_dist.max():.2f} mm from its source vertex (> 2 mm)")

    nose = nose_tip_vertex(verts, sv[src["landmarks68"][30]])
    weights = np.where(np.linalg.norm(verts - verts[nose], axis=1) < NOSE_WEIGHT_RADIUS_MM,
                       NOSE_WEIGHT, 1.0)
    lap = cotangent_laplacian(verts, f).tocoo()
    order = np.lexsort((lap.col, lap.row))
    contour = contour_candidates(verts, f, sv, src)

    model = {
        "format_version": np.int32(FORMAT_VERSION),
        "variant": np.str_(variant),
        "source_commit": np.str_(str(src["source_commit"])),
        "neutral": verts.astype(np.float32),
        "triangles": f.astype(np.int32),
        "uvs": uvs.astype(np.float32),
        "triangle_uvs": tri_uvs.astype(np.int32),
        "identity_basis": src["identity_basis"][:, src_ids].astype(np.float32),
        "identity_sigma": np.ones(src["identity_basis"].shape[0], np.float32),
        "expression_basis": src["expression_basis"][:, src_ids].astype(np.float32),
        "expression_sigma": expression_sigma(src["expression_names"]),
        "expression_names": src["expression_names"].astype(str),
        "landmark_faces": lm_faces.astype(np.int32),
        "landmark_bary": lm_bary.astype(np.float32),
        "contour_candidates": contour.astype(np.int32),
        "nose_tip": np.int32(nose),
        "vertex_weights": weights.astype(np.float32),
        "face_mask": src["vertex_region"][src_ids] == 0,
        "lap_rows": lap.row[order].astype(np.int32),
        "lap_cols": lap.col[order].astype(np.int32),
        "lap_vals": lap.data[order].astype(np.float32),
        "source_vertex_ids": src_ids.astype(np.int32),
    }
    if variant == "full":
        report["transfer_error_mm"] = "exact (source mesh)"
    elif with_errors:
        report["transfer_error_mm"] = transfer_errors(src, src_ids, f)
    report["nose_tip"] = nose
    report["contour_distinct"] = [int(len(np.unique(r))) for r in contour]
    return model, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="folder with ict_head.npz")
    ap.add_argument("--variant", choices=("lowpoly", "full"), default="lowpoly")
    ap.add_argument("--out", type=Path, required=True, help="output .npz")
    ap.add_argument("--target-faces", type=int, default=DEFAULT_TARGET_FACES)
    args = ap.parse_args(argv)
    model, report = build(args.src, args.variant, args.target_faces)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **model)
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
