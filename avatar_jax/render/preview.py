"""A small shaded / textured preview renderer (docs, overlays, synthetic round-trip tests)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from avatar_jax.geometry.camera import Camera, project_view, transform
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.geometry.uv import uv_to_texel
from avatar_jax.render.raster import chunk_demand, default_max_chunks, rasterize
from avatar_jax.render.sample import bilinear_sample

DEFAULT_LIGHT = (0.3, 0.4, 1.0)


@functools.partial(jax.jit, static_argnames=("image_size", "max_chunks"))
def _render(verts, triangles, camera, image_size, texture, uvs, triangle_uvs, light,
            background, ambient, max_chunks):
    h, w = image_size
    view = transform(camera, verts)
    px = project_view(camera, view)
    verts_px = jnp.concatenate([px, -view[:, 2:3]], -1)
    tri_id, bary, _ = rasterize(verts_px, triangles, h, w, max_chunks=max_chunks)
    hit = tri_id >= 0
    ids = jnp.maximum(tri_id, 0)
    if texture is None:
        albedo = jnp.full((h, w, 3), 0.75)
    else:
        uv = jnp.einsum("hwk,hwkd->hwd", bary, uvs[triangle_uvs[ids]])
        albedo = bilinear_sample(texture, uv_to_texel(uv, texture.shape[0]))
    if light is None:
        color = albedo
    else:
        normals = vertex_normals(view, triangles)
        n = jnp.einsum("hwk,hwkd->hwd", bary, normals[triangles[ids]])
        n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        ldir = light / jnp.linalg.norm(light)
        # Back faces (seen through the open eyes/mouth) get the ambient term only.
        diffuse = jnp.maximum(jnp.sum(n * ldir, -1, keepdims=True), 0.0)
        color = albedo * (ambient + (1.0 - ambient) * diffuse)
    return jnp.where(hit[..., None], color, background)


def render_mesh(verts: jax.Array, triangles: jax.Array, camera: Camera,
                image_size: tuple[int, int], texture: jax.Array | None = None,
                uvs: jax.Array | None = None, triangle_uvs: jax.Array | None = None,
                light: tuple[float, float, float] | None = DEFAULT_LIGHT,
                background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                ambient: float = 0.35, max_chunks: int | None = None) -> jax.Array:
    """Render ``[H, W, 3]`` floats in [0, 1] of a mesh seen by ``camera``.

    Args:
      verts: ``[V, 3]`` model frame (mm). triangles: ``[F, 3]``.
      camera: :class:`avatar_jax.geometry.camera.Camera` (unbatched).
      image_size: ``(H, W)``.
      texture: optional ``[S, S, C]`` texture (row 0 = v 1); needs ``uvs`` ``[U, 2]`` and
        ``triangle_uvs`` ``[F, 3]``. Without texture the albedo is a light grey.
      light: direction towards the light in view space (x right, y up, z towards the
        viewer); Lambert shading with ``ambient``; None = unlit (pure albedo).
      background: colour of uncovered pixels.
      max_chunks: the rasteriser's tile budget (static). None: :func:`default_max_chunks`, or the
        power of two above the mesh's measured :func:`chunk_demand` where a close-up needs more
        (one host sync), so no triangle is dropped.

    Hard (non-anti-aliased) edges; the texture is sampled bilinearly without mip-mapping.
    """
    if texture is not None and (uvs is None or triangle_uvs is None):
        raise ValueError("render_mesh: texture needs uvs and triangle_uvs")
    h, w = int(image_size[0]), int(image_size[1])
    tex = None if texture is None else jnp.asarray(texture, jnp.float32)
    light_arr = None if light is None else jnp.asarray(light, jnp.float32)
    triangles = jnp.asarray(triangles, jnp.int32)
    verts = jnp.asarray(verts, jnp.float32)
    return _render(verts, triangles, camera, (h, w), tex,
                   None if uvs is None else jnp.asarray(uvs, jnp.float32),
                   None if triangle_uvs is None else jnp.asarray(triangle_uvs, jnp.int32),
                   light_arr, jnp.asarray(background, jnp.float32), ambient,
                   max_chunks or _tile_budget(verts, triangles, camera, h, w))


def _tile_budget(verts, triangles, camera, h: int, w: int) -> int:
    """:func:`default_max_chunks`, or a power of two above the real demand where that is more."""
    budget = default_max_chunks(h, w, triangles.shape[0])
    view = transform(camera, verts)
    demand = int(chunk_demand(jnp.concatenate([project_view(camera, view), -view[:, 2:3]], -1), triangles, h, w))
    return budget if demand <= budget else 1 << (demand - 1).bit_length()
