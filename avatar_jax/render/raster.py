"""A z-buffer triangle rasteriser in JAX, plus the UV-layout rasteriser.

Pixel convention (shared with :mod:`avatar_jax.geometry.camera`): pixel ``(row i, col j)`` has its
centre at image coordinates ``(u, v) = (j, i)``, x right, y down. A pixel is covered by a
triangle when its centre lies inside or on the triangle (inclusive edges, so shared edges
never leave holes; the depth test then picks one of the two triangles).

How it works (all static shapes, one ``jit`` per image size and budget):

1. Each triangle's pixel bounding box is split into ``chunk x chunk`` pixel tiles; the tiles
   of all triangles are laid out back to back (cumsum of per-triangle tile counts) in a
   fixed budget of ``max_chunks`` tiles, so work is spent where the pixels are, whatever
   the triangle sizes.
2. Every candidate pixel of every tile gets its barycentrics and depth; covered candidates
   are scattered into the depth buffer with ``.at[].min`` and then, among those that equal
   the winning depth, the smallest triangle id is scattered the same way (exact, no
   depth/id bit packing).
3. Barycentrics and depth of the winning triangle are recomputed per pixel from ``tri_id``
   with plain gathers, so they are differentiable w.r.t. ``verts_px`` (the coverage itself,
   being discrete, is not; there is no anti-aliasing).

If the triangles need more tiles than the budget, the tiles past the budget are dropped
(pixels may be missing); :func:`chunk_demand` returns the exact number of tiles needed, so a
caller can size ``max_chunks``; with ``max_chunks=None`` :func:`rasterize` does exactly that
(outside ``jit``). :func:`default_max_chunks` (twice the image area plus one tile per
triangle) is a static budget that is plenty for a mesh seen from outside.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.geometry.uv import uv_to_texel

_EPS_AREA = 1e-12


def _check_mesh(verts: jax.Array, triangles: jax.Array, dim: int, name: str = "verts_px"):
    if verts.ndim != 2 or verts.shape[1] != dim:
        raise ValueError(f"{name} must have shape [V, {dim}], got {tuple(verts.shape)}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must have shape [F, 3], got {tuple(triangles.shape)}")


def default_max_chunks(height: int, width: int, num_triangles: int, chunk: int = 4) -> int:
    """Tile budget: twice the image area in ``chunk x chunk`` tiles plus one tile per triangle."""
    return int(np.ceil(2.0 * height * width / (chunk * chunk))) + int(num_triangles)


def _triangle_setup(tri: jax.Array, height: int, width: int, cull_backfaces: bool,
                    perspective_correct: bool):
    """Per-triangle pixel bbox and validity. ``tri`` ``[F, 3, 3]`` -> ints ``[F]`` each."""
    p = tri[..., :2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    valid = jnp.abs(area) > _EPS_AREA
    if cull_backfaces:
        # Model-frame CCW triangles seen from the front are clockwise in (x right, y down)
        # pixels, i.e. negative signed area.
        valid &= area < 0
    if perspective_correct:
        valid &= jnp.all(tri[..., 2] > 0, axis=-1)
    valid &= jnp.all(jnp.isfinite(tri), axis=(-1, -2))
    lo = jnp.ceil(jnp.min(p, axis=1))
    hi = jnp.floor(jnp.max(p, axis=1))
    lo = jnp.maximum(lo, 0.0)
    hi = jnp.minimum(hi, jnp.array([width - 1.0, height - 1.0]))
    # Clip in float before casting so huge off-screen coordinates cannot overflow int32.
    lo = jnp.clip(lo, -1.0, 1e7).astype(jnp.int32)
    hi = jnp.clip(hi, -2.0, 1e7).astype(jnp.int32)
    size = hi - lo + 1
    valid &= jnp.all(size > 0, axis=-1)
    return lo, size, valid


def _barycentric(tri: jax.Array, px: jax.Array, perspective_correct: bool):
    """Screen-space barycentrics of points ``px`` ``[..., 2]`` in ``tri`` ``[..., 3, 3]``.

    Returns (bary ``[..., 3]`` screen-space, bary_attr ``[..., 3]`` for interpolating
    attributes, depth ``[...]``).
    """
    p0, p1, p2 = tri[..., 0, :2], tri[..., 1, :2], tri[..., 2, :2]

    def cross(a, b, c):  # signed area of (a, b, c), times 2
        return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - \
               (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])

    def edge(a, b):  # cross(px, a, b), evaluated the same way whichever way round the edge is
        swap = (a[..., 0] > b[..., 0]) | ((a[..., 0] == b[..., 0]) & (a[..., 1] > b[..., 1]))
        lo, hi = jnp.where(swap[..., None], b, a), jnp.where(swap[..., None], a, b)
        return jnp.where(swap, -1.0, 1.0) * cross(px, lo, hi)

    area = cross(p0, p1, p2)
    safe_area = jnp.where(jnp.abs(area) > _EPS_AREA, area, 1.0)
    # Two triangles sharing an edge get the same edge function up to its sign, bit for bit, so a
    # pixel centre on the edge is never missed by both (watertight).
    b = jnp.stack([edge(p1, p2), edge(p2, p0), edge(p0, p1)], -1)
    b = b / safe_area[..., None]
    z = tri[..., 2]
    if perspective_correct:
        w = b / jnp.where(z > 0, z, 1.0)
        inv_depth = jnp.sum(w, -1)
        safe_inv = jnp.where(jnp.abs(inv_depth) > 1e-30, inv_depth, 1.0)
        return b, w / safe_inv[..., None], 1.0 / safe_inv
    return b, b, jnp.sum(b * z, -1)


@functools.partial(jax.jit, static_argnames=("height", "width", "cull_backfaces",
                                             "perspective_correct", "chunk"))
def chunk_demand(verts_px: jax.Array, triangles: jax.Array, height: int, width: int,
                 cull_backfaces: bool = False, perspective_correct: bool = True,
                 chunk: int = 4) -> jax.Array:
    """Number of ``chunk x chunk`` tiles :func:`rasterize` needs for this mesh (int32 scalar)."""
    tri = verts_px[triangles]
    _, size, valid = _triangle_setup(tri, height, width, cull_backfaces, perspective_correct)
    tiles = ((size + chunk - 1) // chunk).prod(-1)
    return jnp.sum(jnp.where(valid, tiles, 0))


@functools.partial(jax.jit, static_argnames=("height", "width", "cull_backfaces",
                                             "perspective_correct", "max_chunks", "chunk"))
def _rasterize(verts_px, triangles, height, width, cull_backfaces, perspective_correct,
               max_chunks, chunk):
    num_tri = triangles.shape[0]
    tri = verts_px[triangles]  # [F, 3, 3]
    lo, size, valid = _triangle_setup(tri, height, width, cull_backfaces, perspective_correct)
    tiles_xy = (size + chunk - 1) // chunk  # [F, 2]
    tiles = jnp.where(valid, tiles_xy[:, 0] * tiles_xy[:, 1], 0)
    ends = jnp.cumsum(tiles)
    starts = ends - tiles

    # Tile k belongs to the triangle whose [start, end) range contains k.
    k = jnp.arange(max_chunks, dtype=jnp.int32)
    owner = jnp.minimum(jnp.searchsorted(ends, k, side="right"), num_tri - 1)
    local = k - starts[owner]
    used = k < ends[-1]
    tx = tiles_xy[owner, 0]
    tile_x = lo[owner, 0] + (local % jnp.maximum(tx, 1)) * chunk
    tile_y = lo[owner, 1] + (local // jnp.maximum(tx, 1)) * chunk

    offs = jnp.arange(chunk, dtype=jnp.int32)
    px = jnp.broadcast_to(tile_x[:, None, None] + offs[None, None, :], (max_chunks, chunk, chunk))
    py = jnp.broadcast_to(tile_y[:, None, None] + offs[None, :, None], (max_chunks, chunk, chunk))
    hi = lo[owner] + size[owner] - 1
    in_box = (px <= hi[:, 0, None, None]) & (py <= hi[:, 1, None, None]) & used[:, None, None]

    pts = jnp.stack([px, py], -1).astype(verts_px.dtype)
    b, _, z = _barycentric(tri[owner][:, None, None], pts, perspective_correct)
    covered = in_box & jnp.all(b >= 0, axis=-1)
    flat = jnp.where(covered, py * width + px, height * width)  # out of range -> dropped
    z = jnp.where(covered, z, jnp.inf)

    zbuf = jnp.full((height * width,), jnp.inf, verts_px.dtype)
    zbuf = zbuf.at[flat.ravel()].min(z.ravel(), mode="drop")
    winner = covered & (z <= zbuf.at[flat].get(mode="fill", fill_value=-jnp.inf))
    cand = jnp.where(winner, owner[:, None, None], num_tri)
    ids = jnp.full((height * width,), num_tri, jnp.int32)
    ids = ids.at[jnp.where(winner, flat, height * width).ravel()].min(cand.ravel(), mode="drop")
    tri_id = jnp.where(ids >= num_tri, -1, ids).reshape(height, width)
    return _shade_ids(verts_px, triangles, tri_id, perspective_correct)


def _shade_ids(verts_px, triangles, tri_id, perspective_correct):
    """Differentiable bary ``[H, W, 3]`` and depth ``[H, W]`` of the given triangle ids."""
    height, width = tri_id.shape
    hit = tri_id >= 0
    tri = verts_px[triangles[jnp.maximum(tri_id, 0)]]  # [H, W, 3, 3]
    jj, ii = jnp.meshgrid(jnp.arange(width), jnp.arange(height))
    pts = jnp.stack([jj, ii], -1).astype(verts_px.dtype)
    _, bary, depth = _barycentric(tri, pts, perspective_correct)
    bary = jnp.where(hit[..., None], bary, 0.0)
    depth = jnp.where(hit, depth, jnp.inf)
    return tri_id, bary, depth


def rasterize(verts_px: jax.Array, triangles: jax.Array, height: int, width: int, *,
              cull_backfaces: bool = False, perspective_correct: bool = True,
              max_chunks: int | None = None, chunk: int = 4):
    """Z-buffer rasterisation of a triangle mesh given in pixel coordinates.

    Args:
      verts_px: ``[V, 3]`` float: ``(u, v, depth)``, u right and v down in pixels (pixel
        centres at integers), depth = distance along the view axis (``-X_view.z``), smaller
        is nearer. With ``perspective_correct`` depth must be > 0 (triangles with a corner at
        or behind the camera are skipped).
      triangles: ``[F, 3]`` int vertex ids.
      height, width: image size (static).
      cull_backfaces: skip triangles with non-negative signed pixel area (model-frame CCW
        triangles facing away from the camera).
      perspective_correct: treat ``depth`` as view depth of a perspective camera: depth is
        interpolated as ``1/z`` and ``bary`` are perspective-correct (what attributes such as
        UVs need). False: affine interpolation (orthographic / UV-space rasterisation).
      max_chunks: static tile budget. None (default): measured with :func:`chunk_demand`
        (one host sync) and rounded up to a power of two, so the result is always complete.
        Pass an int (e.g. :func:`default_max_chunks`) to call this inside ``jit``.
      chunk: tile side in pixels.

    Returns:
      ``tri_id`` ``[H, W]`` int32 (-1 = background), ``bary`` ``[H, W, 3]`` (0 on
      background), ``depth`` ``[H, W]`` (inf on background). ``bary``/``depth`` are
      differentiable w.r.t. ``verts_px``.
    """
    verts_px = jnp.asarray(verts_px)
    triangles = jnp.asarray(triangles, jnp.int32)
    _check_mesh(verts_px, triangles, 3)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    if max_chunks is None:
        # One cheap query + host sync, then a power-of-two bucket so recompiles stay rare.
        demand = int(chunk_demand(verts_px, triangles, int(height), int(width),
                                  bool(cull_backfaces), bool(perspective_correct), int(chunk)))
        max_chunks = max(1024, 1 << int(np.ceil(np.log2(max(demand, 1)))))
    return _rasterize(verts_px, triangles, int(height), int(width), bool(cull_backfaces),
                      bool(perspective_correct), int(max_chunks), int(chunk))


# --------------------------------------------------------------------------------------------
# UV layout


def render_uv_layout(uvs, triangle_uvs, triangles, size: int, gutter: int = 0):
    """Rasterise the UV layout: which triangle, and where in it, each texel lies.

    Args:
      uvs: ``[U, 2]`` in [0, 1], v up. triangle_uvs: ``[F, 3]`` index into ``uvs``.
      triangles: ``[F, 3]`` vertex ids (only checked for consistency; the barycentrics refer
        to the corners in this order, so ``sample_surface(verts, triangles[tri_id], bary)`` is
        the texel's surface point).
      size: texture side S.
      gutter: also assign texels up to this many texels outside the charts to their nearest
        chart texel (same triangle, barycentrics extrapolated linearly), so that texture
        filtering and mip-mapping in a viewer do not bleed background into the seams.

    Returns:
      ``tri_id`` ``[S, S]`` int32 (-1 = no triangle), ``bary`` ``[S, S, 3]`` float32, numpy.
    """
    uvs = np.asarray(uvs, np.float32)
    triangle_uvs = np.asarray(triangle_uvs, np.int32)
    triangles = np.asarray(triangles)
    _check_mesh(uvs, triangle_uvs, 2, "uvs")
    if triangles.shape != triangle_uvs.shape:
        raise ValueError(f"triangles {triangles.shape} and triangle_uvs {triangle_uvs.shape} "
                         "must have the same shape [F, 3]")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    pts = np.concatenate([uv_to_texel(uvs, size), np.ones((len(uvs), 1))], 1).astype(np.float32)
    tri_id, bary, _ = rasterize(pts, triangle_uvs, size, size, perspective_correct=False)
    tri_id, bary = np.asarray(tri_id), np.asarray(bary)
    if gutter > 0:
        tri_id, bary = _extend_gutter(pts, triangle_uvs, tri_id, bary, gutter)
    return tri_id, bary.astype(np.float32)


def _extend_gutter(pts, triangle_uvs, tri_id, bary, gutter):
    from scipy import ndimage

    outside = tri_id < 0
    dist, (ri, ci) = ndimage.distance_transform_edt(outside, return_indices=True)
    fill = outside & (dist <= gutter)
    rows, cols = np.nonzero(fill)
    src = tri_id[ri[rows, cols], ci[rows, cols]]
    tri = pts[triangle_uvs[src]][..., :2].astype(np.float64)  # [N, 3, 2]
    p = np.stack([cols, rows], -1).astype(np.float64)
    t = np.concatenate([tri, np.ones(tri.shape[:2] + (1,))], -1)  # solve [x y 1] system
    rhs = np.concatenate([p, np.ones((len(p), 1))], -1)
    b = np.linalg.solve(np.swapaxes(t, 1, 2), rhs[..., None])[..., 0]
    tri_id = tri_id.copy()
    bary = bary.copy()
    tri_id[rows, cols] = src
    bary[rows, cols] = b
    return tri_id, bary
