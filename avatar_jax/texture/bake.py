"""Photo -> complete UV texture, fast at 2048² (the ``avatar-jax reconstruct`` path).

Everything that varies slowly over the atlas is computed at half resolution ``L = ceil(S / 2)``
and only the photo's own detail is sampled at the full size ``S``:

1. **Projection** (JAX, :func:`~avatar_jax.texture.project.project_geometry` at ``L``): for each
   texel its photo position and how well it is seen (depth test, soft occlusion edges,
   grazing angle). The photo is padded to a multiple of :data:`PAD_TO` pixels, so photos of
   similar sizes share one compilation.
2. **Foreground restriction**: the photo is only trusted on the head. Texels below the
   chin (:data:`NECK_RAMP_MM`) fade out, and texels below the eyes must also look like the
   person's skin: a chroma/luminance test (YCrCb) against robust statistics (median, MAD) of the
   well-seen face core within :data:`CORE_RADIUS_MM` of the nose tip. Clothing, the tie,
   the collar, the background behind the jaw and neck, and the hair and background that the
   fitted silhouette overlaps beside the cheeks and ears fail it. Hair on the scalp, the
   forehead and the temples is kept, but not the background beyond the person's outline there
   (MediaPipe's selfie segmentation on the head's crop, :func:`person_crop`, which the hair
   estimate reuses);
   the lips and teeth (within :data:`MOUTH_EXEMPT_MM` of the mouth centre) and the hole caps
   (``BakePlan.skin_exempt``) are not tested, though below the eyes they must not be green,
   cyan or blue (:data:`MOUTH_MIN_CR`). Below the chin the photo must not be brighter than the
   face (:data:`NECK_MAX_LUMA`: collars that pass the colour test), and photo patches of the
   neck cut off from the face (:func:`drop_neck_islands`: light collars) are dropped.
   **Lighting removal** (:mod:`avatar_jax.texture.delight`, ``delight=True``): an SH light is
   fitted to the well-seen face skin at the view-space normals and its (clamped) shading divided
   out of the photo colours, from here on and in the full-size compose (one gain per texel).
3. **Mirror** (:func:`~avatar_jax.texture.complete.mirror_map` at ``L``): poorly seen
   texels take the photo colour of their mirror texel where that one is better seen.
   The foreground opacity ``alpha`` is a smoothstep of the combined weight, softened with a
   normalised box blur (no ragged edges where the mirrored weight crosses the threshold).
4. **Skin fill on the mesh** (seam-free Poisson): the rest of the head gets the median
   visible skin colour, shaded darker on downward-facing surfaces (soft, low frequency), plus a
   correction ``r`` that equals ``photo - skin`` at the vertices inside the foreground and is
   a screened harmonic function of the mesh graph elsewhere (:func:`fill_vertex_colors`), so
   the fill meets the photo without a seam and fades back to plain skin away from it.
   Solving on the 3D vertices instead of the atlas means UV seams cannot show, and the
   photo's colours are never shifted (the correction lives outside the foreground only).
   **Hair** (:mod:`avatar_jax.texture.hair`, ``hair=True``): where the photo shows hair on the
   scalp, the scalp vertices (a soft hairline on the model) get the photo's hair colour instead,
   blended over the corrected skin fill, and the fill there is multiplied by a strand pattern at
   ``S``. The photo still wins wherever it is seen (hair over the forehead and temples).
5. **Compose at S** (OpenCV): the photo positions, opacities and the fill are upsampled to
   ``S`` (all piecewise linear or smooth over the atlas); the photo is resampled twice with
   ``cv2.remap`` (own and mirrored positions) and blended.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from avatar_jax._disk_cache import cache_key, cached_arrays
from avatar_jax._identity_cache import IdentityCache
from avatar_jax.geometry.camera import Camera, project, rotation_matrix, transform
from avatar_jax.geometry.mesh import vertex_normals
from avatar_jax.model.head import HeadModel, landmarks
from avatar_jax.render.sample import bilinear_sample
from avatar_jax.texture.complete import mirror_map
from avatar_jax.texture.delight import delight_gain, fit_sh_light, reference_shading
from avatar_jax.texture.project import UVRaster, project_geometry, smoothstep, uv_raster
from avatar_jax.texture.hair import (NO_HAIR, SEGMENTER_SIZE, HairEstimate, crown_axis, estimate_hair,
                                    hair_table_params, head_roi, person_probability, scalp_weights,
                                    strand_contrast, strand_gain)
from avatar_jax.texture.skin import SkinStats, skin_probability, ycrcb

NECK_RAMP_MM = (10.0, 35.0)  # photo kept fully down to 10 mm below the chin, none below 35 mm
CORE_RADIUS_MM = 50.0
MOUTH_EXEMPT_MM = 28.0
# below the chin, photo texels fade out from NECK_MAX_LUMA - NECK_LUMA_SOFT to NECK_MAX_LUMA times
# the face skin's median luminance
NECK_MAX_LUMA = 1.3
NECK_LUMA_SOFT = 0.15
MOUTH_MIN_CR = -0.06  # below the eyes, texels the skin test exempts need Cr above this (no green/blue)
LIPS_MM = 18.0  # the light is fitted on face skin farther than this from the mouth centre
PAD_TO = 256  # photos are padded to multiples of this: one compilation per size bucket
CAP_DEPTH_SLACK_MM = 12.0  # hole caps are not hidden by their own lids (see project_geometry)
DEFAULT_SKIN = (0.78, 0.6, 0.5)
STATS_STRIDE = 4  # texel stride of the skin statistics and the light fit at half resolution
PERSON_MIN = 0.2  # above the eyes, photo texels at a lower person probability are background
ISLAND_ALPHA = 0.05  # foreground islands (drop_neck_islands) are connected above this opacity
FILL_DECAY_EDGES = 6.0  # the fill correction decays over ~6 mesh edges (~4 cm)


@dataclasses.dataclass(frozen=True)
class BakePlan:
    """Per-model, per-size tables (host and device), built once by :func:`bake_plan`."""

    size: int
    uv_low: UVRaster
    mirror_low: jax.Array  # [L, L] int32
    vertex_texel: np.ndarray  # [V] flat index of each vertex's texel in the L grid
    laplacian: sp.csr_matrix  # [V, V] graph Laplacian (uniform weights)
    skin_exempt: jax.Array  # [V] bool, hole-cap vertices: no skin test, depth-test slack
    scalp: np.ndarray  # [V] hair weight in [0, 1] (hair.scalp_weights of the neutral head)
    strands: np.ndarray  # [S, S, 3] uint8 strand gain of the fill, 128 = 1 (hair.strand_gain)


_PLANS: IdentityCache[BakePlan] = IdentityCache(maxsize=4)


def bake_plan(model: HeadModel, size: int, skin_exempt=None) -> BakePlan:
    """Tables for :func:`bake_texture` (cached per process; the heavy ones also on disk).

    ``skin_exempt``: optional ``[V]`` bool of the hole-cap vertices: their texels skip the skin
    test (eyes and teeth are not skin-coloured) and get :data:`CAP_DEPTH_SLACK_MM` of depth
    tolerance (the cap sits behind its own lids and lips).
    """
    if size < 16:
        raise ValueError(f"texture size must be >= 16, got {size}")
    exempt = np.zeros(model.num_vertices, bool) if skin_exempt is None else np.asarray(skin_exempt, bool)
    if exempt.shape != (model.num_vertices,):
        raise ValueError(f"skin_exempt must have shape ({model.num_vertices},), got {exempt.shape}")
    def make():
        low = (size + 1) // 2
        uv_low = uv_raster(model, low)
        scalp, strands = _hair_tables(model, uv_low, size)
        return BakePlan(size, uv_low, mirror_map(model, uv_low), _vertex_texels(model, low),
                        _graph_laplacian(model), jnp.asarray(exempt), scalp, strands)

    return _PLANS.get((model,), (size, exempt.tobytes()), make)


def _hair_tables(model: HeadModel, uv_low: UVRaster, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex scalp weight ``[V]`` and the strand gain ``[S, S, 3]`` of the neutral head
    (the gain is full-size work, so it is also cached on disk)."""
    neutral = np.asarray(model.neutral)
    brows = np.asarray(landmarks(model, model.neutral))[17:27]
    scalp = scalp_weights(neutral, brows)

    def strands():
        texel = np.array(_interpolate(jnp.asarray(np.c_[neutral, scalp], jnp.float32), uv_low,
                                      model.triangles))
        texel[~np.asarray(uv_low.covered)] = 0.0
        return {"gain": strand_gain(texel[..., :3], texel[..., 3], size, *crown_axis(neutral, brows))}

    key = cache_key(neutral, model.triangles, model.uvs, model.triangle_uvs, size, hair_table_params())
    gain = cached_arrays("hair_strands", key, strands)["gain"]
    return scalp, np.repeat(gain[..., None], 3, axis=2)


def _vertex_texels(model: HeadModel, size: int) -> np.ndarray:
    """Flat texel index ``[V]`` of each vertex's first uv (original charts come first)."""
    tris = np.asarray(model.triangles).ravel()
    tuv = np.asarray(model.triangle_uvs).ravel()
    first = np.full(model.num_vertices, -1)
    order = np.arange(len(tris))[::-1]
    first[tris[order]] = tuv[order]  # last write wins: the first occurrence
    uv = np.asarray(model.uvs)[np.maximum(first, 0)]
    col = np.clip(np.floor(uv[:, 0] * size), 0, size - 1).astype(np.int64)
    row = np.clip(np.floor((1.0 - uv[:, 1]) * size), 0, size - 1).astype(np.int64)
    return row * size + col


def _graph_laplacian(model: HeadModel) -> sp.csr_matrix:
    tris = np.asarray(model.triangles)
    e = np.unique(np.sort(tris[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), 1), axis=0)
    n = model.num_vertices
    adj = sp.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                        shape=(n, n)).tocsr()
    return (sp.diags(np.asarray(adj.sum(1)).ravel()) - adj).tocsr()


def _robust(x, ok):
    """Median and 1.4826 * MAD of ``x`` over ``ok`` (fixed shapes: NaN-masked)."""
    xm = jnp.where(ok, x, jnp.nan)
    med = jnp.nanmedian(xm)
    return med, 1.4826 * jnp.nanmedian(jnp.abs(xm - med))


@jax.jit
def _foreground(image, true_hw, verts, camera, model, uv, mirror, exempt, delight, person, to_crop):
    """Low-resolution foreground: photo positions, blend coefficients, colours, skin colour.

    ``image`` is padded at the bottom/right to a bucket shape (one compilation per bucket, not
    per photo size); ``true_hw`` ``[2]`` is the photo's real size, outside which nothing is seen.
    ``delight`` (traced bool): divide the fitted light's shading out of the colours
    (:mod:`avatar_jax.texture.delight`); the light is fitted either way (diagnostics).
    ``person`` ``[N, N]``: the selfie segmenter's person probability on the head's crop,
    ``to_crop`` ``[2, 3]`` the image -> crop pixel map (:func:`person_crop`).
    """
    pos, weight = project_geometry(image.shape, verts, camera, model, uv,
                                   depth_slack=exempt * CAP_DEPTH_SLACK_MM)
    inside = ((pos[..., 0] <= true_hw[1] - 1.0) & (pos[..., 1] <= true_hw[0] - 1.0))
    weight = jnp.where(inside, weight, 0.0)
    color = bilinear_sample(image, pos)  # [L, L, 3]
    tri = jnp.maximum(uv.tri_id, 0)
    corners = model.triangles[tri]  # [L, L, 3]
    bary = uv.bary()

    # Region prior per vertex: the chin (landmark 8), the eyes (36-47), the nose tip and the
    # mouth centre (inner lip midpoints 62, 66) set the levels.
    lms = landmarks(model, verts)
    y = verts[:, 1]
    lo, hi = NECK_RAMP_MM
    neck = smoothstep((y - (lms[8, 1] - hi)) / (hi - lo))
    mouth = 0.5 * (lms[62] + lms[66])
    lower = ((y < jnp.mean(lms[36:48, 1])) & ~exempt &
             (jnp.linalg.norm(verts - mouth, axis=-1) > MOUTH_EXEMPT_MM)).astype(jnp.float32)
    core = (jnp.linalg.norm(verts - verts[model.nose_tip], axis=-1) < CORE_RADIUS_MM)
    core = (core & model.face_mask).astype(jnp.float32)
    lit_v = (model.face_mask & ~exempt & (jnp.linalg.norm(verts - mouth, axis=-1) > LIPS_MM)).astype(jnp.float32)
    below_eyes_v = (y < jnp.mean(lms[36:48, 1])).astype(jnp.float32)
    upper_v = ((y >= jnp.mean(lms[36:48, 1])) & ~exempt).astype(jnp.float32)
    below_chin_v = (y < lms[8, 1]).astype(jnp.float32)
    per_texel = jnp.einsum("hwk,hwkc->hwc", bary,
                           jnp.stack([neck, lower, core, lit_v, below_eyes_v, upper_v, below_chin_v], -1)[corners])
    neck_t, lower_t, core_t = per_texel[..., 0], per_texel[..., 1] > 0.5, per_texel[..., 2] > 0.99
    normals = vertex_normals(verts, model.triangles)
    n_view = jnp.einsum("hwk,hwkc->hwc", bary, (normals @ rotation_matrix(camera.rotvec).T)[corners])
    n_view = n_view / jnp.maximum(jnp.linalg.norm(n_view, axis=-1, keepdims=True), 1e-6)

    # Skin statistics on a strided subset of the well-seen face core; small atlases are sampled
    # densely enough to find it (a stride of 4 left too few core texels below 512²).
    stride = min(STATS_STRIDE, max(1, weight.shape[0] // 64))
    sub = (slice(None, None, stride), slice(None, None, stride))
    yy, cr, cb = ycrcb(color[sub])
    ok = core_t[sub] & (weight[sub] > 0.8)
    (my, _), (mcr, scr), (mcb, scb) = [_robust(c, ok) for c in (yy, cr, cb)]
    stats = SkinStats(my, mcr, scr, mcb, scb)
    enough = jnp.sum(ok) >= 64
    skin = jnp.where(enough, skin_probability(color, stats), 1.0)
    # The mouth is exempt from the skin test (lips, teeth), not from being a mouth at all: no mouth
    # is green, cyan or blue, which the background beside a turned face's far mouth corner can be.
    below_eyes = per_texel[..., 4] > 0.5
    luma, chroma_r, _ = ycrcb(color)
    mouthlike = smoothstep((chroma_r - MOUTH_MIN_CR) / 0.03)
    w = weight * neck_t * jnp.where(lower_t, skin, jnp.where(below_eyes, mouthlike, 1.0))
    # Under the jaw the neck lies in the face's shadow: a neck texel much brighter than the face
    # is a collar, which passes the skin test in a grey photo or under warm light.
    neck_luma = smoothstep((NECK_MAX_LUMA - luma / jnp.maximum(stats.y, 1e-3)) / NECK_LUMA_SOFT)
    w = w * jnp.where(per_texel[..., 6] > 0.5, jnp.where(enough, neck_luma, 1.0), 1.0)
    # Above the eyes hair is kept whatever its colour, but not what is behind the head: where
    # the fitted skull reaches beyond the person's outline the photo shows the background.
    w = w * jnp.where(per_texel[..., 5] > 0.5, on_person(person, to_crop, pos), 1.0)

    # The light, on well-seen skin of the face away from the lips (strided subset); the skin
    # test and the hair use the photo's own colours, everything after it the de-lit ones.
    fit = (per_texel[sub][..., 3] > 0.99) & (weight[sub] > 0.8) & (skin[sub] > 0.8)
    sh, lit = fit_sh_light(color[sub].reshape(-1, 3), n_view[sub].reshape(-1, 3), fit.ravel())
    ref = reference_shading(sh, n_view[sub].reshape(-1, 3), fit.ravel())
    gain = jnp.where(delight & lit, delight_gain(sh, ref, n_view), 1.0)  # [L, L, 3]
    color = color * gain
    skin_rgb = jnp.stack([jnp.nanmedian(jnp.where(ok, color[sub][..., k], jnp.nan))
                          for k in range(3)])

    # Mirror fill: convex combination, well-seen texels keep their own colour.
    size = w.shape[0]
    idx = jnp.maximum(mirror, 0).ravel()
    w_m = jnp.where(mirror >= 0, w.ravel()[idx].reshape(size, size), 0.0)
    pos_m = pos.reshape(-1, 2)[idx].reshape(pos.shape)
    color_m = color.reshape(-1, 3)[idx].reshape(color.shape)
    a, b = w, (1.0 - w) * w_m
    total = a + b
    fg = (a[..., None] * color + b[..., None] * color_m) / jnp.maximum(total, 1e-6)[..., None]
    # One gain for the own/mirrored mix at full size, weighted like the colours (exact where one
    # side dominates, i.e. nearly everywhere): half the full-size work of one gain per sample.
    gain_m = gain.reshape(-1, 3)[idx].reshape(gain.shape)
    gain_mix = (a[..., None] * gain + b[..., None] * gain_m) / jnp.maximum(total, 1e-6)[..., None]
    alpha = smoothstep((total - 0.3) / 0.5) * uv.covered
    return dict(pos=pos, pos_m=pos_m, a=a, b=b, total=total, alpha=alpha, fg=fg,
                skin=jnp.where(enough, skin_rgb, jnp.asarray(DEFAULT_SKIN)), weight=w,
                skin_stats=stats.as_array(), skin_found=enough, normals=normals,
                gain=gain, gain_mix=gain_mix, light=sh, light_ref=ref, light_found=lit)


class ProjectedHead(NamedTuple):
    """A fitted head in the photo: ``xy`` ``[V, 2]`` projected vertices (pixels), ``landmarks``
    ``[68, 3]`` its 3D iBUG landmarks (model frame, mm), ``head`` ``[N, 2]`` the projected
    vertices above the chin (what the hair estimate and the segmenter's crop frame)."""

    xy: np.ndarray
    landmarks: np.ndarray
    head: np.ndarray


def project_head(verts, camera: Camera, model: HeadModel) -> ProjectedHead:
    """:class:`ProjectedHead` of vertices ``[V, 3]`` seen by ``camera``."""
    verts = np.asarray(verts, np.float32)
    xy = np.asarray(project(camera, jnp.asarray(verts)))
    lms = np.asarray(landmarks(model, jnp.asarray(verts)))
    return ProjectedHead(xy, lms, xy[verts[:, 1] > lms[8, 1]])


def person_crop(image, head_xy: np.ndarray):
    """The selfie segmenter's person probability ``[N, N]`` on the square crop around the
    projected head points ``head_xy`` ``[N, 2]`` (:func:`~avatar_jax.texture.hair.head_roi`, the
    crop the hair estimate makes of the same points) and the ``[2, 3]`` image -> crop pixel map.
    A head that does not project (NaN, or fewer than 3 points) is all person."""
    from avatar_jax.landmarks.mediapipe import crop, roi_to_image_matrix

    head = np.asarray(head_xy, np.float64)
    if len(head) < 3 or not np.all(np.isfinite(head)):
        return np.ones((SEGMENTER_SIZE, SEGMENTER_SIZE), np.float32), np.eye(2, 3)
    roi = head_roi(head)
    person = person_probability(crop(image, roi, SEGMENTER_SIZE, cv2.BORDER_REPLICATE))
    return person, cv2.invertAffineTransform(roi_to_image_matrix(roi, SEGMENTER_SIZE, -0.5))


def on_person(person, to_crop, pos):
    """``[L, L]`` in [0, 1]: how surely the photo positions ``pos`` ``[L, L, 2]`` show the person
    (1 outside the segmenter's crop, which holds the whole head)."""
    p = pos @ to_crop[:, :2].T + to_crop[:, 2]
    n = person.shape[0]
    inside = jnp.all((p >= 0.0) & (p <= n - 1.0), axis=-1)
    prob = bilinear_sample(person[..., None], p)[..., 0]
    return jnp.where(inside, smoothstep((prob - PERSON_MIN) / 0.4), 1.0)


def _soften(alpha: np.ndarray, covered: np.ndarray, radius: int) -> np.ndarray:
    """``min(alpha, box-blurred alpha)``, the blur normalised over covered texels only."""
    k = (2 * radius + 1,) * 2
    cov = covered.astype(np.float32)
    blurred = cv2.blur(alpha * cov, k) / np.maximum(cv2.blur(cov, k), 1e-6)
    return np.minimum(alpha, blurred)


def drop_neck_islands(alpha: np.ndarray, texel_xy: np.ndarray, jaw_xy: np.ndarray) -> np.ndarray:
    """``alpha`` ``[L, L]`` without its islands that lie wholly below the jaw line.

    ``texel_xy`` ``[L, L, 2]``: the texels' model-frame x and height (mm); ``jaw_xy`` ``[17, 2]``:
    the jaw landmarks' (iBUG 0-16, ear to ear through the chin). The neck the photo shows is
    continuous with the face over the jaw; a patch of the neck that passed the skin test but is
    cut off from the face is the shirt collar (light collars pass the colour test), and the
    fill replaces it.
    """
    count, labels = cv2.connectedComponents((alpha > ISLAND_ALPHA).astype(np.uint8), connectivity=8)
    if count <= 1:
        return alpha
    order = np.argsort(jaw_xy[:, 0])
    jaw_height = np.interp(texel_xy[..., 0], jaw_xy[order, 0], jaw_xy[order, 1])
    above = np.zeros(count, bool)
    above[labels[texel_xy[..., 1] >= jaw_height]] = True
    above[0] = True  # the background label
    return np.where(above[labels], alpha, 0.0).astype(alpha.dtype)


def fill_vertex_colors(laplacian: sp.csr_matrix, known: np.ndarray, values: np.ndarray,
                       decay_edges: float = FILL_DECAY_EDGES) -> np.ndarray:
    """Screened harmonic extension of per-vertex ``values`` ``[V, C]`` from ``known`` ``[V]``.

    Solves ``(L + I / decay_edges²) x = 0`` on the unknown vertices with ``x = values`` on the
    known ones (L = graph Laplacian): smooth, equal to the data at the border of the known
    set, and decaying to 0 over about ``decay_edges`` edges away from it.
    """
    known = np.asarray(known, bool)
    x = np.where(known[:, None], values, 0.0)
    unknown = ~known
    if not known.any() or not unknown.any():
        return x
    a = laplacian[unknown][:, unknown] + sp.identity(int(unknown.sum())) / decay_edges ** 2
    rhs = -(laplacian[unknown][:, known] @ x[known])
    x[unknown] = spla.splu(a.tocsc()).solve(np.ascontiguousarray(rhs))
    return x


@jax.jit
def _interpolate(values, uv, triangles):
    """Per-vertex ``values`` ``[V, C]`` -> texels ``[L, L, C]`` by barycentric interpolation."""
    corners = triangles[jnp.maximum(uv.tri_id, 0)]
    return jnp.einsum("hwk,hwkc->hwc", uv.bary(), values[corners])


def bake_texture(image, verts, camera: Camera, model: HeadModel, size: int = 2048, *,
                 plan: BakePlan | None = None, hair: bool = True, delight: bool = True,
                 diagnostics: dict | None = None) -> np.ndarray:
    """Complete ``[S, S, 3]`` uint8 RGB texture for a fitted head seen in a photo.

    Args:
      image: ``[H, W, 3]`` uint8 RGB photo.
      verts: ``[V, 3]`` fitted mesh in the model frame (mm), e.g. with hole caps
        (:func:`avatar_jax.texture.caps.extend_vertices`).
      camera: the fitted camera (unbatched).
      model: the head model matching ``verts`` (e.g. ``cap_holes(model)[0]``).
      size: texture side S (>= 16).
      plan: :func:`bake_plan` of ``(model, size)`` (built on first use otherwise).
      hair: paint the unseen scalp with the photo's hair (:mod:`avatar_jax.texture.hair`) where
        the photo shows enough of it; False (or no hair found): the skin fill everywhere.
      delight: divide the photo's shading out (:mod:`avatar_jax.texture.delight`: an SH light
        fitted on the face skin), so the avatar can be lit anew; False keeps the photo's light.
      diagnostics: if a dict, filled with the half-resolution photo positions ``pos`` ``[L, L, 2]``,
        ``weight``, ``alpha``, ``fill``
        maps, the ``skin`` colour and ``skin_stats`` (:class:`~avatar_jax.texture.skin.SkinStats`),
        the ``hair`` (:class:`~avatar_jax.texture.hair.HairEstimate`), the fitted ``light``
        (``[9, 3]`` view-space SH, :mod:`avatar_jax.texture.delight`), its
        ``light_ref`` ``[3]`` and ``light_found``, the half-resolution de-lighting ``gain``
        ``[L, L, 3]`` (1 with ``delight=False``) and per-stage wall ``timings`` (seconds:
        ``project``, ``fill``, ``compose``).
    """
    t0 = time.perf_counter()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if np.shape(verts) != tuple(model.neutral.shape):
        raise ValueError(f"verts must have shape {tuple(model.neutral.shape)}, "
                         f"got {np.shape(verts)}")
    plan = plan or bake_plan(model, size)
    if plan.size != size:
        raise ValueError(f"plan is for size {plan.size}, not {size}")
    low = plan.uv_low
    h, w = image.shape[:2]
    bucket = (-h % PAD_TO, -w % PAD_TO)
    padded = cv2.copyMakeBorder(image, 0, bucket[0], 0, bucket[1], cv2.BORDER_REPLICATE)
    image_f = jnp.asarray(padded, jnp.float32) / 255.0
    seen = project_head(verts, camera, model)
    person, to_crop = person_crop(image, seen.head)
    out = _foreground(image_f, jnp.asarray([h, w], jnp.float32), jnp.asarray(verts, jnp.float32),
                      camera, model, low, plan.mirror_low, plan.skin_exempt, jnp.asarray(bool(delight)),
                      jnp.asarray(person, jnp.float32), jnp.asarray(to_crop, jnp.float32))
    out = {k: np.asarray(v) for k, v in out.items()}
    t1 = time.perf_counter()
    covered = np.asarray(low.covered)
    alpha = _soften(out["alpha"], covered, radius=2)
    texel_xy = np.asarray(_interpolate(jnp.asarray(verts[:, :2], jnp.float32), low, model.triangles))
    alpha = drop_neck_islands(alpha, texel_xy, seen.landmarks[:17, :2])

    # Skin fill on the mesh: known where the vertex's neighbourhood is foreground.
    skin = out["skin"].astype(np.float64)
    shade = 1.0 - 0.15 * np.clip(-out["normals"][:, 1], 0.0, 1.0)  # downward-facing: darker
    base = shade[:, None] * skin[None]
    k = (5, 5)
    cov = covered.astype(np.float32)
    alpha_v = (cv2.blur(alpha * cov, k) / np.maximum(cv2.blur(cov, k), 1e-6)).ravel()
    fg_v = (cv2.blur(out["fg"] * (alpha * cov)[..., None], k)
            / np.maximum(cv2.blur(alpha * cov, k), 1e-6)[..., None]).reshape(-1, 3)
    known = alpha_v[plan.vertex_texel] > 0.9
    offset = fill_vertex_colors(plan.laplacian, known, fg_v[plan.vertex_texel] - base)
    # The hair is blended over the corrected skin fill, not corrected itself: the correction
    # would carry the photo's forehead skin far up into the scalp.
    found = _photo_hair(image, verts, camera, model, plan.scalp, out, seen, person) if hair else NO_HAIR
    hair_v = plan.scalp[:, None] * found.present
    vertex_fill = (1.0 - hair_v) * (base + offset) + hair_v * shade[:, None] * found.color[None]
    fill = np.asarray(_interpolate(jnp.asarray(vertex_fill, jnp.float32), low, model.triangles))
    c_own = alpha * out["a"] / np.maximum(out["total"], 1e-6)
    c_mir = alpha * out["b"] / np.maximum(out["total"], 1e-6)
    t2 = time.perf_counter()
    gain = out["gain_mix"] if delight else None
    texture = _compose(image, size, out["pos"], out["pos_m"], c_own, c_mir, fill,
                       strand_contrast(plan.strands, found.color) if found.present else None, gain)
    if diagnostics is not None:
        diagnostics.update(pos=out["pos"], weight=out["weight"], alpha=alpha, fill=fill, skin=out["skin"], hair=found,
                           light=out["light"], light_ref=out["light_ref"], light_found=bool(out["light_found"]),
                           gain=out["gain"], skin_stats=SkinStats.from_array(out["skin_stats"]),
                           timings={"project": t1 - t0, "fill": t2 - t1,
                                    "compose": time.perf_counter() - t2})
    return texture


def _photo_hair(image, verts, camera: Camera, model: HeadModel, scalp: np.ndarray,
                out: dict, seen: ProjectedHead, person: np.ndarray) -> HairEstimate:
    """The photo's hair (:func:`~avatar_jax.texture.hair.estimate_hair`), probed at the scalp
    vertices that face the camera; no hair where the skin statistics were not found. ``person``:
    :func:`person_crop` of ``seen.head``, the crop the estimate makes."""
    if not bool(out["skin_found"]):
        return NO_HAIR
    view = np.asarray(transform(camera, jnp.asarray(verts, jnp.float32)))
    normals = out["normals"] @ np.asarray(rotation_matrix(camera.rotvec)).T
    facing = np.sum(normals * -view, -1) / np.maximum(np.linalg.norm(view, axis=-1), 1e-6)
    probes = (scalp > 0.9) & (facing > 0.3)
    face_xy = np.asarray(project(camera, jnp.asarray(seen.landmarks[:27])))
    return estimate_hair(image, seen.head, face_xy, seen.xy[probes], float(seen.xy[int(model.nose_tip), 1]),
                         SkinStats.from_array(out["skin_stats"]), person)


def _compose(image, size, pos, pos_m, c_own, c_mir, fill, gain=None, delight=None) -> np.ndarray:
    """Full-size uint8 blend ``c_own * photo(pos) + c_mir * photo(pos_m) + rest * fill``, the
    fill times ``gain`` ``[S, S, 3]`` uint8 / 128 (the hair strands) if given, the photo's part
    times the half-resolution de-lighting gain ``delight`` ``[L, L, 3]`` if given."""
    up = functools.partial(cv2.resize, dsize=(size, size), interpolation=cv2.INTER_LINEAR)
    maps = up(np.concatenate([pos, pos_m], -1).astype(np.float32))
    coef = up(np.stack([c_own, c_mir], -1).astype(np.float32))
    own = cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    mir = cv2.remap(image, maps[..., 2], maps[..., 3], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    fill_u8 = up(np.clip(fill * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if gain is not None:
        fill_u8 = cv2.multiply(fill_u8, gain, scale=1.0 / 128.0)
    # blendLinear normalises by the weight sum: first the photo's own/mirrored mix, then that
    # against the skin fill with weights alpha = c_own + c_mir and 1 - alpha.
    c0, c1 = np.ascontiguousarray(coef[..., 0]), np.ascontiguousarray(coef[..., 1])
    alpha = c0 + c1
    fg = cv2.blendLinear(own, mir, c0, c1)
    if delight is not None:
        fg = cv2.multiply(fg, up(delight.astype(np.float32)), dtype=cv2.CV_8U)
    return cv2.blendLinear(fg, fill_u8, alpha, np.clip(1.0 - alpha, 0.0, 1.0))
