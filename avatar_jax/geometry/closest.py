"""Exact closest points on triangles: a batched JAX query for point sets against a triangle
soup (:func:`point_triangle_distance`, evaluation), and a host-side numpy/scipy query on a mesh
(:func:`closest_point_on_mesh`, asset building and texture completion). Both use the same
region kernel.

The kernel is Ericson's region-based closest point on a triangle ("Real-Time Collision
Detection", 5.1.5), vectorised over (point, triangle) pairs. Point sets are processed in chunks
with ``lax.map`` so memory stays bounded; each chunk first ranks all triangle groups by a
cheap lower bound on the distance (distance to the group's bounding sphere), runs the exact
kernel on the triangles of the best ``candidates`` groups, and *certifies* the result: if the
next-best lower bound is not below the best exact distance found, no other triangle can be
closer. Chunks that fail the
certificate (e.g. points far from a finely tessellated mesh) are redone with 8x and 64x as
many candidates, then by brute force over all triangles, so the result is always exact. The
ranking works on groups of 16 triangles that are neighbours along a Morton curve (one level of
a bounding-volume hierarchy), so it costs O(T / 16) per point. Query points near the surface
(the evaluation use: aligned meshes) are certified at the first tier; far points cost more.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy.spatial import cKDTree

# Pairs (point x triangle) evaluated at once by the brute-force fallback; a few tens of floats
# live per pair, so 2**20 pairs stay within a few hundred MB.
_PAIRS_PER_CHUNK = 1 << 20


def _dot(x, y, xp=jnp):
    return xp.sum(x * y, axis=-1)


def _safe_div(num, den, xp=jnp):
    """num / den where den != 0, else 0 (the caller never selects those entries)."""
    ok = den != 0
    return xp.where(ok, num / xp.where(ok, den, 1.0), 0.0)


def _segment_parameter(p, a, b, xp=jnp):
    """``t [...]`` in [0, 1] of the closest point ``a + t (b - a)`` on segment ``ab`` to ``p``
    (all ``[..., 3]``); a == b gives 0."""
    ab = b - a
    return xp.clip(_safe_div(_dot(p - a, ab, xp), _dot(ab, ab, xp), xp), 0.0, 1.0)


def _closest_on_segment(p, a, b):
    """Closest point on segment ``ab`` to ``p`` (all ``[..., 3]``); a == b is fine."""
    return a + _segment_parameter(p, a, b)[..., None] * (b - a)


def _is_sliver(a, b, c, xp=jnp):
    """Zero-area or sliver triangles ``[...]``: the scale-free |ab x ac|^2 <= eps |ab|^2 |ac|^2
    (sin^2 of the angle at a, eps = 1e-10)."""
    ab, ac = b - a, c - a
    cross = xp.cross(ab, ac)
    return _dot(cross, cross, xp) <= 1e-10 * _dot(ab, ab, xp) * _dot(ac, ac, xp)


def _collapse_degenerate(tri_vertices: jax.Array) -> jax.Array:
    """Replace zero-area triangles ``[T, 3, 3]`` by their longest edge written as ``(a, b, b)``.

    Ericson's region tests misfire on zero-area triangles (with a == b every point falls in
    region AB; with b == c they rely on exact cancellation that FMA contraction under jit does
    not give), so :func:`closest_point_on_triangle` treats ``(a, b, b)`` as the segment ``ab``.
    A collinear triangle is the union of its edges, i.e. its longest edge, so this is exact for
    it. :func:`_is_sliver` also catches slivers, where the answer is off by at most their width.
    """
    a, b, c = tri_vertices[:, 0], tri_vertices[:, 1], tri_vertices[:, 2]
    degenerate = _is_sliver(a, b, c)
    edges = jnp.stack([jnp.stack([a, b], 1), jnp.stack([b, c], 1), jnp.stack([c, a], 1)], 1)
    lengths = jnp.sum((edges[:, :, 1] - edges[:, :, 0]) ** 2, axis=-1)
    longest = jnp.take_along_axis(edges, jnp.argmax(lengths, axis=1)[:, None, None, None], axis=1)[:, 0]
    as_segment = jnp.stack([longest[:, 0], longest[:, 1], longest[:, 1]], axis=1)
    return jnp.where(degenerate[:, None, None], as_segment, tri_vertices)


def _region_weights(p, a, b, c, xp=jnp):
    """Barycentric weights ``(v, w)`` ``[...]`` of ``b`` and ``c`` at the closest point on
    triangle ``abc`` to ``p`` (Ericson's Voronoi-region test, branch-free; ``xp`` is numpy or
    jax.numpy). Exact for non-degenerate triangles."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = _dot(ab, ap, xp), _dot(ac, ap, xp)
    bp = p - b
    d3, d4 = _dot(ab, bp, xp), _dot(ac, bp, xp)
    cp = p - c
    d5, d6 = _dot(ab, cp, xp), _dot(ac, cp, xp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4

    in_a = (d1 <= 0) & (d2 <= 0)
    in_b = (d3 >= 0) & (d4 <= d3)
    in_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    in_c = (d6 >= 0) & (d5 <= d6)
    in_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    in_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)

    # Ericson returns on the first region hit, so the selection below is applied in reverse
    # priority order.
    denom = va + vb + vc
    v = _safe_div(vb, denom, xp)
    w = _safe_div(vc, denom, xp)
    w_bc = _safe_div(d4 - d3, (d4 - d3) + (d5 - d6), xp)
    v = xp.where(in_bc, 1.0 - w_bc, v)
    w = xp.where(in_bc, w_bc, w)
    w_ac = _safe_div(d2, d2 - d6, xp)
    v = xp.where(in_ac, 0.0, v)
    w = xp.where(in_ac, w_ac, w)
    v = xp.where(in_c, 0.0, v)
    w = xp.where(in_c, 1.0, w)
    v_ab = _safe_div(d1, d1 - d3, xp)
    v = xp.where(in_ab, v_ab, v)
    w = xp.where(in_ab, 0.0, w)
    v = xp.where(in_b, 1.0, v)
    w = xp.where(in_b, 0.0, w)
    v = xp.where(in_a, 0.0, v)
    w = xp.where(in_a, 0.0, w)
    return v, w


def closest_point_on_triangle(p: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """Exact closest point ``[..., 3]`` on triangle ``abc`` to ``p`` (all broadcast ``[..., 3]``).

    Valid for every non-degenerate triangle and for segments written as ``(a, b, b)``
    (``b == c`` exactly); pass other zero-area triangles through :func:`_collapse_degenerate`
    first (``point_triangle_distance`` does).
    """
    v, w = _region_weights(p, a, b, c)
    on_triangle = a + v[..., None] * (b - a) + w[..., None] * (c - a)
    is_segment = jnp.all(b == c, axis=-1, keepdims=True)
    return jnp.where(is_segment, _closest_on_segment(p, a, b), on_triangle)


def _nearest_among(points, tri, tri_ok):
    """Exact nearest triangle among ``tri [C, K, 3, 3]`` (per point) for ``points [C, 3]``.

    Returns ``(dist [C], closest [C, 3], k [C])`` with ``k`` the index into the K axis.
    """
    q = closest_point_on_triangle(points[:, None, :], tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
    d2 = jnp.where(tri_ok, _dot(q - points[:, None, :], q - points[:, None, :]), jnp.inf)
    k = jnp.argmin(d2, axis=1)
    closest = jnp.take_along_axis(q, k[:, None, None], axis=1)[:, 0]
    return jnp.sqrt(jnp.take_along_axis(d2, k[:, None], axis=1)[:, 0]), closest, k


@struct.dataclass
class _Groups:
    """Triangles sorted along a Morton curve and cut into ``NG`` groups of ``G``.

    tri: ``[NG, G, 3, 3]``; ok: ``[NG, G]`` kept (padding is never kept); index: ``[NG, G]``
    original triangle id; centre, radius: ``[NG, 3]``, ``[NG]`` bounding sphere of each group.
    """

    tri: jax.Array
    ok: jax.Array
    index: jax.Array
    centre: jax.Array
    radius: jax.Array


def _spread_bits(x: jax.Array) -> jax.Array:
    """Insert two zero bits between each of the low 10 bits of uint32 ``x`` (Morton code)."""
    x = (x | (x << 16)) & 0x030000FF
    x = (x | (x << 8)) & 0x0300F00F
    x = (x | (x << 4)) & 0x030C30C3
    return (x | (x << 2)) & 0x09249249


def _build_groups(tri_vertices: jax.Array, tri_mask: jax.Array, group_size: int) -> _Groups:
    num_tri = tri_vertices.shape[0]
    centroid = jnp.mean(tri_vertices, axis=1)
    lo, hi = jnp.min(centroid, axis=0), jnp.max(centroid, axis=0)
    cell = jnp.clip((centroid - lo) / jnp.maximum(hi - lo, 1e-12) * 1023, 0, 1023).astype(jnp.uint32)
    code = _spread_bits(cell[:, 0]) | (_spread_bits(cell[:, 1]) << 1) | (_spread_bits(cell[:, 2]) << 2)
    order = jnp.argsort(code)
    num_groups = -(-num_tri // group_size)
    pad = num_groups * group_size - num_tri
    # Padding repeats the last triangle (so bounding spheres stay tight) and is never kept.
    order = jnp.concatenate([order, jnp.broadcast_to(order[-1:], (pad,))])
    ok = jnp.concatenate([tri_mask[order[:num_tri]], jnp.zeros((pad,), bool)])
    tri = tri_vertices[order].reshape(num_groups, group_size, 3, 3)
    corners = tri.reshape(num_groups, group_size * 3, 3)
    centre = 0.5 * (jnp.min(corners, axis=1) + jnp.max(corners, axis=1))
    radius = jnp.max(jnp.linalg.norm(corners - centre[:, None], axis=-1), axis=1)
    return _Groups(tri, ok.reshape(num_groups, group_size), order.reshape(num_groups, group_size),
                   centre, radius)


def _group_query(points, point_ok, groups: _Groups, lower, k):
    """Exact nearest among the ``k`` groups of smallest lower bound, and its certificate."""
    # The barrier keeps XLA from fusing top_k into its consumers, which on CPU turns the
    # TopK custom call into a full sort (10x slower).
    neg_lower, cand = jax.lax.optimization_barrier(jax.lax.top_k(-lower, k + 1))
    next_lower = -neg_lower[:, -1]  # lower bound for every triangle outside the candidates
    cand = cand[:, :-1]
    c, g = points.shape[0], groups.tri.shape[1]
    dist, closest, j = _nearest_among(points, groups.tri[cand].reshape(c, k * g, 3, 3),
                                      groups.ok[cand].reshape(c, k * g))
    index = jnp.take_along_axis(groups.index[cand].reshape(c, k * g), j[:, None], axis=1)[:, 0]
    index = index.astype(jnp.int32)
    return (dist, closest, index), jnp.all((dist <= next_lower) | ~point_ok)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _chunk_query(points, point_ok, groups: _Groups, candidates):
    """Certified search for one chunk of points ``[C, 3]``: ``candidates`` groups, then 8x and
    64x as many, then all of them; each tier runs only if the previous one is not certified."""
    num_groups, group_size = groups.ok.shape
    centre_dist = jnp.sqrt(jnp.sum((points[:, None, :] - groups.centre[None]) ** 2, axis=-1))
    any_kept = jnp.any(groups.ok, axis=1)
    lower = jnp.where(any_kept[None], jnp.maximum(centre_dist - groups.radius[None], 0.0), jnp.inf)

    def brute(_):
        # Sub-chunks bound the [c, T] pair tensors to ~_PAIRS_PER_CHUNK pairs.
        limit = max(1, _PAIRS_PER_CHUNK // (num_groups * group_size))
        sub = _largest_divisor_at_most(points.shape[0], limit)
        tri = groups.tri.reshape(-1, 3, 3)

        def one(p):
            shape = (p.shape[0], tri.shape[0])
            dist, closest, j = _nearest_among(p, jnp.broadcast_to(tri[None], shape + (3, 3)),
                                              jnp.broadcast_to(groups.ok.reshape(1, -1), shape))
            return dist, closest, groups.index.reshape(-1)[j].astype(jnp.int32)

        out = jax.lax.map(one, points.reshape(-1, sub, 3))
        return out[0].reshape(-1), out[1].reshape(-1, 3), out[2].reshape(-1)

    def tier(k, fallback):
        def run(_):
            result, certified = _group_query(points, point_ok, groups, lower, k)
            return jax.lax.cond(certified, lambda _: result, fallback, None)
        return run

    def skip(_):  # nothing to measure in this chunk
        c = points.shape[0]
        return jnp.full((c,), jnp.inf), jnp.full((c, 3), jnp.nan), jnp.full((c,), -1, jnp.int32)

    search = brute
    for k in (candidates * 64, candidates * 8, candidates):
        if k + 1 < num_groups:
            search = tier(k, search)
    return jax.lax.cond(jnp.any(point_ok), search, skip, None)


@partial(jax.jit, static_argnames=("chunk_size", "candidates", "group_size"))
def point_triangle_distance(points: jax.Array, tri_vertices: jax.Array,
                            tri_mask: jax.Array | None = None, point_mask: jax.Array | None = None,
                            *, chunk_size: int | None = None,
                            candidates: int = 8, group_size: int = 16
                            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Exact distance from each point to the nearest (kept) triangle.

    Args:
      points: ``[P, 3]`` query points.
      tri_vertices: ``[T, 3, 3]`` triangle corners (``vertices[triangles]``).
      tri_mask: ``[T]`` bool, triangles to consider (default all). Masking keeps shapes fixed,
        e.g. for cropped meshes.
      point_mask: ``[P]`` bool, points to measure (default all). Skipped points return
        ``inf``, NaN, -1 and cost almost nothing (they never trigger the slow fallback).
      chunk_size: points per chunk (default 256). The brute-force fallback splits a chunk
        further so it holds ~2**20 (point, triangle) pairs at a time (a few hundred MB).
      candidates: groups of ``group_size`` triangles checked exactly per point before the
        certificate (see module doc). Results are exact for any value; they only trade speed.

    Returns:
      ``dist [P]`` Euclidean distance, ``closest [P, 3]`` closest surface point, ``tri_index [P]``
      int32 triangle holding it. If no triangle is kept: ``inf``, NaN and -1. Skipping points
      (``point_mask``) and triangles (``tri_mask``) keeps shapes fixed, so nothing recompiles
      when a crop changes.

    Batch with ``jax.vmap``; under vmap the per-chunk fallback becomes a select, so every tier
    runs (still exact, but at brute-force cost).
    """
    points = jnp.asarray(points, jnp.float32)
    tri_vertices = jnp.asarray(tri_vertices, jnp.float32)
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"point_triangle_distance: points must be [P, 3], got {points.shape}")
    if tri_vertices.ndim != 3 or tri_vertices.shape[1:] != (3, 3):
        raise ValueError("point_triangle_distance: tri_vertices must be [T, 3, 3], "
                         f"got {tri_vertices.shape}")
    num_points, num_tri = points.shape[0], tri_vertices.shape[0]
    if tri_mask is None:
        tri_mask = jnp.ones((num_tri,), bool)
    elif tri_mask.shape != (num_tri,):
        raise ValueError(f"point_triangle_distance: tri_mask must be [{num_tri}], got {tri_mask.shape}")
    tri_mask = tri_mask.astype(bool)
    if point_mask is None:
        point_mask = jnp.ones((num_points,), bool)
    elif point_mask.shape != (num_points,):
        raise ValueError(f"point_triangle_distance: point_mask must be [{num_points}], "
                         f"got {point_mask.shape}")
    point_mask = point_mask.astype(bool)
    if num_points == 0 or num_tri == 0:
        return (jnp.full((num_points,), jnp.inf), jnp.full((num_points, 3), jnp.nan),
                jnp.full((num_points,), -1, jnp.int32))

    groups = _build_groups(_collapse_degenerate(tri_vertices), tri_mask, group_size)
    chunk = min(chunk_size or 256, num_points)
    num_chunks = -(-num_points // chunk)
    pad = num_chunks * chunk - num_points
    padded = jnp.pad(points, ((0, pad), (0, 0)), mode="edge").reshape(num_chunks, chunk, 3)
    padded_ok = jnp.pad(point_mask, (0, pad)).reshape(num_chunks, chunk)
    query = partial(_chunk_query, groups=groups, candidates=candidates)
    dist, closest, index = jax.lax.map(lambda xs: query(*xs), (padded, padded_ok))
    dist, closest, index = (dist.reshape(-1)[:num_points], closest.reshape(-1, 3)[:num_points],
                            index.reshape(-1)[:num_points].astype(jnp.int32))
    missing = ~jnp.any(tri_mask) | ~point_mask
    return (jnp.where(missing, jnp.inf, dist), jnp.where(missing[:, None], jnp.nan, closest),
            jnp.where(missing, -1, index))


# ------------------------------------------------------------------------------------------
# Host-side (numpy, float64) queries: run once per asset build or texture completion.


def _nearest_on_edges(p, a, b, c):
    """Barycentric coordinates ``[N, 3]`` of the nearest point on the three edges (for
    degenerate triangles, which are the union of their edges)."""
    best, best_d = None, None
    for i, (s, e) in enumerate(((a, b), (b, c), (c, a))):
        t = _segment_parameter(p, s, e, np)
        gap = s + t[:, None] * (e - s) - p
        dist = _dot(gap, gap, np)
        bary = np.zeros((len(p), 3))
        bary[:, i], bary[:, (i + 1) % 3] = 1 - t, t
        if best is None:
            best, best_d = bary, dist
        else:
            closer = dist < best_d
            best[closer], best_d[closer] = bary[closer], dist[closer]
    return best


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray,
                               c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact closest point on triangles (a, b, c) to points p (Ericson, RTCD 5.1.5).

    Args: all ``[N, 3]`` (row i: point i against triangle i); computed in float64.
    Returns: closest points ``[N, 3]`` and their barycentric coordinates ``[N, 3]``.
    """
    p, a, b, c = (np.asarray(x, np.float64) for x in (p, a, b, c))
    v, w = _region_weights(p, a, b, c, np)
    bary = np.stack([1.0 - v - w, v, w], 1)
    sliver = _is_sliver(a, b, c, np)
    if sliver.any():
        bary[sliver] = _nearest_on_edges(p[sliver], a[sliver], b[sliver], c[sliver])
    q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return q, bary


def closest_point_on_mesh(verts: np.ndarray, faces: np.ndarray, points: np.ndarray,
                          k: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest point on a triangle mesh to each query point.

    Candidates are first the ``k`` triangles with the nearest centroids; a second pass then
    checks every triangle that could still be closer (centroid within the current distance plus
    that triangle's centroid-to-corner radius), so the result is exact, not a heuristic.

    Args:
      verts: ``[V, 3]``; faces: ``[F, 3]`` int; points: ``[N, 3]``.
    Returns:
      closest ``[N, 3]``, distance ``[N]``, face id ``[N]``, barycentric ``[N, 3]``.
    """
    verts = np.asarray(verts, np.float64)
    points = np.asarray(points, np.float64)
    faces = np.asarray(faces)
    tri = verts[faces]
    centroid = tri.mean(1)
    radii = np.sqrt(((tri - centroid[:, None]) ** 2).sum(-1)).max(1)
    tree = cKDTree(centroid)
    k = min(k, len(faces))
    cdist, cand = tree.query(points, k=k)
    cand = cand.reshape(len(points), k)
    cdist = cdist.reshape(len(points), k)

    def best_of(pidx: np.ndarray, fidx: np.ndarray):
        q, bary = closest_point_on_triangles(points[pidx], *(tri[fidx, i] for i in range(3)))
        return q, np.sqrt(((q - points[pidx]) ** 2).sum(-1)), bary

    pidx = np.repeat(np.arange(len(points)), k)
    q, dist, bary = best_of(pidx, cand.ravel())
    dist = dist.reshape(-1, k)
    j = np.argmin(dist, 1)
    rows = np.arange(len(points))
    best_d = dist[rows, j]
    best_f = cand[rows, j]
    best_q = q.reshape(-1, k, 3)[rows, j]
    best_b = bary.reshape(-1, k, 3)[rows, j]

    # Exactness pass: a triangle within best_d has |p - centroid| <= best_d + its radius. Only
    # points whose k-th centroid is not already beyond best_d + max radius can have one left.
    unsure = np.flatnonzero(cdist[:, -1] <= best_d + radii.max())
    if len(unsure):
        balls = tree.query_ball_point(points[unsure], best_d[unsure] + radii.max() + 1e-9)
        lens = np.fromiter((len(x) for x in balls), int, len(balls))
        extra_p = np.repeat(unsure, lens)
        extra_f = np.concatenate([np.asarray(x, int) for x in balls])
        near = np.sqrt(((points[extra_p] - centroid[extra_f]) ** 2).sum(-1)) \
            <= best_d[extra_p] + radii[extra_f] + 1e-9
        extra_p, extra_f = extra_p[near], extra_f[near]
        q2, d2, b2 = best_of(extra_p, extra_f)
        order = np.lexsort((d2, extra_p))
        first = order[np.r_[True, extra_p[order][1:] != extra_p[order][:-1]]]
        pts_with = extra_p[first]
        better = d2[first] < best_d[pts_with]
        sel, src = pts_with[better], first[better]
        best_d[sel], best_f[sel], best_q[sel], best_b[sel] = d2[src], extra_f[src], q2[src], b2[src]
    return best_q, best_d, best_f, best_b
