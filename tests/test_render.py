"""Rasteriser against a brute-force numpy reference; UV layout; preview renderer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from avatar_jax.render.raster import chunk_demand, rasterize, render_uv_layout


def _sphere_px(height=40, width=56, subdivisions=2, seed=0):
    """Two overlapping icospheres in pixel coordinates (u, v, depth > 0), [V, 3], [F, 3]."""
    rng = np.random.default_rng(seed)
    a = trimesh.creation.icosphere(subdivisions=subdivisions)
    b = trimesh.creation.icosphere(subdivisions=subdivisions)
    va = a.vertices * [14, 14, 5] + [24, 20, 30] + rng.normal(0, 0.3, a.vertices.shape)
    vb = b.vertices * [10, 12, 5] + [36, 18, 27]
    verts = np.concatenate([va, vb]).astype(np.float32)
    faces = np.concatenate([a.faces, b.faces + len(va)]).astype(np.int32)
    return verts, faces, height, width


def _reference(verts, faces, height, width):
    """Brute force: every pixel centre against every triangle, perspective-correct depth."""
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    p = np.stack([jj, ii], -1).reshape(-1, 1, 2).astype(np.float64)
    t = verts[faces].astype(np.float64)[None]  # [1, F, 3, 3]
    p0, p1, p2 = t[..., 0, :2], t[..., 1, :2], t[..., 2, :2]

    def cross(a, b, c):
        return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - \
               (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])

    area = cross(p0, p1, p2)
    area = np.where(np.abs(area) > 1e-12, area, np.nan)  # edge-on: never inside
    b = np.stack([cross(p, p1, p2), cross(p0, p, p2), cross(p0, p1, p)], -1) / area[..., None]
    inside = np.all(b >= 0, -1)
    with np.errstate(divide="ignore"):
        depth = 1.0 / np.sum(np.nan_to_num(b) / t[..., 2], -1)
    depth = np.where(inside, depth, np.inf)
    tri = np.where(np.isfinite(depth.min(1)), depth.argmin(1), -1)
    return tri.reshape(height, width), depth.min(1).reshape(height, width)


def test_rasterize_matches_brute_force():
    verts, faces, h, w = _sphere_px()
    tri_id, bary, depth = rasterize(verts, faces, h, w)
    ref_tri, ref_depth = _reference(verts, faces, h, w)
    tri_id, depth = np.asarray(tri_id), np.asarray(depth)
    np.testing.assert_array_equal(tri_id >= 0, ref_tri >= 0)
    # Ties on shared edges may pick either triangle; the depth must agree everywhere.
    assert np.mean(tri_id == ref_tri) > 0.97
    hit = ref_tri >= 0
    np.testing.assert_allclose(depth[hit], ref_depth[hit], rtol=1e-5, atol=1e-4)
    assert np.all(np.isinf(depth[~hit]))
    # Perspective-correct barycentrics: convex weights that interpolate view depth exactly.
    b = np.asarray(bary)[hit]
    tri = verts[faces[tri_id[hit]]]
    np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-5)
    assert np.all(b > -1e-4)
    np.testing.assert_allclose(np.einsum("nk,nk->n", b, tri[..., 2]), depth[hit], rtol=1e-4)


def test_rasterize_backface_culling_and_budget():
    verts, faces, h, w = _sphere_px()
    tri_all, _, _ = rasterize(verts, faces, h, w)
    tri_cull, _, depth_cull = rasterize(verts, faces, h, w, cull_backfaces=True)
    # A closed sphere seen from outside: culling back faces does not change the image...
    # (icosphere faces are CCW from outside; with v down the front faces have negative area).
    np.testing.assert_array_equal(np.asarray(tri_all) >= 0, np.asarray(tri_cull) >= 0)
    # ...and a too small static budget drops pixels instead of failing silently elsewhere.
    need = int(chunk_demand(verts, faces, h, w))
    tri_small, _, _ = rasterize(verts, faces, h, w, max_chunks=need // 4)
    assert (np.asarray(tri_small) >= 0).sum() < (np.asarray(tri_all) >= 0).sum()


def test_rasterize_gradient_wrt_vertices():
    verts, faces, h, w = _sphere_px()

    def mean_depth(v):
        _, _, depth = rasterize(v, faces, h, w, max_chunks=4096)
        return jnp.sum(jnp.where(jnp.isfinite(depth), depth, 0.0))

    g = jax.grad(mean_depth)(jnp.asarray(verts))
    assert np.all(np.isfinite(np.asarray(g)))
    # Moving every vertex 1 further away increases depth of every covered pixel by 1.
    n_cover = int((np.asarray(rasterize(verts, faces, h, w)[0]) >= 0).sum())
    assert float(g[:, 2].sum()) == pytest.approx(n_cover, rel=1e-3)


def test_rasterize_rejects_bad_shapes():
    with pytest.raises(ValueError, match="verts_px"):
        rasterize(np.zeros((4, 2)), np.zeros((1, 3), np.int32), 8, 8)
    with pytest.raises(ValueError, match="triangles"):
        rasterize(np.zeros((4, 3)), np.zeros((1, 4), np.int32), 8, 8)


def test_uv_layout_covers_quad_and_reproduces_uv():
    # Two triangles covering [0.25, 0.75]^2 of UV space, with a UV seam (6 uvs, 4 verts).
    uvs = np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75],
                    [0.25, 0.25], [0.75, 0.75], [0.25, 0.75]], np.float32)
    tri_uv = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    tris = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    size = 32
    tri_id, bary = render_uv_layout(uvs, tri_uv, tris, size)
    assert tri_id.shape == (size, size) and bary.shape == (size, size, 3)
    covered = tri_id >= 0
    # texel centres u = (c + .5)/S in [0.25, 0.75] -> cols 8..23 inclusive
    assert covered.sum() == 16 * 16
    assert covered[8:24, 8:24].all()
    rows, cols = np.nonzero(covered)
    uv = np.einsum("nk,nkd->nd", bary[rows, cols], uvs[tri_uv[tri_id[rows, cols]]])
    np.testing.assert_allclose(uv[:, 0], (cols + 0.5) / size, atol=1e-5)
    np.testing.assert_allclose(uv[:, 1], 1 - (rows + 0.5) / size, atol=1e-5)
    tri_g, bary_g = render_uv_layout(uvs, tri_uv, tris, size, gutter=2)
    # Euclidean gutter of 2 texels: the square grows by 2 on each side, corners rounded.
    assert 16 * 16 + 4 * 16 * 2 < (tri_g >= 0).sum() < 20 * 20
    assert (tri_g[6:26, 8:24] >= 0).all() and (tri_g[8:24, 6:26] >= 0).all()
    np.testing.assert_array_equal(tri_g[covered], tri_id[covered])


def test_render_mesh_close_up_drops_no_triangles():
    # A fan of thin triangles filling the frame: their bounding boxes need many more tiles than
    # the default budget, which the preview sizes from the real demand; and the edges at 45
    # degrees pass through pixel centres, which the shared edge function never loses.
    from avatar_jax.geometry.camera import Camera
    from avatar_jax.render.preview import render_mesh
    from avatar_jax.render.raster import default_max_chunks

    n = 64
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)  # edges at 45 degrees pass through pixel centres
    rim = np.stack([np.cos(angle), np.sin(angle), np.zeros(n)], -1) * 400.0
    verts = np.concatenate([np.zeros((1, 3)), rim]).astype(np.float32)
    faces = np.array([[0, 1 + i, 1 + (i + 1) % n] for i in range(n)], np.int32)
    size = 64
    camera = Camera(rotvec=jnp.zeros(3), translation=jnp.array([0.0, 0.0, -100.0]), log_fs=jnp.asarray(0.0),
                    focal=jnp.asarray(float(size)), principal=jnp.array([size / 2, size / 2]))
    img = np.asarray(render_mesh(verts, faces, camera, (size, size), light=None, background=(1.0, 0.0, 0.0)))
    assert np.all(img[..., 1] > 0.5), "background showed through"
    starved = np.asarray(render_mesh(verts, faces, camera, (size, size), light=None, background=(1.0, 0.0, 0.0),
                                     max_chunks=default_max_chunks(size, size, len(faces))))
    assert np.any(starved[..., 1] < 0.5)  # the default budget alone would have dropped triangles
