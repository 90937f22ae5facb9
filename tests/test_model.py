"""Head model asset, loader and the pure functions on it."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.csgraph as csgraph

from avatar_jax.model import (
    ALIGNMENT_LANDMARKS,
    HeadModel,
    HeadModelError,
    apply_laplacian,
    landmarks,
    laplacian_matrix,
    load_head_model,
    sample_surface,
    vertices,
)
from avatar_jax.model import load as load_mod
from avatar_jax.geometry.closest import closest_point_on_mesh, closest_point_on_triangles
from avatar_jax.geometry.mesh import (
    cotangent_laplacian,
    edge_face_counts,
    is_consistently_oriented,
    vertex_normals,
)

REPO = Path(__file__).resolve().parents[1]
ICT = REPO / "tests" / "data" / "ict_facekit"  # the source asset (MIT), as in ../shared/assets
ASSET = load_mod.default_path("lowpoly")


@pytest.fixture(scope="module")
def model() -> HeadModel:
    return load_head_model()


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    with np.load(ASSET) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def source() -> dict[str, np.ndarray]:
    with np.load(ICT / "ict_head.npz") as z:
        return {k: z[k] for k in z.files}


def _np(model: HeadModel):
    return np.asarray(model.neutral, np.float64), np.asarray(model.triangles)


# --------------------------------------------------------------------------- asset invariants

def test_counts_dtypes_and_index_ranges(model):
    v, f = _np(model)
    nv, nf = v.shape[0], f.shape[0]
    assert 2700 <= nv <= 3300 and 1.8 * nv <= nf <= 2.1 * nv
    assert model.neutral.dtype == jnp.float32 and model.triangles.dtype == jnp.int32
    assert f.min() >= 0 and f.max() == nv - 1
    assert len(np.unique(f)) == nv, "unreferenced vertices"
    assert model.identity_basis.shape == (100, nv, 3)
    assert model.expression_basis.shape == (53, nv, 3) and len(model.expression_names) == 53
    tuv = np.asarray(model.triangle_uvs)
    uv = np.asarray(model.uvs)
    assert tuv.shape == f.shape and tuv.min() >= 0 and tuv.max() == len(uv) - 1
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert len(uv) > nv, "UV seams should split some uv indices"
    for name in ("landmark_faces", "contour_candidates", "lap_rows", "lap_cols"):
        a = np.asarray(getattr(model, name))
        assert a.dtype == np.int32 and a.min() >= 0 and a.max() < nv, name
    assert 0 <= int(model.nose_tip) < nv


def test_mesh_is_clean(model):
    v, f = _np(model)
    assert not ((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])).any()
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert area.min() > 1e-3  # mm^2 (the source's smallest triangle is 4.6e-3)
    assert len(np.unique(np.sort(f, 1), axis=0)) == len(f), "duplicate triangles"
    assert len(np.unique(v, axis=0)) == len(v), "vertices not welded by position"
    _, counts = edge_face_counts(f)
    assert counts.max() == 2, "non-manifold edge"
    assert (counts == 1).sum() == 212, "eye/mouth/neck boundaries must survive unchanged"
    assert is_consistently_oriented(f)
    n_comp, _ = csgraph.connected_components(laplacian_matrix(model) != 0)
    assert n_comp == 1


def test_normals_point_outwards(model):
    v, f = _np(model)
    n = np.asarray(vertex_normals(model.neutral, model.triangles))
    assert n[int(model.nose_tip), 2] > 0.9  # nose tip faces forward (+Z)
    assert n[np.argmax(v[:, 1]), 1] > 0.9  # crown faces up (+Y)
    # Everywhere on the skull (above the eyes, away from ears), normals point away from the centre.
    skull = v[:, 1] > 60
    radial = v[skull] - np.array([0.0, 20.0, 0.0])
    assert (np.einsum("ij,ij->i", n[skull], radial) > 0).mean() > 0.99


def test_uv_seams_split_by_tile(model):
    """Packed UDIM: face tile u in [0, .5], head & neck tile u in [.5, 1]; no triangle straddles."""
    f = np.asarray(model.triangles)
    uv = np.asarray(model.uvs)[np.asarray(model.triangle_uvs)]  # [F, 3, 2]
    tile = uv[..., 0] > 0.5
    assert (tile.all(1) | ~tile.any(1)).all(), "triangle spans both UV tiles"
    face_tri = np.asarray(model.face_mask)[f].all(1)
    assert (~tile[face_tri].any(1)).mean() > 0.95
    head_tri = ~np.asarray(model.face_mask)[f].any(1)
    assert tile[head_tri].all()
    # Counter-clockwise in UV like in 3D (decimation leaves one tiny fold at the philtrum).
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    assert (area <= 0).sum() <= 1 and -area[area <= 0].sum() < 1e-4 * area[area > 0].sum()


def test_triangle_quality(model):
    """No slivers beyond what the source has (its mouth corners have 2.6 degree angles)."""
    v, f = _np(model)
    t = v[f]
    ang = []
    for i in range(3):
        u, w = t[:, (i + 1) % 3] - t[:, i], t[:, (i + 2) % 3] - t[:, i]
        cos = np.einsum("ij,ij->i", u, w) / np.linalg.norm(u, axis=1) / np.linalg.norm(w, axis=1)
        ang.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    min_angle = np.min(ang, axis=0)
    assert min_angle.min() > 2.0 and (min_angle < 5.0).sum() <= 3


def test_priors_weights_and_mask(model, raw):
    np.testing.assert_array_equal(np.asarray(model.identity_sigma), 1.0)
    es = np.asarray(model.expression_sigma)
    assert es.min() >= 0.3 and es.max() <= 1.0
    assert es[model.expression_names.index("mouthClose")] < es[model.expression_names.index("jawOpen")]
    v, _ = _np(model)
    w = np.asarray(model.vertex_weights)
    near = np.linalg.norm(v - v[int(model.nose_tip)], axis=1) < 95.0
    np.testing.assert_array_equal(w, np.where(near, 5.0, 1.0))
    assert 0.2 < near.mean() < 0.8
    fm = np.asarray(model.face_mask)
    assert fm.dtype == bool and 0.5 < fm.mean() < 0.95
    assert int(raw["format_version"]) == 1 and str(raw["variant"]) == "lowpoly"


def test_nose_tip_is_forward_most_near_landmark_30(model):
    v, _ = _np(model)
    lm = np.asarray(landmarks(model, model.neutral))
    tip = v[int(model.nose_tip)]
    assert np.linalg.norm(tip - lm[30]) < 10.0
    assert tip[2] >= v[np.linalg.norm(v - lm[30], axis=1) < 10.0, 2].max()


def test_contour_candidates(model, source):
    v, _ = _np(model)
    cc = np.asarray(model.contour_candidates)
    assert cc.shape[0] == 17 and cc.shape[1] >= 5
    src_lm = source["vertices"][source["landmarks68"][:17]]
    for i in range(17):
        row = cc[i]
        uniq = list(dict.fromkeys(row.tolist()))
        # Padding repeats the last candidate; candidates are distinct before that.
        assert row.tolist() == uniq + [uniq[-1]] * (len(row) - len(uniq))
        p = v[uniq]
        assert np.linalg.norm(p[0] - src_lm[i]) < 6.0, f"front candidate of landmark {i}"
        assert (np.abs(p[:, 1] - src_lm[i, 1]) < 8.0).all(), f"landmark {i} row not horizontal"
        if i == 8:
            continue
        side = np.sign(src_lm[i, 0])
        assert (side * p[:, 0] > 0).all()
        # Front to back: the azimuth about the vertical axis grows (tolerate vertex snapping).
        phi = np.degrees(np.arctan2(side * p[:, 0], p[:, 2]))
        assert (np.diff(phi) > -3.0).all() and phi[-1] > phi[0], f"landmark {i}: {phi}"
        assert len(uniq) >= 3, f"landmark {i} has only {len(uniq)} candidates"


# --------------------------------------------------------------------------- vs the source

def test_vertices_are_source_vertices_with_exact_bases(raw, source):
    ids = raw["source_vertex_ids"]
    np.testing.assert_array_equal(raw["neutral"], source["vertices"][ids])
    np.testing.assert_array_equal(raw["identity_basis"], source["identity_basis"][:, ids].astype(np.float32))
    np.testing.assert_array_equal(raw["expression_basis"], source["expression_basis"][:, ids].astype(np.float32))
    np.testing.assert_array_equal(raw["face_mask"], source["vertex_region"][ids] == 0)
    np.testing.assert_array_equal(raw["expression_names"], source["expression_names"])
    # Every low-poly wedge uv is a packed source uv of the same source vertex.
    suv = source["uvs"].astype(np.float64) * [0.5, 1.0]
    pairs = {(int(a), tuple(np.round(suv[b], 6)))
             for a, b in zip(source["triangles"].ravel(), source["triangle_uvs"].ravel())}
    corner_v = ids[raw["triangles"]].ravel()
    corner_uv = np.round(raw["uvs"][raw["triangle_uvs"]].reshape(-1, 2).astype(np.float64), 6)
    missing = sum((int(a), tuple(b)) not in pairs for a, b in zip(corner_v, corner_uv))
    assert missing == 0


def _surface_distance(source, low_verts, low_faces, offset=None):
    x = source["vertices"].astype(np.float64)
    if offset is not None:
        x = x + offset
    _, d, _, _ = closest_point_on_mesh(low_verts, low_faces, x)
    face = source["vertex_region"] == 0
    return d[face].mean(), d.mean(), d.max()


def test_surface_distance_to_source(model, source):
    v, f = _np(model)
    face_mean, all_mean, dmax = _surface_distance(source, v, f)
    print(f"source -> low-poly surface: face mean {face_mean:.3f} mm, whole head mean "
          f"{all_mean:.3f} mm, max {dmax:.3f} mm")
    assert face_mean <= 0.5 and all_mean <= 0.5 and dmax < 2.0


@pytest.mark.parametrize("kind,index,scale", [("identity", 0, 3.0), ("expression", "jawOpen", 1.0)])
def test_blendshape_transfer_error(model, source, kind, index, scale):
    """Deformed low-poly surface vs deformed source: stays as close as the neutral one."""
    if kind == "identity":
        coeff = jnp.zeros(model.num_identity).at[index].set(scale)
        x = vertices(model, identity=coeff)
        offset = scale * source["identity_basis"][index].astype(np.float64)
    else:
        j = model.expression_names.index(index)
        coeff = jnp.zeros(model.num_expression).at[j].set(scale)
        x = vertices(model, expression=coeff)
        offset = scale * source["expression_basis"][j].astype(np.float64)
    face_mean, all_mean, dmax = _surface_distance(source, np.asarray(x, np.float64),
                                                  np.asarray(model.triangles), offset)
    print(f"{kind} {index} x{scale}: face mean {face_mean:.3f} mm, whole {all_mean:.3f}, max {dmax:.3f}")
    assert face_mean <= 0.5 and dmax < 2.5


def test_landmarks_within_2mm_of_source(model, source):
    lm = np.asarray(landmarks(model, model.neutral))
    d = np.linalg.norm(lm - source["vertices"][source["landmarks68"]], axis=1)
    assert d.max() < 2.0, d.max()
    bary = np.asarray(model.landmark_bary)
    assert (bary >= -1e-6).all() and np.allclose(bary.sum(1), 1.0, atol=1e-5)
    # The embedding triangles are real mesh triangles.
    tris = {tuple(t) for t in np.sort(np.asarray(model.triangles), 1).tolist()}
    assert all(tuple(t) in tris for t in np.sort(np.asarray(model.landmark_faces), 1).tolist())


# --------------------------------------------------------------------------- Laplacian

def test_laplacian_is_cotangent_laplacian_of_neutral(model):
    v, f = _np(model)
    lap = laplacian_matrix(model)
    assert abs(lap - cotangent_laplacian(v, f)).max() < 1e-4 * abs(lap).max()
    assert abs(lap - lap.T).max() < 1e-6
    np.testing.assert_allclose(np.asarray(lap.sum(1)).ravel(), 0.0, atol=1e-4)
    # On a curved surface L x is the mean-curvature normal (2 H A n): parallel to the normal.
    n = np.asarray(vertex_normals(model.neutral, model.triangles))
    lx = lap @ v
    interior = ~_boundary_vertices(f, len(v))
    cos = np.einsum("ij,ij->i", lx, n) / np.maximum(np.linalg.norm(lx, axis=1), 1e-12)
    assert np.median(np.abs(cos[interior])) > 0.95
    # The JAX version agrees with scipy.
    got = np.asarray(apply_laplacian(model, jnp.asarray(v, jnp.float32)))
    np.testing.assert_allclose(got, lap @ v, atol=1e-2)


def _boundary_vertices(faces, nv):
    edges, counts = edge_face_counts(faces)
    boundary = np.zeros(nv, bool)
    boundary[edges[counts == 1].ravel()] = True
    return boundary


def test_laplacian_of_linear_field_is_zero_at_interior_vertices(model):
    """Linear precision of the cotangent formula (on planar meshes: a jittered grid and a
    Delaunay triangulation of random points tilted in 3D); the model's L is this formula on the
    neutral (checked above)."""
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(0)
    pts2 = rng.uniform(size=(200, 2))
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    tilted = np.c_[pts2, np.zeros(200)] @ rot.T  # a plane in general position
    tilted_faces = Delaunay(pts2).simplices
    # A jittered planar grid, triangulated.
    n = 12
    gx, gy = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    grid = np.c_[gx.ravel(), gy.ravel(), np.zeros(n * n)]
    inner = (gx.ravel() % (n - 1) != 0) & (gy.ravel() % (n - 1) != 0)
    grid[inner, :2] += rng.uniform(-0.3, 0.3, (inner.sum(), 2))
    q = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None]).ravel()
    grid_faces = np.r_[np.c_[q, q + 1, q + n + 1], np.c_[q, q + n + 1, q + n]]
    for verts, faces in ((tilted, tilted_faces), (grid, grid_faces)):
        lap = cotangent_laplacian(verts, faces)
        field = verts @ rng.normal(size=(3, 3)) + rng.normal(size=3)
        lf = lap @ field
        interior = ~_boundary_vertices(faces, len(verts))
        used = np.zeros(len(verts), bool)
        used[faces.ravel()] = True
        scale = np.abs(lap.diagonal()).mean() * np.abs(field).mean()
        assert np.abs(lf[interior & used]).max() < 1e-8 * scale
        assert np.abs(lf[~interior & used]).max() > 1e-3 * scale  # boundary rows are not zero


# --------------------------------------------------------------------------- pure functions

def test_vertices_under_jit_and_vmap(model):
    rng = np.random.default_rng(1)
    ident = jnp.asarray(rng.normal(size=(3, model.num_identity)), jnp.float32)
    expr = jnp.asarray(rng.uniform(size=(3, model.num_expression)), jnp.float32)
    batched = jax.jit(jax.vmap(vertices, (None, 0, 0)))(model, ident, expr)
    assert batched.shape == (3, model.num_vertices, 3)
    ref = (np.asarray(model.neutral)[None]
           + np.einsum("bk,kvd->bvd", np.asarray(ident), np.asarray(model.identity_basis))
           + np.einsum("bk,kvd->bvd", np.asarray(expr), np.asarray(model.expression_basis)))
    np.testing.assert_allclose(np.asarray(batched), ref, atol=1e-3)
    lms = jax.jit(jax.vmap(landmarks, (None, 0)))(model, batched)
    assert lms.shape == (3, 68, 3)
    np.testing.assert_allclose(np.asarray(lms[1]), np.asarray(landmarks(model, batched[1])), atol=1e-4)
    np.testing.assert_allclose(np.asarray(vertices(model)), np.asarray(model.neutral))


def test_sample_surface_and_alignment_points(model):
    f = model.landmark_faces[jnp.asarray(ALIGNMENT_LANDMARKS)]
    b = model.landmark_bary[jnp.asarray(ALIGNMENT_LANDMARKS)]
    pts = np.asarray(sample_surface(model.neutral, f, b))
    lm = np.asarray(landmarks(model, model.neutral))
    np.testing.assert_allclose(pts, lm[list(ALIGNMENT_LANDMARKS)])
    # Subject's right eye outer corner (36) at -X, left (45) at +X, nose tip (30) most forward.
    assert pts[0, 0] < -30 and pts[3, 0] > 30 and pts[4, 2] == pts[:, 2].max()


def test_closest_point_on_triangles_regions():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]]), np.array([[0.0, 1, 0]])
    cases = {
        (0.2, 0.2, 1.0): (0.2, 0.2, 0.0),   # interior, above the plane
        (-1.0, -1.0, 0.0): (0.0, 0.0, 0.0),  # vertex a region
        (2.0, -0.5, 0.0): (1.0, 0.0, 0.0),   # vertex b region
        (0.5, -1.0, 0.0): (0.5, 0.0, 0.0),   # edge ab
        (1.0, 1.0, 0.0): (0.5, 0.5, 0.0),    # edge bc
    }
    for p, want in cases.items():
        q, bary = closest_point_on_triangles(np.array([p]), a, b, c)
        np.testing.assert_allclose(q[0], want, atol=1e-12)
        np.testing.assert_allclose(bary.sum(), 1.0)


def test_closest_point_on_collinear_triangles_uses_their_edges():
    a, b, c = (np.array([[x, 0.0, 0.0]] * 3) for x in (0.0, 1.0, 2.0))
    p = np.array([[1.5, 1.0, 0.0], [-1.0, 0.0, 0.0], [3.0, 2.0, 0.0]])
    q, bary = closest_point_on_triangles(p, a, b, c)
    np.testing.assert_allclose(q, [[1.5, 0, 0], [0, 0, 0], [2, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(bary @ np.array([0.0, 1.0, 2.0]), [1.5, 0.0, 2.0], atol=1e-12)


def test_closest_point_on_mesh_matches_brute_force(model):
    v, f = _np(model)
    rng = np.random.default_rng(2)
    pts = v[rng.choice(len(v), 40, replace=False)] + rng.normal(scale=4.0, size=(40, 3))
    q, d, fid, bary = closest_point_on_mesh(v, f, pts)
    for i, p in enumerate(pts):
        qq, _ = closest_point_on_triangles(np.repeat(p[None], len(f), 0), v[f[:, 0]], v[f[:, 1]], v[f[:, 2]])
        assert abs(np.linalg.norm(qq - p, axis=1).min() - d[i]) < 1e-9
    np.testing.assert_allclose(np.einsum("nk,nkd->nd", bary, v[f[fid]]), q, atol=1e-9)


# --------------------------------------------------------------------------- loader

def test_load_is_cached_and_fast(model):
    jnp.zeros(1).block_until_ready()  # JAX backend start-up is not part of loading
    cold = []
    for _ in range(3):
        load_mod._load_cached.cache_clear()
        t = time.perf_counter()
        m = load_head_model()
        cold.append(time.perf_counter() - t)
    t = time.perf_counter()
    again = load_head_model()
    warm = time.perf_counter() - t
    print(f"cold load {min(cold) * 1e3:.1f} ms (best of 3), cached {warm * 1e6:.1f} us")
    assert again is m
    assert min(cold) < 0.2 and warm < 0.2
    assert load_head_model(dtype=jnp.float16).neutral.dtype == jnp.float16


def _write_variant(tmp_path, raw, name="m.npz", drop=(), **changes):
    arrays = {k: v for k, v in raw.items() if k not in drop}
    arrays.update(changes)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_bad_files_raise_head_model_error(tmp_path, raw):
    missing = tmp_path / "nope.npz"
    with pytest.raises(HeadModelError, match="nope.npz.*|not found.*nope.npz"):
        load_head_model(path=missing)

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(ASSET.read_bytes()[: ASSET.stat().st_size // 2])
    with pytest.raises(HeadModelError, match="truncated.npz"):
        load_head_model(path=truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(HeadModelError, match="garbage.npz"):
        load_head_model(path=garbage)

    wrong_version = _write_variant(tmp_path, raw, "v2.npz", format_version=np.int32(2))
    with pytest.raises(HeadModelError, match=r"v2.npz.*format_version 2"):
        load_head_model(path=wrong_version)

    no_key = _write_variant(tmp_path, raw, "nolap.npz", drop=("lap_vals",))
    with pytest.raises(HeadModelError, match=r"nolap.npz.*lap_vals"):
        load_head_model(path=no_key)

    bad_index = _write_variant(tmp_path, raw, "badidx.npz",
                               triangles=raw["triangles"] + len(raw["neutral"]))
    with pytest.raises(HeadModelError, match=r"badidx.npz.*triangles"):
        load_head_model(path=bad_index)

    bad_shape = _write_variant(tmp_path, raw, "badshape.npz", identity_sigma=np.ones(3, np.float32))
    with pytest.raises(HeadModelError, match=r"badshape.npz.*identity_sigma"):
        load_head_model(path=bad_shape)

    with pytest.raises(HeadModelError, match="head_full.npz.*build_head_model.py"):
        load_head_model("full")
    assert issubclass(HeadModelError, ValueError)


def test_explicit_path_round_trip(tmp_path, raw, model):
    path = _write_variant(tmp_path, raw, "copy.npz")
    other = load_head_model(path=str(path))
    np.testing.assert_array_equal(np.asarray(other.neutral), np.asarray(model.neutral))
    assert other.expression_names == model.expression_names


# --------------------------------------------------------------------------- reproducibility

@pytest.mark.skipif(importlib.util.find_spec("pymeshlab") is None, reason="pymeshlab not installed")
def test_build_script_reproduces_committed_asset(raw, source):
    spec = importlib.util.spec_from_file_location("build_head_model", REPO / "tools" / "build_head_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built, _ = mod.build(ICT, "lowpoly", with_errors=False)
    assert sorted(built) == sorted(raw)
    for k, v in built.items():
        np.testing.assert_array_equal(np.asarray(v), raw[k], err_msg=k)
