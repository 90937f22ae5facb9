"""Complete a projected UV texture: symmetry mirroring, background texture, Poisson blending.

Pipeline (:func:`complete_texture`):

1. **Mirror** (:func:`mirror_map`, :func:`mirror_fill`): the head is left-right symmetric, so
   a texel that the photo does not show (or shows at a grazing angle) takes the colour of
   its mirror texel (the surface point at ``x -> -x``) where that one is seen better. The
   texel -> mirror-texel map is precomputed once per model and resolution.
2. **Background**: a library texture (:class:`TextureLibrary`, the closest identity by L1
   distance between identity embeddings, as in the paper), or else the default
   (:func:`default_background`): the mean seen skin colour, flat. Either way it is first
   colour-matched (per-channel mean/std over the texels the photo shows) so the Poisson
   correction stays small.
3. **Poisson blend** (:func:`poisson_blend`): the foreground (photo + mirror) is pasted
   where its weight is above ``threshold`` with its gradients kept and its colours offset
   by a harmonic field that meets the background on the mask boundary (Perez et al. 2003),
   so there is no seam.

Eye and mouth openings: the low-poly mesh (like ICT-FaceKit's skin) has no eyeballs, mouth
socket or teeth; the eyes and mouth are holes in the mesh. ``avatar-jax reconstruct`` closes
them with :mod:`avatar_jax.texture.caps` (own UV islands, the photo's eyes and teeth projected
onto them) and bakes the texture with :func:`avatar_jax.texture.bake.bake_texture`, which
restricts the photo to the head's skin and fills the rest on the mesh (no atlas seams). This
module stays the generic image-space path (any background texture, e.g. a library texture).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from avatar_jax.model.head import HeadModel
from avatar_jax._disk_cache import cache_key, cached_arrays
from avatar_jax.texture.project import UVRaster

# --------------------------------------------------------------------------------------------
# Symmetry


def _mirror_vertex_uvs(model: HeadModel) -> np.ndarray:
    """UV ``[V, 2]`` of the surface point at each vertex's mirror image (x -> -x)."""
    from avatar_jax.geometry.closest import closest_point_on_mesh

    verts = np.asarray(model.neutral, np.float64)
    tris = np.asarray(model.triangles)
    mirrored = verts * np.array([-1.0, 1.0, 1.0])
    _, _, tri, bary = closest_point_on_mesh(verts, tris, mirrored)
    corner_uv = np.asarray(model.uvs, np.float64)[np.asarray(model.triangle_uvs)[tri]]
    return np.einsum("nk,nkd->nd", bary, corner_uv)


_MIRROR_CACHE: dict[str, jax.Array] = {}


def mirror_map(model: HeadModel, uv: UVRaster, max_spread: float = 0.05) -> jax.Array:
    """Flat index ``[S, S]`` int32 of each texel's mirror texel (-1 = none); cached in the
    process and on disk (building it takes seconds at 2048²).

    The mirror UV of a texel interpolates its triangle corners' mirror UVs. Where those
    corners map to different UV charts (spread > ``max_spread`` in UV units) interpolation is
    meaningless, and the corner with the largest barycentric weight is used instead.
    """
    key = cache_key(np.asarray(model.neutral), np.asarray(model.triangles),
                    np.asarray(model.uvs), np.asarray(model.triangle_uvs),
                    np.asarray(uv.tri_id), float(max_spread))
    if key in _MIRROR_CACHE:
        return _MIRROR_CACHE[key]
    out = cached_arrays("mirror_map", key, lambda: {"mirror": _mirror_table(model, uv, max_spread)})
    _MIRROR_CACHE[key] = jnp.asarray(out["mirror"])
    return _MIRROR_CACHE[key]


def _mirror_table(model: HeadModel, uv: UVRaster, max_spread: float) -> np.ndarray:
    size = uv.size
    tri_id = np.asarray(uv.tri_id)
    rows, cols = np.nonzero(tri_id >= 0)
    tri = tri_id[rows, cols]
    bary = np.asarray(uv.bary())[rows, cols]
    corner_mirror = _mirror_vertex_uvs(model)[np.asarray(model.triangles)[tri]]  # [N, 3, 2]
    mirror_uv = np.einsum("nk,nkd->nd", bary, corner_mirror)
    spread = np.ptp(corner_mirror, axis=1).max(-1)
    nearest = corner_mirror[np.arange(len(tri)), np.argmax(bary, 1)]
    mirror_uv = np.where((spread > max_spread)[:, None], nearest, mirror_uv)
    mc = np.clip(np.floor(mirror_uv[:, 0] * size), 0, size - 1).astype(np.int64)
    mr = np.clip(np.floor((1.0 - mirror_uv[:, 1]) * size), 0, size - 1).astype(np.int64)
    target = mr * size + mc
    ok = tri_id.ravel()[target] >= 0
    out = np.full(size * size, -1, np.int32)
    out[rows * size + cols] = np.where(ok, target, -1)
    return out.reshape(size, size)


@jax.jit
def mirror_fill(texture: jax.Array, weight: jax.Array, mirror: jax.Array):
    """Fill poorly seen texels from their mirror texels.

    Args: texture ``[S, S, C]``, weight ``[S, S]`` in [0, 1], mirror ``[S, S]`` from
    :func:`mirror_map`. Returns ``(texture, weight)``: ``w' = w + (1 - w) w_m`` and the
    colour is the matching convex combination, so well-seen texels keep their own colour.
    """
    s, c = texture.shape[0], texture.shape[-1]
    idx = jnp.maximum(mirror, 0).ravel()
    w_m = jnp.where(mirror >= 0, weight.ravel()[idx].reshape(s, s), 0.0)
    t_m = texture.reshape(-1, c)[idx].reshape(texture.shape)
    a = weight
    b = (1.0 - weight) * w_m
    total = a + b
    out = (a[..., None] * texture + b[..., None] * t_m) / jnp.maximum(total, 1e-6)[..., None]
    return jnp.where(total[..., None] > 0, out, 0.0), total


# --------------------------------------------------------------------------------------------
# Background textures


def default_background(texture: np.ndarray, weight: np.ndarray, size: int) -> np.ndarray:
    """Flat ``[S, S, 3]`` background in the mean colour of the well-seen texels.

    Falls back to a neutral skin tone when nothing is seen.
    """
    seen = weight > 0.5
    if seen.sum() < 16:
        color = np.array([0.78, 0.6, 0.5], np.float32)
    else:
        color = np.median(np.asarray(texture)[seen][::7], axis=0).astype(np.float32)
    return np.broadcast_to(color, (size, size, 3)).copy()


def match_colors(background: np.ndarray, foreground: np.ndarray, weight: np.ndarray,
                 region: np.ndarray) -> np.ndarray:
    """Per-channel affine colour transfer of ``background`` towards ``foreground``.

    Statistics are taken over texels with ``weight > 0.5`` inside ``region`` ``[S, S]``; the
    gain is limited to [0.5, 2] so a flat background is only shifted.
    """
    seen = (weight > 0.5) & region
    if seen.sum() < 16:
        return background
    fg, bg = foreground[seen], background[seen]
    fg_mean, bg_mean = fg.mean(0), bg.mean(0)
    gain = np.clip(fg.std(0) / np.maximum(bg.std(0), 1e-6), 0.5, 2.0)
    gain = np.where(bg.std(0) < 1e-4, 1.0, gain)
    return ((background - bg_mean) * gain + fg_mean).astype(np.float32)


class TextureLibrary:
    """A directory of UV textures (same UV layout as the model) with identity embeddings.

    Layout: ``embeddings.npy`` ``[N, D]`` float and ``textures.txt`` with N lines, each the
    file name (relative to the directory) of the UV map of that identity (any format OpenCV
    reads, RGB). :meth:`closest` picks the identity with the smallest L1 distance.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        emb_path = self.directory / "embeddings.npy"
        list_path = self.directory / "textures.txt"
        for p in (emb_path, list_path):
            if not p.is_file():
                raise ValueError(f"texture library {self.directory}: missing {p.name}")
        self.embeddings = np.load(emb_path).astype(np.float32)
        self.names = [ln.strip() for ln in list_path.read_text().splitlines() if ln.strip()]
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.names):
            raise ValueError(f"texture library {self.directory}: embeddings.npy has shape "
                             f"{self.embeddings.shape} but textures.txt lists "
                             f"{len(self.names)} files")
        for name in self.names:
            if not (self.directory / name).is_file():
                raise ValueError(f"texture library {self.directory}: missing texture {name}")

    def __len__(self) -> int:
        return len(self.names)

    def closest(self, embedding) -> int:
        """Index of the identity nearest to ``embedding`` ``[D]`` in L1 distance."""
        e = np.asarray(embedding, np.float32).ravel()
        if e.shape[0] != self.embeddings.shape[1]:
            raise ValueError(f"embedding has {e.shape[0]} dims, library has "
                             f"{self.embeddings.shape[1]}")
        return int(np.argmin(np.abs(self.embeddings - e).sum(1)))

    def texture(self, index: int, size: int) -> np.ndarray:
        """UV map ``index`` as float32 RGB ``[size, size, 3]`` in [0, 1]."""
        path = self.directory / self.names[index]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"texture library: cannot read {path}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.shape[:2] != (size, size):
            interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
        return img.astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------------
# Poisson blending


def _jacobi(r: np.ndarray, d: np.ndarray, known: np.ndarray, iterations: int) -> np.ndarray:
    """Jacobi sweeps of the 4-neighbour Laplace equation, ``r = d`` held on ``known``."""
    kernel = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)
    for _ in range(iterations):
        r = cv2.filter2D(r, -1, kernel, borderType=cv2.BORDER_REPLICATE)
        np.copyto(r, d, where=known)
    return r


def _harmonic(d: np.ndarray, known: np.ndarray, sweeps: int, coarse: int = 16) -> np.ndarray:
    """Harmonic interpolation of ``d`` ``[H, W, C]`` from the ``known`` ``[H, W, 1]`` pixels.

    Cascadic multigrid: solve on a 2x coarser grid (known where any fine pixel is known,
    value = their mean), upsample as the initial guess, then smooth with Jacobi sweeps; the
    coarse levels remove the low frequencies plain Jacobi would take ~N² sweeps for.
    """
    h, w = d.shape[:2]
    if min(h, w) <= coarse:
        start = np.broadcast_to(d[known[..., 0]].mean(0) if known.any() else 0.0, d.shape)
        return _jacobi(np.array(start, np.float32), d, known, 4 * coarse)
    r2 = _harmonic(*_restrict(d, known), sweeps, coarse)
    r = cv2.resize(r2, (w, h), interpolation=cv2.INTER_LINEAR).reshape(d.shape)
    np.copyto(r, d, where=known)
    return _jacobi(r, d, known, sweeps)


def _restrict(d: np.ndarray, known: np.ndarray):
    """2x coarser (d, known): known where any fine pixel is, d = mean of the known ones."""
    h, w = d.shape[:2]
    hh, ww = (h + 1) // 2, (w + 1) // 2
    kw = known.astype(np.float32)
    w2 = cv2.resize(kw, (ww, hh), interpolation=cv2.INTER_AREA).reshape(hh, ww, 1)
    d2 = cv2.resize(d * kw, (ww, hh), interpolation=cv2.INTER_AREA).reshape(hh, ww, -1)
    return (d2 / np.maximum(w2, 1e-6)).astype(np.float32), w2 > 0


def poisson_blend(foreground, background, mask, valid=None, sweeps: int = 8,
                  solve_size: int = 512, feather: int = 4) -> np.ndarray:
    """Poisson image editing: paste ``foreground`` into ``background`` inside ``mask``.

    Inside the mask the result is ``foreground + r`` with ``r`` harmonic and equal to
    ``background - foreground`` on the pixels bordering the mask (the discrete Dirichlet
    problem of Perez et al. 2003 with the foreground's gradients as guidance); outside it is
    ``background``. ``r`` is solved by cascadic multigrid (Jacobi smoothing with OpenCV
    filters) on a grid of at most ``solve_size`` pixels and upsampled: the correction is
    smooth, and what the coarse grid cannot hold (the fine detail of ``background -
    foreground`` right on the boundary) is hidden by feathering the mask over ``feather``
    pixels inwards. ``solve_size >= max(H, W)`` and ``feather=0`` give the exact solution.

    Args:
      foreground, background: ``[H, W, C]`` float.
      mask: ``[H, W]`` bool, where the foreground is kept.
      valid: optional ``[H, W]`` bool of meaningful pixels (e.g. covered texels); pixels that
        are neither in ``mask`` nor valid impose no boundary value (they are solved for too),
        so chart borders in a UV map act as free boundaries.
      sweeps: Jacobi sweeps per pyramid level.

    Returns: ``[H, W, C]`` float32.
    """
    fg = np.asarray(foreground, np.float32)
    bg = np.asarray(background, np.float32)
    mask = np.asarray(mask, bool)
    if fg.shape != bg.shape or fg.ndim != 3:
        raise ValueError(f"foreground {fg.shape} and background {bg.shape} must be equal [H, W, C]")
    if mask.shape != fg.shape[:2]:
        raise ValueError(f"mask must have shape {fg.shape[:2]}, got {mask.shape}")
    if not mask.any():
        return bg.copy()
    valid = np.ones_like(mask) if valid is None else np.asarray(valid, bool)
    known = (valid & ~mask)[..., None]
    d = np.where(known, bg - fg, 0.0).astype(np.float32)
    levels = 0
    while max(d.shape[:2]) > solve_size:
        d, known = _restrict(d, known)
        levels += 1
    r = _harmonic(d, known, sweeps)
    h, w = fg.shape[:2]
    if levels:
        r = cv2.resize(r, (w, h), interpolation=cv2.INTER_LINEAR).reshape(fg.shape)
    alpha = mask.astype(np.float32)
    if feather > 0:
        # Distance-like ramp: 0 on the mask border, 1 from `feather` pixels inside.
        inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=feather)
        alpha = np.minimum(cv2.blur(inner.astype(np.float32), (2 * feather + 1,) * 2) * 2.0,
                           1.0) * alpha
    alpha = alpha[..., None]
    return (alpha * (fg + r) + (1.0 - alpha) * bg).astype(np.float32)


# --------------------------------------------------------------------------------------------


def complete_texture(texture, weight, model: HeadModel, uv: UVRaster, *,
                     background=None, threshold: float = 0.5, mirror: bool = True) -> np.ndarray:
    """Projected texture -> complete UV texture ``[S, S, 3]`` float32.

    Args:
      texture, weight: from :func:`avatar_jax.texture.project.project_texture`.
      model, uv: the head model and its UV raster at the same size.
      background: ``[S, S, 3]`` texture for the unseen regions (e.g.
        ``TextureLibrary.texture(lib.closest(embedding), S)``); None = default flat skin.
      threshold: foreground weight above which the photo (or its mirror) is kept.
      mirror: fill unseen texels from their mirror texels first.
    """
    size = uv.size
    tex = jnp.asarray(texture, jnp.float32)
    w = jnp.asarray(weight, jnp.float32)
    if tex.shape[:2] != (size, size) or w.shape != (size, size):
        raise ValueError(f"texture {tex.shape} / weight {w.shape} must be [{size}, {size}, ...] "
                         "like the UV raster")
    if mirror:
        tex, w = mirror_fill(tex, w, mirror_map(model, uv))
    tex, w = np.asarray(tex), np.asarray(w)
    covered = np.asarray(uv.covered)
    if background is None:
        bg = default_background(tex, w, size)
    else:
        bg = np.asarray(background, np.float32)
        if bg.shape != (size, size, 3):
            raise ValueError(f"background must have shape {(size, size, 3)}, got {bg.shape}")
        bg = match_colors(bg, tex, w, covered)
    mask = (w > threshold) & covered
    # Texels the photo does not show at all (w = 0) impose no boundary value.
    out = poisson_blend(tex, bg, mask, valid=covered & (w > 1e-3))
    # A strong colour mismatch can push the harmonic offset out of the data's range: clip.
    lo = np.minimum(tex[mask].min(0) if mask.any() else bg.min((0, 1)), bg.min((0, 1)))
    hi = np.maximum(tex[mask].max(0) if mask.any() else bg.max((0, 1)), bg.max((0, 1)))
    return np.clip(out, lo, hi)
