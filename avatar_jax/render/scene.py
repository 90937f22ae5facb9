"""Batched renderer of textured heads: perspective camera, spherical-harmonics light with a
Blinn-Phong highlight, supersampled anti-aliasing, composited over background images.

    scenes = Scenes(verts, camera, textures, lighting, backgrounds)   # leading dim B everywhere
    out = render_scenes(mesh, scenes, RenderSettings(image_size=(256, 256)))
    out.images   # [B, H, W, 3] uint8;  out.coverage  # [B, H, W] fraction of the pixel on the head

One ``jit`` of a ``vmap`` per (batch size, image size, texture size, settings): a caller that keeps
those fixed (pad the last batch) never recompiles.

Conventions: :mod:`avatar_jax.geometry.camera` (OpenGL view space, pixel centres at integers).

How a frame is made:

1. The mesh is rasterised at ``supersample`` times the output resolution by a z-buffer
   rasteriser (:func:`rasterize_ids`). Unlike :func:`avatar_jax.render.raster.rasterize` it
   resolves visibility with a single ``scatter-min`` of a packed ``(depth, triangle id)``
   int32 key (scatters dominate the cost on CPU): depth is quantised to the remaining bits
   over the frame's own near-far range, so two surfaces closer than ``range / 2**bits`` may
   resolve either way (far below a pixel's footprint for a head).
2. Samples are shaded: albedo from the UV texture (bilinear), diffuse irradiance from
   9 second-order SH coefficients per colour channel evaluated at the interpolated view-space
   normal, plus a Blinn-Phong specular term for one light direction.
3. Samples are box-filtered to output pixels (sample centres are placed so the filtered pixel
   centres are exactly the output camera's), and the background is blended in by the
   fraction of samples the head does not cover. By default only one covered sample per pixel
   is shaded (``RenderSettings.shade_every_sample``): shading, not rasterising, is the cost.

Back faces are culled (the head is seen from outside; the capped mesh of
:func:`avatar_jax.texture.caps.capped_model` has no holes to see through but the neck).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from avatar_jax.geometry.camera import Camera, project_view, transform
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.geometry.uv import uv_to_texel
from avatar_jax.model.head import HeadModel
from avatar_jax.render.sample import bilinear_sample

# Real SH basis constants (bands 0..2) in the order (0,0), (1,-1), (1,0), (1,1), (2,-2),
# (2,-1), (2,0), (2,1), (2,2) with (x, y, z) the unit normal.
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = 1.0925484305920792
_SH_C3 = 0.31539156525252005
_SH_C4 = 0.5462742152960396
# Irradiance convolution of a clamped cosine per band (Ramamoorthi & Hanrahan 2001), divided by
# pi so that a white Lambertian surface under radiance L reflects exactly the irradiance / pi.
SH_BAND_FACTORS = (1.0, 2.0 / 3.0, 1.0 / 4.0)
NUM_SH = 9


@struct.dataclass
class Lighting:
    """Per-image light. Leading dim ``[B]``.

    Attributes:
      sh: ``[B, 9, 3]`` irradiance SH coefficients per RGB channel in view space: the diffuse
        shading of a unit normal ``n`` is ``sum_k sh[k] * Y_k(n)`` (see :func:`sh_basis`).
      specular: ``[B]`` Blinn-Phong highlight strength (0 = none), added to the colour.
      shininess: ``[B]`` Blinn-Phong exponent.
      light_dir: ``[B, 3]`` view-space direction towards the highlight's light (need not be unit).
    """

    sh: jax.Array
    specular: jax.Array
    shininess: jax.Array
    light_dir: jax.Array


@struct.dataclass
class Scenes:
    """B heads to render. Leading dim ``[B]`` on every leaf.

    Attributes:
      verts: ``[B, V, 3]`` mesh vertices, model frame (mm), on the mesh passed to
        :func:`render_scenes`.
      camera: :class:`~avatar_jax.geometry.camera.Camera` with ``[B, ...]`` leaves, for the
        output image size.
      textures: ``[B, S, S, 3]`` uint8 (or float in [0, 1]) albedo on the mesh's UV layout.
      lighting: :class:`Lighting`.
      backgrounds: ``[B, H, W, 3]`` uint8 (or float in [0, 1]).
    """

    verts: jax.Array
    camera: Camera
    textures: jax.Array
    lighting: Lighting
    backgrounds: jax.Array


@struct.dataclass
class RenderOutput:
    """``images`` ``[B, H, W, 3]`` uint8; ``coverage`` ``[B, H, W]`` float32 in [0, 1] (share of
    each pixel's samples on the head)."""

    images: jax.Array
    coverage: jax.Array


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """Static render settings (one compilation per value).

    Attributes:
      image_size: output ``(H, W)``.
      supersample: samples per pixel per axis (box filter of ``supersample**2`` samples).
      chunk: rasteriser tile side (fine pixels).
      max_chunks: tile budget per image; None = :func:`default_tile_budget`. Tiles past the
        budget are dropped (pixels missing): :func:`tile_demand` measures the need.
      shade_every_sample: shade all ``supersample**2`` samples of a pixel (full supersampling).
        False (default) shades one covered sample per pixel and weights it by the pixel's
        coverage: silhouettes against the background are antialiased exactly as with full
        supersampling, at a quarter of the shading cost, but where two head surfaces meet inside
        one pixel (an ear over the cheek) the pixel takes one surface's colour.
      batch_chunk: scenes rendered together (vectorised); a larger batch loops over chunks.
    """

    image_size: tuple[int, int] = (256, 256)
    supersample: int = 2
    chunk: int = 2
    max_chunks: int | None = None
    shade_every_sample: bool = False
    batch_chunk: int = 8

    def __post_init__(self):
        h, w = self.image_size
        if h < 1 or w < 1:
            raise ValueError(f"RenderSettings: image_size must be positive, got {self.image_size}")
        if self.supersample < 1:
            raise ValueError(f"RenderSettings: supersample must be >= 1, got {self.supersample}")
        if self.batch_chunk < 1:
            raise ValueError(f"RenderSettings: batch_chunk must be >= 1, got {self.batch_chunk}")
        if self.chunk < 1:
            raise ValueError(f"RenderSettings: chunk must be >= 1, got {self.chunk}")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ValueError(f"RenderSettings: max_chunks must be >= 1 or None, got {self.max_chunks}")

    @property
    def fine_size(self) -> tuple[int, int]:
        return self.image_size[0] * self.supersample, self.image_size[1] * self.supersample


def default_tile_budget(settings: RenderSettings, num_triangles: int) -> int:
    """Tiles for a head covering up to the whole frame: the fine image area in tiles, plus one
    per triangle (bounding-box slack), plus a quarter for overlapping surfaces."""
    fh, fw = settings.fine_size
    return int(1.25 * fh * fw / settings.chunk**2) + int(num_triangles)


# ----------------------------------------------------------------------------- lighting

def sh_basis(normals: jax.Array) -> jax.Array:
    """Real SH basis ``[..., 9]`` (bands 0-2) at unit vectors ``[..., 3]``."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    return jnp.stack([
        jnp.full_like(x, _SH_C0),
        _SH_C1 * y, _SH_C1 * z, _SH_C1 * x,
        _SH_C2 * x * y, _SH_C2 * y * z, _SH_C3 * (3.0 * z * z - 1.0), _SH_C2 * x * z,
        _SH_C4 * (x * x - y * y)], -1)


def sh_shading(sh: jax.Array, normals: jax.Array) -> jax.Array:
    """Diffuse shading ``[..., 3]`` of unit normals ``[..., 3]`` under coefficients ``[9, 3]``."""
    return jnp.einsum("...k,kc->...c", sh_basis(normals), sh)


def directional_sh(direction, colour, ambient) -> jax.Array:
    """Irradiance SH ``[..., 9, 3]`` of a distant light towards ``direction`` ``[..., 3]`` with
    RGB ``colour`` ``[..., 3]`` plus uniform ``ambient`` ``[..., 3]``: a white surface facing the
    light gets about ``ambient + colour`` (order-2 truncation of the clamped cosine)."""
    d = jnp.asarray(direction, jnp.float32)
    d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    bands = jnp.asarray([SH_BAND_FACTORS[0]] + [SH_BAND_FACTORS[1]] * 3 + [SH_BAND_FACTORS[2]] * 5)
    # A delta light projects to Y(d); the band factors convolve it with the clamped cosine. At
    # n = d the sum is (1 + 3 * 2/3 + 5 * 1/4) / (4 pi), so this scale makes a facing white
    # surface exactly ``colour``.
    coeffs = (4.0 * np.pi / 4.25) * bands * sh_basis(d)  # [..., 9]
    light = coeffs[..., :, None] * jnp.asarray(colour, jnp.float32)[..., None, :]
    flat = jnp.asarray(ambient, jnp.float32)[..., None, :] / _SH_C0
    return light.at[..., 0, :].add(flat[..., 0, :])


# ----------------------------------------------------------------------------- rasteriser

def _tri_setup(tri, height, width):
    """Per-triangle pixel bbox, validity (front-facing, in front of the camera, finite, on
    screen). ``tri`` ``[F, 3, 3]`` -> lo ``[F, 2]``, size ``[F, 2]`` int32, valid ``[F]``."""
    p = tri[..., :2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # CCW model-frame triangles facing the camera are clockwise in (x right, y down) pixels.
    valid = (area < -1e-12) & jnp.all(tri[..., 2] > 0, -1) & jnp.all(jnp.isfinite(tri), (-1, -2))
    lo = jnp.maximum(jnp.ceil(jnp.min(p, 1)), 0.0)
    hi = jnp.minimum(jnp.floor(jnp.max(p, 1)), jnp.array([width - 1.0, height - 1.0]))
    lo = jnp.clip(lo, -1.0, 1e7).astype(jnp.int32)
    hi = jnp.clip(hi, -2.0, 1e7).astype(jnp.int32)
    size = hi - lo + 1
    return lo, size, valid & jnp.all(size > 0, -1)


def _plane_coefficients(tri):
    """Affine screen-space functions of each triangle: rows ``b0, b1, b2`` (screen-space
    barycentrics) and ``1/z`` (affine in screen space under perspective), each ``(A, B, C)``
    with ``f(x, y) = A x + B y + C``. ``tri`` ``[F, 3, 3]`` -> ``[F, 4, 3]``."""
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])
    area = jnp.where(jnp.abs(area) > 1e-12, area, 1.0)
    rows = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        rows.append(jnp.stack([y[:, j] - y[:, k], x[:, k] - x[:, j], x[:, j] * y[:, k] - y[:, j] * x[:, k]], -1))
    bary = jnp.stack(rows, 1) / area[:, None, None]  # [F, 3, 3]
    inv_z = jnp.einsum("fi,fic->fc", 1.0 / jnp.maximum(z, 1e-12), bary)
    return jnp.concatenate([bary, inv_z[:, None]], 1)


def _evaluate(coef, x, y):
    """``coef`` ``[..., 4, 3]`` at points ``x, y`` ``[...]`` -> ``[..., 4]``."""
    return coef[..., 0] * x[..., None] + coef[..., 1] * y[..., None] + coef[..., 2]


def tile_demand(verts_px: jax.Array, triangles: jax.Array, height: int, width: int, chunk: int = 2) -> jax.Array:
    """Tiles :func:`rasterize_ids` needs for this frame (int32 scalar; jit/vmap-able)."""
    lo, size, valid = _tri_setup(verts_px[triangles], height, width)
    return jnp.sum(jnp.where(valid, ((size + chunk - 1) // chunk).prod(-1), 0))


def rasterize_ids(verts_px: jax.Array, triangles: jax.Array, height: int, width: int,
                  max_chunks: int, chunk: int = 2):
    """Front-face z-buffer of one frame (jit/vmap-able; static sizes).

    Args:
      verts_px: ``[V, 3]`` (u right, v down in pixels; view depth > 0, smaller = nearer).
      triangles: ``[F, 3]`` int32, counter-clockwise seen from outside (back faces culled).
      max_chunks: static tile budget (:func:`tile_demand`).

    Returns:
      ``tri_id`` ``[H, W]`` int32 (-1 = background), perspective-correct ``bary`` ``[H, W, 3]``
      and ``depth`` ``[H, W]`` (inf on background).
    """
    num_tri = triangles.shape[0]
    id_bits = max(int(num_tri).bit_length(), 1)
    depth_bits = 31 - id_bits
    if depth_bits < 12:
        raise ValueError(f"rasterize_ids: {num_tri} triangles leave only {depth_bits} depth bits")
    tri = verts_px[triangles]  # [F, 3, 3]
    lo, size, valid = _tri_setup(tri, height, width)
    coef = _plane_coefficients(tri)
    tiles_xy = (size + chunk - 1) // chunk
    tiles = jnp.where(valid, tiles_xy[:, 0] * tiles_xy[:, 1], 0)
    ends = jnp.cumsum(tiles)
    starts = ends - tiles
    k = jnp.arange(max_chunks, dtype=jnp.int32)
    owner = jnp.minimum(jnp.searchsorted(ends, k, side="right"), num_tri - 1).astype(jnp.int32)
    local = k - starts[owner]
    tx = jnp.maximum(tiles_xy[owner, 0], 1)
    offs = jnp.arange(chunk, dtype=jnp.int32)
    px = (lo[owner, 0] + (local % tx) * chunk)[:, None, None] + offs[None, None, :]
    py = (lo[owner, 1] + (local // tx) * chunk)[:, None, None] + offs[None, :, None]
    px, py = (jnp.broadcast_to(a, (max_chunks, chunk, chunk)) for a in (px, py))
    hi = lo[owner] + size[owner] - 1
    inside = (px <= hi[:, 0, None, None]) & (py <= hi[:, 1, None, None]) & (k < ends[-1])[:, None, None]
    f = _evaluate(coef[owner][:, None, None], px.astype(tri.dtype), py.astype(tri.dtype))
    covered = inside & jnp.all(f[..., :3] >= 0, -1)
    # 1/z quantised over this frame's visible range, packed above the triangle id, so one
    # scatter-min finds both the nearest surface and (on ties) the smallest id.
    inv_v = jnp.where(valid[:, None], 1.0 / jnp.maximum(tri[..., 2], 1e-12), jnp.nan)
    inv_near, inv_far = jnp.nanmax(inv_v), jnp.nanmin(inv_v)
    scale = (2.0**depth_bits - 1.0) / jnp.maximum(inv_near - inv_far, 1e-12)
    # Clamp after the cast: 2**depth_bits - 1 is not a float32, it would round up and overflow.
    q = jnp.clip(jnp.round((inv_near - f[..., 3]) * scale), 0, 2.0**depth_bits).astype(jnp.int32)
    q = jnp.minimum(q, 2**depth_bits - 1)
    key = (q << id_bits) | owner[:, None, None]
    flat = jnp.where(covered, py * width + px, height * width)
    best = jnp.full((height * width,), jnp.iinfo(jnp.int32).max, jnp.int32)
    best = best.at[flat.ravel()].min(key.ravel(), mode="drop")
    hit = best != jnp.iinfo(jnp.int32).max
    tri_id = jnp.where(hit, best & ((1 << id_bits) - 1), -1).reshape(height, width)
    return (tri_id,) + _pixel_bary(coef, tri[..., 2], tri_id)


def _pixel_bary(coef, z, tri_id):
    """Perspective-correct bary ``[H, W, 3]`` and depth ``[H, W]`` of each pixel's triangle."""
    height, width = tri_id.shape
    hit = tri_id >= 0
    ids = jnp.maximum(tri_id, 0)
    jj, ii = jnp.meshgrid(jnp.arange(width, dtype=coef.dtype), jnp.arange(height, dtype=coef.dtype))
    f = _evaluate(coef[ids], jj, ii)
    inv = jnp.where(hit, f[..., 3], 1.0)
    bary = f[..., :3] / jnp.maximum(z[ids], 1e-12) / inv[..., None]
    return jnp.where(hit[..., None], bary, 0.0), jnp.where(hit, 1.0 / inv, jnp.inf)


# ----------------------------------------------------------------------------- shading

def supersampled_camera(camera: Camera, factor: int) -> Camera:
    """The view on a ``factor``-times finer grid whose ``factor x factor`` box means are centred
    on the original pixel centres."""
    return camera.replace(focal=camera.focal * factor, principal=camera.principal * factor + 0.5 * (factor - 1))


def _as_unit_float(image):
    return image.astype(jnp.float32) / 255.0 if image.dtype == jnp.uint8 else image.astype(jnp.float32)


def _representative_samples(tri_id, s):
    """Per output pixel, the fine sample to shade: its first covered sample in raster order (the
    centre-most when ``s`` is odd comes first), or the first sample when none is covered.

    ``tri_id`` ``[H*s, W*s]`` -> triangle ids ``[H*W]`` and fine (col, row) ``[H*W, 2]``."""
    fh, fw = tri_id.shape
    h, w = fh // s, fw // s
    blocks = tri_id.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s)
    order = jnp.argsort(jnp.abs(jnp.arange(s * s) // s - (s - 1) / 2) + jnp.abs(jnp.arange(s * s) % s - (s - 1) / 2),
                        stable=True)
    blocks = blocks[..., order]
    first = jnp.argmax(blocks >= 0, -1)
    ids = jnp.take_along_axis(blocks, first[..., None], -1)[..., 0]
    k = order[first]
    rows = jnp.arange(h)[:, None] * s + k // s
    cols = jnp.arange(w)[None, :] * s + k % s
    return ids.reshape(-1), jnp.stack([cols.reshape(-1), rows.reshape(-1)], -1).astype(jnp.float32)


def _shade(planes, tri_id, xy, texture, lighting, fine: Camera):
    """Colour ``[N, 3]`` in [0, 1] of samples at fine pixel positions ``xy`` ``[N, 2]`` on
    triangles ``tri_id`` ``[N]`` (-1 = none: black), from the per-triangle attribute planes."""
    hit = tri_id >= 0
    rows = jnp.take(planes.reshape(-1, 18), jnp.maximum(tri_id, 0), axis=0)
    vals = _evaluate(rows.reshape(-1, 6, 3), xy[:, 0], xy[:, 1])  # [N, 6]
    vals = vals[:, :5] / jnp.where(hit, vals[:, 5], 1.0)[:, None]
    uv, n = vals[:, :2], vals[:, 2:5]
    tex = _as_unit_float(texture)
    albedo = bilinear_sample(tex, uv_to_texel(uv, tex.shape[0]))
    n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    diffuse = jnp.maximum(sh_shading(lighting.sh, n), 0.0)
    # The direction to the eye is minus the pixel's viewing ray: no per-sample position needed.
    ray = jnp.stack([(xy[:, 0] - fine.principal[0]) / fine.focal_px,
                     -(xy[:, 1] - fine.principal[1]) / fine.focal_px, -jnp.ones(xy.shape[0])], -1)
    to_eye = -ray / jnp.linalg.norm(ray, axis=-1, keepdims=True)
    ldir = lighting.light_dir / jnp.maximum(jnp.linalg.norm(lighting.light_dir), 1e-12)
    half = ldir + to_eye
    half = half / jnp.maximum(jnp.linalg.norm(half, axis=-1, keepdims=True), 1e-12)
    lit = jnp.sum(n * ldir, -1) > 0.0  # no highlight on the side facing away from the light
    spec = jnp.where(lit, jnp.maximum(jnp.sum(n * half, -1), 0.0) ** lighting.shininess, 0.0)
    colour = jnp.clip(albedo * diffuse + lighting.specular * spec[:, None], 0.0, 1.0)
    return jnp.where(hit[:, None], colour, 0.0)


def _render_one(verts, camera, texture, lighting, background, triangles, uvs, triangle_uvs, *,
                settings: RenderSettings, max_chunks: int):
    s = settings.supersample
    h, w = settings.image_size
    fh, fw = settings.fine_size
    fine = supersampled_camera(camera, s)
    view = transform(camera, verts)
    verts_px = jnp.concatenate([project_view(fine, view), -view[:, 2:3]], -1)
    tri_id = rasterize_ids(verts_px, triangles, fh, fw, max_chunks, settings.chunk)[0]
    coverage = (tri_id >= 0).astype(jnp.float32).reshape(h, s, w, s).mean((1, 3))
    # Attributes over z are affine in screen space: one plane (A, B, C) per attribute and
    # triangle, gathered once per sample (gathers are the cost on CPU, so keep the rows narrow).
    tri = verts_px[triangles]
    bary_planes = _plane_coefficients(tri)[:, :3]  # [F, 3 corners, 3 coefs]
    inv_z = 1.0 / jnp.maximum(tri[..., 2], 1e-12)  # [F, 3]
    normals = vertex_normals(view, triangles)
    attrs = jnp.concatenate([uvs[triangle_uvs], normals[triangles], jnp.ones_like(inv_z)[..., None]], -1)
    planes = jnp.einsum("fi,fic,fid->fdc", inv_z, bary_planes, attrs)  # [F, 6, 3]: uv, n, 1 (= 1/z)
    if settings.shade_every_sample:
        jj, ii = jnp.meshgrid(jnp.arange(fw, dtype=jnp.float32), jnp.arange(fh, dtype=jnp.float32))
        xy = jnp.stack([jj.reshape(-1), ii.reshape(-1)], -1)
        colour = _shade(planes, tri_id.reshape(-1), xy, texture, lighting, fine)
        colour = colour.reshape(h, s, w, s, 3).mean((1, 3))
    else:
        ids, xy = _representative_samples(tri_id, s)
        colour = _shade(planes, ids, xy, texture, lighting, fine).reshape(h, w, 3) * coverage[..., None]
    image = colour + (1.0 - coverage[..., None]) * _as_unit_float(background)
    return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8), coverage


@functools.partial(jax.jit, static_argnames=("settings", "max_chunks"))
def _render_batch(scenes, triangles, uvs, triangle_uvs, settings, max_chunks):
    fn = functools.partial(_render_one, triangles=triangles, uvs=uvs, triangle_uvs=triangle_uvs,
                           settings=settings, max_chunks=max_chunks)
    # Vectorised over ``batch_chunk`` scenes at a time: a whole large batch at once would hold
    # every sample's attributes for all of it in memory.
    images, coverage = jax.lax.map(lambda a: fn(*a), (scenes.verts, scenes.camera, scenes.textures,
                                                      scenes.lighting, scenes.backgrounds),
                                   batch_size=settings.batch_chunk)
    return RenderOutput(images, coverage)


def _check_scenes(mesh: HeadModel, scenes: Scenes, settings: RenderSettings) -> None:
    b = scenes.verts.shape[0]
    num_vertices = int(np.max(mesh.triangles)) + 1
    if scenes.verts.ndim != 3 or scenes.verts.shape[1] < num_vertices or scenes.verts.shape[2] != 3:
        raise ValueError(f"render_scenes: verts must be [B, V >= {num_vertices}, 3] for this mesh, "
                         f"got {list(scenes.verts.shape)}")
    h, w = settings.image_size
    checks = {"backgrounds": (scenes.backgrounds, (b, h, w, 3)),
              "lighting.sh": (scenes.lighting.sh, (b, NUM_SH, 3)),
              "lighting.specular": (scenes.lighting.specular, (b,)),
              "lighting.shininess": (scenes.lighting.shininess, (b,)),
              "lighting.light_dir": (scenes.lighting.light_dir, (b, 3)),
              "camera.rotvec": (scenes.camera.rotvec, (b, 3))}
    for name, (arr, shape) in checks.items():
        if tuple(arr.shape) != shape:
            raise ValueError(f"render_scenes: {name} must be {list(shape)}, got {list(arr.shape)}")
    tex = scenes.textures
    if tex.ndim != 4 or tex.shape[0] != b or tex.shape[1] != tex.shape[2] or tex.shape[3] != 3 or tex.shape[1] < 2:
        raise ValueError(f"render_scenes: textures must be [B, S, S, 3] with S >= 2, got {list(tex.shape)}")


def render_scenes(mesh: HeadModel, scenes: Scenes, settings: RenderSettings = RenderSettings()) -> RenderOutput:
    """Render ``B`` textured heads (see the module docstring).

    Args:
      mesh: anything with the mesh topology and UV layout as attributes ``triangles`` ``[F, 3]``,
        ``uvs`` ``[U, 2]``, ``triangle_uvs`` ``[F, 3]``, e.g. the capped head model.
      scenes: :class:`Scenes`, leading dim B, cameras for ``settings.image_size``.
      settings: :class:`RenderSettings` (static).

    Returns:
      :class:`RenderOutput` (device arrays).

    Raises:
      ValueError: inconsistent shapes.
    """
    scenes = jax.tree.map(jnp.asarray, scenes)
    _check_scenes(mesh, scenes, settings)
    budget = settings.max_chunks or default_tile_budget(settings, mesh.triangles.shape[0])
    return _render_batch(scenes, jnp.asarray(mesh.triangles, jnp.int32), jnp.asarray(mesh.uvs, jnp.float32),
                         jnp.asarray(mesh.triangle_uvs, jnp.int32), settings, int(budget))


@functools.partial(jax.jit, static_argnames=("settings",))
def _batch_demand(verts, camera, triangles, settings):
    def one(v, c):
        view = transform(c, v)
        px = project_view(supersampled_camera(c, settings.supersample), view)
        return tile_demand(jnp.concatenate([px, -view[:, 2:3]], -1), triangles, *settings.fine_size, settings.chunk)

    return jax.vmap(one)(verts, camera)


def scene_tile_demand(mesh: HeadModel, verts, camera: Camera,
                      settings: RenderSettings = RenderSettings()) -> np.ndarray:
    """Tiles ``[B]`` each frame of ``verts`` ``[B, V, 3]`` at ``camera`` needs (compare with the
    budget to be sure no pixel is dropped)."""
    return np.asarray(_batch_demand(jnp.asarray(verts, jnp.float32), camera,
                                    jnp.asarray(mesh.triangles, jnp.int32), settings))


def fit_tile_budget(mesh: HeadModel, verts, camera: Camera, settings: RenderSettings = RenderSettings(),
                    bucket: int = 1 << 14) -> RenderSettings:
    """``settings`` with ``max_chunks`` just enough for every frame of ``verts`` ``[B, V, 3]`` at
    ``camera``, rounded up to a multiple of ``bucket`` so that only a few budgets ever compile.

    The cost of a frame grows with the budget, not with its own need: a batch of heads far
    from the camera renders faster under a smaller budget than the default one."""
    need = int(scene_tile_demand(mesh, verts, camera, settings).max())
    return dataclasses.replace(settings, max_chunks=max(-(-need // bucket), 1) * bucket)
