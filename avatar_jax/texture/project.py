"""Project a photo into the head model's UV texture (JAX gathers, differentiable, batched).

For every texel of the UV map, its surface point (from the precomputed UV-layout raster,
:func:`uv_raster`) is taken on the fitted mesh (model frame: identity, expression and
per-vertex corrections already applied), moved to the view frame and projected with the
fitted camera; the photo is sampled there bilinearly. For speed the vertices are projected
and the texel's image position, depth and n . v are interpolated from its triangle's corners
(affine inside each triangle: for a ~3k-vertex head at >= 30 cm the perspective error is a
small fraction of a pixel).

Weights (in [0, 1], 0 = not seen):

* **Depth test**: the fitted mesh is rasterised in image space at a reduced resolution
  (``vis_size`` on the long side; visibility does not need the photo's resolution), and a
  texel is visible where its view depth is within a tolerance of the z-buffer. The
  tolerance is ``depth_tol`` mm plus three z-buffer pixel footprints at the texel's depth.
* **Soft occlusion edge**: the depth test is repeated against min-filtered z-buffers
  (square windows of radius k = 1..``soft_radius`` pixels); the weight is the passed
  fraction (times the plain test), so it ramps down to 0 within ``soft_radius`` z-buffer
  pixels of an occluder (nose side, ears, jaw line) or of the silhouette (where photo pixels
  mix with the background) instead of switching abruptly.
* **Grazing angle**: with ``c = n . v`` (unit normal, unit direction to the camera), the
  weight is ``smoothstep((c - c0) / (c1 - c0))`` with ``(c0, c1) = grazing``; texels seen
  at grazing angles are smeared in the photo and get little weight.

Texture and weight are differentiable w.r.t. the image, the vertices and the camera
(through the bilinear sampling and the n . v ramp; the visibility tests are discrete).
``jax.vmap(project_texture, (0, 0, 0, None, None))`` batches over photos/meshes/cameras.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from avatar_jax.geometry.camera import Camera, project_view, transform
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.model.head import HeadModel
from avatar_jax.geometry.uv import uv_to_texel
from avatar_jax.render.raster import default_max_chunks, rasterize, render_uv_layout
from avatar_jax.render.sample import bilinear_sample
from avatar_jax._disk_cache import cache_key, cached_arrays

DEFAULT_TEXTURE_SIZE = 2048


@struct.dataclass
class UVRaster:
    """The model's UV layout rasterised at ``S x S`` texels (row 0 = v 1).

    Attributes:
      tri_id: ``[S, S]`` int32 triangle of each texel (-1 = none; gutter texels included).
      covered: ``[S, S]`` bool, ``tri_id >= 0``.
      inside: ``[S, S]`` bool, texel centre inside a UV chart (``covered`` minus the gutter).
      texel_to_bary: ``[F, 3, 3]`` per-triangle affine map: barycentrics of texel (col, row)
        in triangle f are ``texel_to_bary[f] @ (col, row, 1)`` (zero for degenerate UVs).
    """

    tri_id: jax.Array
    covered: jax.Array
    inside: jax.Array
    texel_to_bary: jax.Array

    @property
    def size(self) -> int:
        return self.tri_id.shape[0]

    def bary(self) -> jax.Array:
        """``[S, S, 3]`` barycentrics of every texel centre in its triangle (0 where none)."""
        s = self.size
        rows, cols = jnp.meshgrid(jnp.arange(s), jnp.arange(s), indexing="ij")
        pos = jnp.stack([cols, rows, jnp.ones_like(rows)], -1).astype(jnp.float32)
        b = jnp.einsum("hwij,hwj->hwi", self.texel_to_bary[jnp.maximum(self.tri_id, 0)], pos)
        return jnp.where(self.covered[..., None], b, 0.0)


def _layout_key(model: HeadModel, size: int, gutter: int) -> tuple:
    digest = hashlib.sha1()
    for arr in (model.uvs, model.triangle_uvs, model.triangles):
        digest.update(np.ascontiguousarray(np.asarray(arr)).tobytes())
    return digest.hexdigest(), int(size), int(gutter)


_UV_CACHE: dict[tuple, UVRaster] = {}


def _texel_to_bary(uvs: np.ndarray, triangle_uvs: np.ndarray, size: int) -> np.ndarray:
    p = uv_to_texel(np.asarray(uvs, np.float64), size)[np.asarray(triangle_uvs)]  # [F, 3, 2]
    mat = np.concatenate([np.swapaxes(p, 1, 2), np.ones((len(p), 1, 3))], 1)  # columns
    det = np.linalg.det(mat)
    ok = np.abs(det) > 1e-9
    inv = np.zeros_like(mat)
    inv[ok] = np.linalg.inv(mat[ok])
    return inv.astype(np.float32)


def uv_raster(model: HeadModel, size: int = DEFAULT_TEXTURE_SIZE, gutter: int = 4) -> UVRaster:
    """UV-layout raster of ``model`` at ``size``² texels, cached in the process and on disk.

    ``gutter`` texels around each chart get the triangle of their nearest chart texel (its
    affine map extrapolates the surface point), so the exported texture does not bleed
    background into the UV seams under filtering / mip-mapping.
    """
    key = _layout_key(model, size, gutter)
    if key not in _UV_CACHE:
        tables = cached_arrays("uv_raster", cache_key(*key),
                               lambda: _uv_tables(model, size, gutter))
        _UV_CACHE[key] = UVRaster(
            tri_id=jnp.asarray(tables["tri_id"], jnp.int32),
            covered=jnp.asarray(tables["tri_id"] >= 0), inside=jnp.asarray(tables["inside"]),
            texel_to_bary=jnp.asarray(tables["texel_to_bary"]))
    return _UV_CACHE[key]


def _uv_tables(model: HeadModel, size: int, gutter: int) -> dict[str, np.ndarray]:
    tri_id, _ = render_uv_layout(model.uvs, model.triangle_uvs, model.triangles, size)
    inside = tri_id >= 0
    if gutter > 0:
        tri_id = _nearest_fill(tri_id, gutter)
    return {"tri_id": tri_id.astype(np.int32), "inside": inside,
            "texel_to_bary": _texel_to_bary(model.uvs, model.triangle_uvs, size)}


def _nearest_fill(tri_id: np.ndarray, radius: int) -> np.ndarray:
    """Give texels within ``radius`` of a chart the id of their nearest chart texel."""
    from scipy import ndimage

    outside = tri_id < 0
    dist, (ri, ci) = ndimage.distance_transform_edt(outside, return_indices=True)
    return np.where(outside & (dist <= radius), tri_id[ri, ci], tri_id)


def smoothstep(x: jax.Array) -> jax.Array:
    """Hermite ramp ``3x² - 2x³`` of ``x`` clipped to [0, 1] (soft weights, same shape)."""
    x = jnp.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _min_filters(zbuf: jax.Array, radius: int) -> jax.Array:
    """``[H, W, radius + 1]``: zbuf, then its min over (2k+1)² windows, k = 1..radius.

    Windows that touch the background (silhouette) give -inf, so texels whose photo pixels
    mix with the background fail those tests too.
    """
    z = jnp.where(jnp.isfinite(zbuf), zbuf, -jnp.inf)
    layers = [zbuf]
    for _ in range(radius):  # static, tiny; each step widens the window by one pixel
        z = jax.lax.reduce_window(z, jnp.inf, jax.lax.min, (3, 3), (1, 1), "SAME")
        layers.append(z)
    return jnp.stack(layers, -1)


@functools.partial(jax.jit, static_argnames=("vis_size", "soft_radius"))
def project_texture(image: jax.Array, verts_model: jax.Array, camera: Camera, model: HeadModel,
                    uv: UVRaster, vis_size: int = 512, depth_tol: float = 4.0,
                    grazing: tuple[float, float] = (0.1, 0.4), soft_radius: int = 3):
    """Photo -> UV texture.

    Args:
      image: ``[H, W, C]`` float photo (any range; returned texture has the same).
      verts_model: ``[V, 3]`` fitted mesh in the model frame (mm).
      camera: fitted :class:`~avatar_jax.geometry.camera.Camera` for this photo (unbatched).
      model: the head model (triangles).
      uv: :func:`uv_raster` of the model at the wanted texture size S.
      vis_size: long side of the visibility z-buffer, pixels (static).
      depth_tol: depth-test tolerance, mm (plus three z-buffer pixel footprints).
      grazing: ``(c0, c1)`` of the n . v ramp.
      soft_radius: width of the soft occlusion ramp, z-buffer pixels (static int).

    Returns:
      ``texture`` ``[S, S, C]`` (0 where the weight is 0) and ``weight`` ``[S, S]`` in [0, 1].
    """
    texel_px, weight = project_geometry(image.shape, verts_model, camera, model, uv, vis_size,
                                        depth_tol, grazing, soft_radius)
    color = bilinear_sample(image, texel_px)
    texture = jnp.where(weight[..., None] > 0, color, 0.0)
    return texture, weight


def project_geometry(image_shape: tuple, verts_model: jax.Array, camera: Camera,
                     model: HeadModel, uv: UVRaster, vis_size: int = 512, depth_tol: float = 4.0,
                     grazing: tuple[float, float] = (0.1, 0.4), soft_radius: int = 3,
                     depth_slack: jax.Array | None = None):
    """Where each texel lands in the photo, and how well it is seen (traceable, unjitted).

    Same arguments as :func:`project_texture` except ``image_shape`` ``(H, W, ...)`` instead of
    the image, plus ``depth_slack``: optional ``[V]`` extra depth tolerance (mm) per vertex,
    interpolated over the texels. Hole caps sit a few mm behind their own eyelids and lips,
    which would otherwise count as occluders wherever the opening is narrow. Returns ``texel_px`` ``[S, S, 2]`` (x right, y down, pixels) and ``weight``
    ``[S, S]`` in [0, 1].
    """
    if len(image_shape) != 3:
        raise ValueError(f"image must have shape [H, W, C], got {tuple(image_shape)}")
    if verts_model.shape != model.neutral.shape:
        raise ValueError(f"verts_model must have shape {tuple(model.neutral.shape)}, "
                         f"got {tuple(verts_model.shape)}")
    h, w = image_shape[:2]
    scale = min(1.0, vis_size / max(h, w))
    vis_h, vis_w = max(1, round(h * scale)), max(1, round(w * scale))

    view = transform(camera, verts_model)  # [V, 3]
    px = project_view(camera, view)
    depth_v = -view[:, 2]
    to_cam = -view / jnp.maximum(jnp.linalg.norm(view, axis=-1, keepdims=True), 1e-12)
    cos_v = jnp.sum(vertex_normals(view, model.triangles) * to_cam, -1)

    # Z-buffer of the fitted mesh at reduced resolution (pixel centres stay at integers), and
    # its min-filters over growing disks: a texel within k pixels of a nearer occluder fails
    # the k-th test, which gives the soft ramp with one gather per texel.
    vis_px = jnp.concatenate([(px + 0.5) * scale - 0.5, depth_v[:, None]], -1)
    _, _, zbuf = rasterize(jax.lax.stop_gradient(vis_px), model.triangles, vis_h, vis_w,
                           max_chunks=default_max_chunks(vis_h, vis_w, model.triangles.shape[0]))
    zstack = _min_filters(zbuf, soft_radius)  # [vis_h, vis_w, K + 1]

    # Per texel: image position, depth and n.v interpolated affinely inside its triangle
    # (for triangles a few mm wide at >= 30 cm the perspective error is far below a pixel).
    slack = jnp.zeros_like(depth_v) if depth_slack is None else jnp.asarray(depth_slack, jnp.float32)
    per_vertex = jnp.concatenate([px, depth_v[:, None], cos_v[:, None], slack[:, None]], -1)
    # attrs = A_f @ (col, row, 1) with A_f = corner attrs^T @ texel_to_bary[f]: one row gather
    # per texel instead of reading barycentrics and three corners.
    affine = jnp.einsum("fkd,fkj->fdj", per_vertex[model.triangles], uv.texel_to_bary)
    s = uv.size
    rows, cols = jnp.meshgrid(jnp.arange(s, dtype=jnp.float32),
                              jnp.arange(s, dtype=jnp.float32), indexing="ij")
    a = affine.reshape(-1, 15)[jnp.maximum(uv.tri_id, 0)].reshape(s, s, 5, 3)
    attrs = a[..., 0] * cols[..., None] + a[..., 1] * rows[..., None] + a[..., 2]  # [S, S, 5]
    texel_px, depth, cos_view = attrs[..., :2], attrs[..., 2], attrs[..., 3]

    q = jax.lax.stop_gradient((texel_px + 0.5) * scale - 0.5)
    qi = jnp.round(q).astype(jnp.int32)
    in_vis = (qi[..., 0] >= 0) & (qi[..., 0] < vis_w) & (qi[..., 1] >= 0) & (qi[..., 1] < vis_h)
    zflat = zstack.reshape(vis_h * vis_w, -1)
    z = zflat[jnp.clip(qi[..., 1], 0, vis_h - 1) * vis_w + jnp.clip(qi[..., 0], 0, vis_w - 1)]
    d_sg = jax.lax.stop_gradient(depth)
    footprint = d_sg / (jax.lax.stop_gradient(camera.focal_px) * scale)  # mm per z-buffer px
    tol = depth_tol + 3.0 * footprint * (1.0 + soft_radius) + jax.lax.stop_gradient(attrs[..., 4])
    passed = (d_sg[..., None] <= z + tol[..., None]) | ~in_vis[..., None]
    w_vis = passed[..., 0] * jnp.mean(passed[..., 1:].astype(jnp.float32), -1)

    in_image = ((texel_px[..., 0] >= 0) & (texel_px[..., 0] <= w - 1) &
                (texel_px[..., 1] >= 0) & (texel_px[..., 1] <= h - 1) & (depth > 0))
    c0, c1 = grazing
    w_angle = smoothstep((cos_view - c0) / (c1 - c0))
    weight = jnp.where(uv.covered & in_image, w_vis * w_angle, 0.0)
    return texel_px, weight
