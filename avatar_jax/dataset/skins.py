"""De-identified skins for synthetic renders: no photographed person's face on the rendered head.

A texture baked from a photo carries its owner's brows, eyes and lips, and a face-recognition
encoder sees that person whatever shape it is rendered on (docs/dataset.md). The skins here grow
from the *mean* of many photo-baked textures (``data/mean_skin.png``, built by
``tools/build_mean_skin.py``), whose feature detail belongs to nobody, and vary procedurally:

    atlas = skin_atlas(capped)                       # once: per-texel surface point and regions
    params = sample_skin_params(rng)                 # tone, detail, brows, lips, stubble, hair, iris
    texture = make_skin(atlas, params)               # [S, S, 3] uint8 on the capped UV layout

Everything varying over the head (blotches, pores, stubble, hair strands) is a sum of random
plane waves of the texel's 3D surface point, so it is continuous across UV seams. Regions
(brows, lips, beard, scalp, eyes, mouth) are soft masks defined on the neutral mesh from its
68 landmarks, so they follow the UV layout, not a photo. Parameters are drawn independently of
the shape they will be rendered on.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import cv2
import numpy as np

from avatar_jax._identity_cache import IdentityCache
from avatar_jax.model.head import HeadModel, landmarks
from avatar_jax.texture.caps import HoleCaps
from avatar_jax.texture.project import uv_raster

DATA = Path(__file__).resolve().parent / "data"
MEAN_SKIN = DATA / "mean_skin.png"
REFERENCE_TONE = np.array([0.72, 0.55, 0.45])  # the tone mean_skin.png was normalised to
# Skin tones from light to dark (linear-ish RGB albedo); a skin draws a point between two of them.
TONES = np.array([[0.86, 0.68, 0.58], [0.78, 0.58, 0.46], [0.66, 0.46, 0.34], [0.50, 0.33, 0.23],
                  [0.34, 0.22, 0.15]])
HAIR = np.array([[0.06, 0.05, 0.04], [0.20, 0.13, 0.08], [0.40, 0.27, 0.16], [0.66, 0.52, 0.33],
                 [0.55, 0.22, 0.10], [0.55, 0.55, 0.55]])  # black, brown, light brown, blond, red, grey
IRIS = np.array([[0.25, 0.15, 0.08], [0.40, 0.26, 0.12], [0.30, 0.40, 0.50], [0.35, 0.45, 0.30]])
REGIONS = ("brows", "lips", "beard", "scalp", "eyes", "mouth", "features")


@dataclasses.dataclass(frozen=True, eq=False)
class SkinAtlas:
    """Per-texel geometry of a capped head's UV layout at ``S x S``.

    Attributes:
      position: ``[S, S, 3]`` surface point (mm, neutral mesh) of each texel (0 where none).
      covered: ``[S, S]`` bool, texel on the layout.
      regions: name -> ``[S, S]`` float soft mask in [0, 1] (see :data:`REGIONS`).
      eye_uv: ``[2, 3]`` per eye cap: texel (col, row) of its centre and its radius in texels.
      detail: ``[S, S, 3]`` the mean skin's relative detail (mean / its blur), 1 where flat.
    """

    position: np.ndarray
    covered: np.ndarray
    regions: dict
    eye_uv: np.ndarray
    detail: np.ndarray

    @property
    def size(self) -> int:
        return self.covered.shape[0]


@dataclasses.dataclass(frozen=True)
class SkinParams:
    """One skin's draw. Colours are RGB albedo in [0, 1]; strengths in [0, 1] unless stated.

    Attributes:
      tone: skin colour. blotch / pores: amplitude of large / fine variation. features: scale
      of the mean face's feature detail (0 = none). brow_colour, brow_strength, brow_width
      (mm). lip_colour, lip_strength. stubble: beard shadow density. hair_colour,
      hair_coverage (0 = bald, 1 = full scalp). iris_colour. seed: the noise's waves.
    """

    tone: tuple
    blotch: float
    pores: float
    features: float
    brow_colour: tuple
    brow_strength: float
    brow_width: float
    lip_colour: tuple
    lip_strength: float
    stubble: float
    hair_colour: tuple
    hair_coverage: float
    iris_colour: tuple
    seed: int


def sample_skin_params(rng: np.random.Generator) -> SkinParams:
    """A random skin (independent of any shape)."""
    def between(table):
        i = rng.integers(0, len(table) - 1)
        return tuple(float(x) for x in np.clip(table[i] + rng.uniform() * (table[i + 1] - table[i])
                                               + rng.normal(0, 0.015, 3), 0.02, 0.98))

    tone = between(TONES)
    hair = tuple(float(x) for x in np.clip(HAIR[rng.integers(len(HAIR))] * rng.uniform(0.8, 1.2), 0, 1))
    lip = tuple(float(x) for x in np.clip(np.asarray(tone) * np.array([0.95, 0.62, 0.62])
                                          + rng.normal(0, 0.03, 3), 0, 1))
    iris = tuple(float(x) for x in np.clip(IRIS[rng.integers(len(IRIS))] * rng.uniform(0.7, 1.3), 0, 1))
    return SkinParams(
        tone=tone, blotch=float(rng.uniform(0.02, 0.08)), pores=float(rng.uniform(0.01, 0.05)),
        features=float(rng.uniform(0.5, 1.2)), brow_colour=hair, brow_strength=float(rng.uniform(0.4, 0.9)),
        brow_width=float(rng.uniform(3.0, 7.0)), lip_colour=lip, lip_strength=float(rng.uniform(0.3, 0.9)),
        stubble=float(rng.uniform(0.0, 0.6) if rng.uniform() < 0.35 else 0.0), hair_colour=hair,
        hair_coverage=float(rng.uniform(0.6, 1.0) if rng.uniform() < 0.85 else 0.0), iris_colour=iris,
        seed=int(rng.integers(0, 2**31 - 1)))


# ----------------------------------------------------------------------------- the atlas

_ATLASES: IdentityCache[tuple] = IdentityCache(maxsize=4)


def skin_atlas(capped: HeadModel, caps: HoleCaps, size: int = 512) -> SkinAtlas:
    """Per-texel positions and region masks of ``capped``'s UV layout (cached per model object)."""
    return _ATLASES.get((capped, caps), int(size), lambda: _atlas(capped, caps, int(size)))


def _atlas(capped: HeadModel, caps: HoleCaps, size: int) -> SkinAtlas:
    raster = uv_raster(capped, size)
    tri_id = np.asarray(raster.tri_id)
    covered = tri_id >= 0
    bary = np.clip(np.asarray(raster.bary()), 0.0, 1.0)
    tris = np.asarray(capped.triangles)[np.maximum(tri_id, 0)]
    neutral = np.asarray(capped.neutral, np.float64)
    position = np.einsum("hwk,hwkd->hwd", bary, neutral[tris]) * covered[..., None]
    on_cap = covered & (tri_id >= _base_triangles(capped, caps))
    regions, eye_uv = _regions(capped, caps, position, covered, on_cap, tri_id)
    return SkinAtlas(position, covered, regions, eye_uv, _mean_detail(size, regions["features"]))


def _base_triangles(capped: HeadModel, caps: HoleCaps) -> int:
    """Triangles of the uncapped mesh (caps' triangles come after them)."""
    tris = np.asarray(capped.triangles)
    return int(np.argmax(np.any(tris >= caps.num_base, 1))) if np.any(tris >= caps.num_base) else len(tris)


def _polyline_distance(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance ``[N]`` of ``points [N, 3]`` to the polyline ``line [L, 3]``."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(np.einsum("nld,ld->nl", points[:, None] - a, ab) / np.maximum((ab * ab).sum(-1), 1e-9), 0, 1)
    closest = a + t[..., None] * ab
    return np.sqrt(((points[:, None] - closest) ** 2).sum(-1)).min(1)


def _smooth(x, lo, hi):
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _regions(capped, caps, position, covered, on_cap, tri_id):
    lm = np.asarray(landmarks(capped, capped.neutral), np.float64)
    p = position.reshape(-1, 3)
    front = _smooth(p[:, 2], lm[0, 2] - 5.0, lm[0, 2] + 15.0)  # in front of the ears
    skin = covered.reshape(-1) & ~on_cap.reshape(-1)
    brows = np.minimum(_polyline_distance(p, lm[17:22]), _polyline_distance(p, lm[22:27]))
    lips = np.minimum(_polyline_distance(p, lm[list(range(48, 60)) + [48]]),
                      _polyline_distance(p, lm[60:68]))
    nose_y, chin_y = lm[33, 1], lm[8, 1]
    beard = (_smooth(nose_y + 2.0 - p[:, 1], 0.0, 8.0) * _smooth(p[:, 1], chin_y - 25.0, chin_y - 5.0)
             * front * _smooth(np.abs(p[:, 0]), 0.0, 1.0))
    brow_y = lm[17:27, 1].max()
    hairline = _smooth(p[:, 1], brow_y + 18.0, brow_y + 32.0)  # forehead up to the hairline
    behind = _smooth(lm[0, 2] - 10.0 - p[:, 2], 0.0, 25.0) * _smooth(p[:, 1], lm[0, 1] - 30.0, lm[0, 1])
    ears = (np.exp(-(((np.abs(p[:, 0]) - np.abs(lm[0, 0])) / 12.0) ** 2))
            * _smooth(15.0 - np.abs(p[:, 2] - lm[0, 2]), 0, 10))
    scalp = np.maximum(hairline, behind) * (1.0 - ears)
    eye_pts = lm[36:48]
    near_eyes = np.sqrt(((p[:, None] - eye_pts) ** 2).sum(-1)).min(1)
    # Not the lips: smiling photos put their teeth on the lips' texels.
    features = np.maximum.reduce([_smooth(12.0 - brows, 0, 6), _smooth(16.0 - near_eyes, 0, 6),
                                  _smooth(14.0 - np.sqrt(((p - lm[33]) ** 2).sum(-1)), 0, 6)]) * front
    shape = covered.shape
    on = skin.astype(float)
    cap_lm = on_cap.reshape(-1)
    mouth_c = lm[60:68].mean(0)
    is_mouth = cap_lm & (np.sqrt(((p - mouth_c) ** 2).sum(-1)) < 40.0)
    is_eye = cap_lm & ~is_mouth
    regions = {"brows": brows * on, "lips": lips * on, "beard": beard * on, "scalp": scalp * on,
               "eyes": is_eye.astype(float), "mouth": is_mouth.astype(float), "features": features * on}
    regions = {k: v.reshape(shape).astype(np.float32) for k, v in regions.items()}
    return regions, _eye_centres(p, is_eye, lm, shape)


def _eye_centres(p, is_eye, lm, shape) -> np.ndarray:
    """Texel (col, row) and radius of each eye cap's pupil (nearest texel to the eye's centre)."""
    rows, cols = np.divmod(np.arange(p.shape[0]), shape[1])
    out = np.zeros((2, 3))
    for k, idx in enumerate((range(36, 42), range(42, 48))):
        centre = lm[list(idx)].mean(0)
        side = is_eye & (np.sign(p[:, 0]) == np.sign(centre[0]))
        if not side.any():
            continue
        d = np.sqrt(((p[side] - centre) ** 2).sum(-1))
        i = np.flatnonzero(side)[np.argmin(d)]
        width_mm = np.linalg.norm(lm[idx.start] - lm[idx.start + 3])
        texels_per_mm = np.sqrt(side.sum()) / max(width_mm, 1.0) / 0.8
        out[k] = cols[i], rows[i], 0.22 * width_mm * texels_per_mm
    return out


def _mean_detail(size: int, features: np.ndarray) -> np.ndarray:
    import imageio.v3 as iio

    mean = iio.imread(MEAN_SKIN).astype(np.float32) / 255.0
    mean = cv2.resize(mean, (size, size), interpolation=cv2.INTER_AREA)
    low = cv2.GaussianBlur(mean, (0, 0), size / 64.0)
    detail = np.clip(mean / np.maximum(low, 1e-3), 0.3, 1.6)
    return 1.0 + (detail - 1.0) * features[..., None]


# ----------------------------------------------------------------------------- one skin

def _waves(position, rng, count, wavelength_mm, amplitude=1.0):
    """Sum of ``count`` random plane waves of the 3D point: smooth noise ``[S, S]`` in ~[-1, 1]."""
    k = rng.normal(size=(count, 3))
    # Spread wavelengths over an octave: equal ones interfere into a visible moire.
    k *= (2 * np.pi / wavelength_mm) / np.linalg.norm(k, axis=1, keepdims=True) * rng.uniform(0.6, 1.6, (count, 1))
    phase = rng.uniform(0, 2 * np.pi, count)
    out = np.zeros(position.shape[:2], np.float32)
    for i in range(count):
        out += np.sin(position @ k[i] + phase[i]).astype(np.float32)
    return amplitude * out / np.sqrt(count / 2.0)


def _strands(position, rng):
    """Hair-like streaks: high frequency across the head's front-back direction, low along it."""
    k = rng.normal(size=(24, 3)) * np.array([1.0, 0.25, 0.15])
    k = k / np.linalg.norm(k, axis=1, keepdims=True) * (2 * np.pi / rng.uniform(1.5, 4.0, (24, 1)))
    phase = rng.uniform(0, 2 * np.pi, 24)
    return np.tanh(sum(np.sin(position @ k[i] + phase[i]) for i in range(24)) / 3.0).astype(np.float32)


def make_skin(atlas: SkinAtlas, params: SkinParams) -> np.ndarray:
    """The skin ``[S, S, 3]`` uint8 of ``params`` on ``atlas``'s UV layout (deterministic)."""
    rng = np.random.default_rng(params.seed)
    # The noise is smooth at the texel scale: compute it at half resolution (a quarter the cost).
    pos = cv2.resize(atlas.position.astype(np.float32), (atlas.size // 2,) * 2, interpolation=cv2.INTER_AREA)
    r = atlas.regions
    tone = np.asarray(params.tone, np.float32)
    full = functools.partial(cv2.resize, dsize=(atlas.size,) * 2, interpolation=cv2.INTER_LINEAR)
    shade = full((1.0 + _waves(pos, rng, 12, 60.0, params.blotch)) * (1.0 + _waves(pos, rng, 32, 3.0, params.pores)))
    albedo = tone * shade[..., None] * (1.0 + (atlas.detail - 1.0) * params.features)
    brows = _smooth(params.brow_width - r["brows"], -1.5, 1.5) * params.brow_strength
    brow_colour = np.asarray(params.brow_colour) * (1.0 + 0.3 * full(_waves(pos, rng, 8, 1.5)))[..., None]
    albedo = _mix(albedo, brow_colour, brows)
    lips = _smooth(3.5 - r["lips"], -1.5, 1.5) * params.lip_strength
    albedo = _mix(albedo, np.asarray(params.lip_colour) * np.ones_like(albedo), lips)
    dots = _smooth(full(_waves(pos, rng, 16, 1.2)), 0.0, 1.0)
    albedo = albedo * (1.0 - 0.5 * params.stubble * r["beard"] * (0.5 + 0.5 * dots))[..., None]
    hair = np.asarray(params.hair_colour) * (1.0 + 0.25 * full(_strands(pos, rng)))[..., None]
    albedo = _mix(albedo, hair, r["scalp"] * params.hair_coverage)
    albedo = _eyes(albedo, atlas, params)
    albedo = _mix(albedo, np.array([0.28, 0.08, 0.08]) * np.ones_like(albedo), r["mouth"])
    albedo = np.where(atlas.covered[..., None], albedo, tone)
    return np.round(np.clip(albedo, 0.0, 1.0) * 255.0).astype(np.uint8)


def _mix(a, b, t):
    t = np.asarray(t, np.float32)[..., None]
    return a * (1.0 - t) + b * t


def _eyes(albedo, atlas: SkinAtlas, params: SkinParams):
    """Sclera on the eye caps, with an iris and a pupil around each eye's centre."""
    s = atlas.size
    rows, cols = np.mgrid[0:s, 0:s].astype(np.float32)
    out = _mix(albedo, np.array([0.82, 0.78, 0.74]) * np.ones_like(albedo), atlas.regions["eyes"])
    for col, row, radius in atlas.eye_uv:
        if radius <= 0:
            continue
        d = np.sqrt((cols - col) ** 2 + (rows - row) ** 2) / radius
        iris = _smooth(1.05 - d, 0.0, 0.1) * atlas.regions["eyes"]
        out = _mix(out, np.asarray(params.iris_colour) * np.ones_like(out), iris)
        out = _mix(out, np.full_like(out, 0.03), _smooth(0.45 - d, 0.0, 0.08) * atlas.regions["eyes"])
    return out
