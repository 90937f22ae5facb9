"""Hair for the parts of the head a photo does not show: where it grows, its colour, its strands.

Three pure steps, used by :func:`avatar_jax.texture.bake.bake_texture`'s fill:

1. **Hairline on the model** (:func:`scalp_weights`): a per-vertex weight in [0, 1] that is 1 on
   the scalp and the back of the head and 0 on the face, ears and neck. The hairline height is a
   piecewise-linear function of the azimuth around the head's vertical axis (high over the
   forehead, down to the brows at the temples, over the ears, low at the nape), measured from
   the brows, with a soft ramp across it.
2. **Hair in the photo** (:func:`estimate_hair`): MediaPipe's selfie segmentation
   (``selfie_segmentation.tflite``, 256², on a square crop around the projected head) gives the
   person; minus the face (the convex hull of the jaw and brow landmarks), minus skin-coloured
   pixels (the bake's skin statistics) and outside the projected head's neighbourhood it is
   hair. The person beyond the fitted skull's outline above the brows is hair whatever its
   colour (:func:`hair_volume`): where its colour differs from the skin, every pixel nearer to
   it than to the skin is hair too, which finds white and grey hair that the skin test alone
   takes for skin. The colour is the per-channel median in CIELAB; the coverage is the fraction
   of the visible scalp (projected scalp vertices) that is hair, so a bald head reads as no hair.
3. **Strands** (:func:`strand_gain`): a multiplicative gain around 1 from value noise in the
   polar coordinates of a crown axis: fine along the azimuth, coarse along the polar angle,
   so the streaks run from the crown down the head. It is a function of the 3D surface point,
   so it is continuous across UV seams and never tiles.
"""

from __future__ import annotations

import dataclasses
import functools
import threading

import cv2
import numpy as np

# Hairline knots: azimuth (degrees from the front, either side) -> height above the brows (mm).
HAIRLINE_KNOTS = ((0.0, 50.0), (35.0, 45.0), (60.0, 15.0), (78.0, -8.0), (105.0, -12.0),
                  (135.0, -95.0), (180.0, -95.0))
HAIRLINE_RAMP_MM = (-5.0, 10.0)  # weight 0 below the hairline - 5 mm, 1 above it + 10 mm
EAR_KEEP_OUT_MM = 8.0  # ears: vertices this far outside the skull's width at their height
SEGMENTER_SIZE = 256
HEAD_ROI_SCALE = 1.5  # crop side / the projected head's box side (hair volume, shoulders)
MIN_COVERAGE = 0.35  # less of the visible scalp is hair: bald (or not found), keep skin
MIN_HAIR_PIXELS = 150  # of the 256² crop
# Hair beyond the skull's outline: this many pixels of the crop, this far in CIELAB from the skin,
# is hair even where the visible scalp is skin (a high forehead, a receding hairline); fewer, or
# skin-coloured, is the fit's outline missing a bald skull by a little.
MIN_VOLUME_PIXELS = 500
MIN_VOLUME_DELTA_E = 10.0
# the hair volume's two colour clusters count as hair + background when this far apart (Delta E)
MIXTURE_DELTA_E = 15.0
MIN_BACKGROUND_PIXELS = 200


@dataclasses.dataclass(frozen=True)
class HairEstimate:
    """Hair seen in a photo.

    Attributes:
      color: ``[3]`` RGB in [0, 1] (median in CIELAB of the hair pixels; skin-like grey if none).
      coverage: fraction of the visible scalp points that are hair, in [0, 1].
      pixels: number of hair pixels (inside the mask's edge) in the segmenter's crop.
      volume: hair pixels beyond the fitted skull's outline (:func:`hair_volume`), 0 when they
        are too few or skin-coloured.
    """

    color: np.ndarray
    coverage: float
    pixels: int
    volume: int = 0

    @property
    def present(self) -> bool:
        """Enough hair on the visible scalp, or around the skull, to paint the unseen scalp with it."""
        return self.pixels >= MIN_HAIR_PIXELS and (self.coverage >= MIN_COVERAGE
                                                   or self.volume >= MIN_VOLUME_PIXELS)


NO_HAIR = HairEstimate(color=np.full(3, 0.5), coverage=0.0, pixels=0)


@dataclasses.dataclass(frozen=True)
class CropRegions:
    """``[256, 256]`` bool masks of the segmenter's crop (:func:`estimate_hair`).

    Attributes:
      face: the face (grown a little for the brows): no hair there.
      head: the projected head's neighbourhood (grown for the hair's volume): hair only there.
      skull: the projected head's own outline.
      above: the rows above the brows.
      below: the rows below the nose tip (clothing, hands).
    """

    face: np.ndarray
    head: np.ndarray
    skull: np.ndarray
    above: np.ndarray
    below: np.ndarray


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def scalp_weights(verts: np.ndarray, brows: np.ndarray) -> np.ndarray:
    """Per-vertex hair weight ``[V]`` in [0, 1] of a head ``verts`` ``[V, 3]`` (model frame, mm).

    ``brows``: ``[N, 3]`` brow landmark positions (iBUG 17-26): the hairline heights are relative
    to their mean height, the vertical axis goes through the head's depth midpoint at that height.
    """
    verts = np.asarray(verts, np.float64)
    brows = np.asarray(brows, np.float64)
    if verts.ndim != 2 or verts.shape[1] != 3 or brows.ndim != 2 or brows.shape[1] != 3:
        raise ValueError(f"verts and brows must be [N, 3], got {verts.shape} and {brows.shape}")
    brow_y = brows[:, 1].mean()
    band = np.abs(verts[:, 1] - brow_y) < 10.0
    z_mid = 0.5 * (verts[band, 2].min() + verts[band, 2].max())
    azimuth = np.degrees(np.abs(np.arctan2(verts[:, 0], verts[:, 2] - z_mid)))
    knots = np.asarray(HAIRLINE_KNOTS)
    above = verts[:, 1] - (brow_y + np.interp(azimuth, knots[:, 0], knots[:, 1]))
    lo, hi = HAIRLINE_RAMP_MM
    return _smoothstep((above - lo) / (hi - lo)) * (1.0 - _ear_mask(verts, brow_y))


def _ear_mask(verts: np.ndarray, brow_y: float) -> np.ndarray:
    """Soft ``[V]`` mask of the ears: wider than the skull (its width at the brows) below the brows."""
    band = np.abs(verts[:, 1] - brow_y) < 10.0
    skull = np.abs(verts[band, 0]).max()
    out = _smoothstep((np.abs(verts[:, 0]) - skull - EAR_KEEP_OUT_MM) / EAR_KEEP_OUT_MM)
    return out * (verts[:, 1] < brow_y)


# ----------------------------------------------------------------------------- the photo's hair

_SEGMENTER_LOCK = threading.Lock()  # one LiteRT interpreter: not reentrant


@functools.lru_cache(maxsize=1)
def _segmenter():
    from avatar_jax.landmarks.mediapipe import LiteRTModel

    return LiteRTModel("selfie_segmentation", ("activation_10",), num_threads=1)


def person_probability(patch: np.ndarray) -> np.ndarray:
    """Selfie segmentation of a ``[256, 256, 3]`` uint8 RGB crop: ``[256, 256]`` person
    probability (the model's sigmoid output)."""
    if patch.shape != (SEGMENTER_SIZE, SEGMENTER_SIZE, 3) or patch.dtype != np.uint8:
        raise ValueError(f"patch must be uint8 [{SEGMENTER_SIZE}, {SEGMENTER_SIZE}, 3], got {patch.dtype} "
                         f"{patch.shape}")
    with _SEGMENTER_LOCK:
        (prob,) = _segmenter()(patch.astype(np.float32) / 255.0)
    return prob[..., 0]


def head_roi(head_xy: np.ndarray):
    """Axis-aligned square :class:`~avatar_jax.landmarks.mediapipe.Roi` around projected head
    points ``[N, 2]`` (pixels), :data:`HEAD_ROI_SCALE` times their box, for the hair around it."""
    from avatar_jax.landmarks.mediapipe import Roi

    lo, hi = head_xy.min(0), head_xy.max(0)
    return Roi(center=(lo + hi) / 2, size=float(HEAD_ROI_SCALE * (hi - lo).max()))


def _to_crop(points: np.ndarray, roi) -> np.ndarray:
    """Image pixels ``[N, 2]`` -> crop pixels of :func:`person_probability`'s crop."""
    from avatar_jax.landmarks.mediapipe import roi_to_image_matrix

    inverse = cv2.invertAffineTransform(roi_to_image_matrix(roi, SEGMENTER_SIZE, -0.5))
    return points @ inverse[:, :2].T + inverse[:, 2]


def _polygon_mask(points: np.ndarray, dilate: int) -> np.ndarray:
    """``[256, 256]`` bool: the convex hull of crop points ``[N, 2]``, grown by ``dilate`` pixels."""
    mask = np.zeros((SEGMENTER_SIZE, SEGMENTER_SIZE), np.uint8)
    hull = cv2.convexHull(np.round(points * 4).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=2)
    if dilate > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1,) * 2))
    return mask.astype(bool)


def hair_volume(person: np.ndarray, regions: CropRegions) -> np.ndarray:
    """``[N, N]`` bool: the person beyond the skull's outline above the brows, away from the
    segmentation's edge (where the background shows through): hair or headwear, whatever its
    colour. ``person`` ``[N, N]``: the segmenter's probability."""
    inner = cv2.erode((person > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return inner & regions.head & ~regions.skull & regions.above


def volume_colour(lab: np.ndarray, volume: np.ndarray, stats) -> np.ndarray | None:
    """``[3]`` CIELAB median of the :func:`hair_volume` pixels of a crop ``lab`` ``[N, N, 3]``, or
    None when they are fewer than :data:`MIN_VOLUME_PIXELS` or within :data:`MIN_VOLUME_DELTA_E`
    of the skin's median (``stats``): then they are not known to be hair. Where loose strands let
    the background show, this median mixes both; :func:`hair_of_mixture` tells them apart."""
    if volume.sum() < MIN_VOLUME_PIXELS:
        return None
    hair_lab = np.median(lab[volume], axis=0)
    return hair_lab if np.linalg.norm(hair_lab - _lab(stats.rgb())) >= MIN_VOLUME_DELTA_E else None


def hair_of_mixture(pixels: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """``[3]`` CIELAB hair colour of ``pixels`` ``[M, 3]`` that may mix hair with background.

    Two clusters (:func:`two_means`); when their medians lie at least :data:`MIXTURE_DELTA_E`
    apart, the one farther from the ``background`` colour (or, with none known, the larger one) is
    the hair; else the pixels are one colour and their median is it."""
    labels = two_means(pixels)
    parts = [pixels[labels == k] for k in (0, 1)]
    if min(len(p) for p in parts) == 0:
        return np.median(pixels, axis=0)
    medians = [np.median(p, axis=0) for p in parts]
    if np.linalg.norm(medians[0] - medians[1]) < MIXTURE_DELTA_E:
        return np.median(pixels, axis=0)
    if background is None:
        return medians[int(len(parts[1]) > len(parts[0]))]
    return medians[int(np.linalg.norm(medians[1] - background) > np.linalg.norm(medians[0] - background))]


def two_means(points: np.ndarray, iterations: int = 10) -> np.ndarray:
    """``[M]`` labels 0 / 1 of Lloyd's 2-means on ``points`` ``[M, 3]``, started from the points
    at the 10th and 90th percentile of lightness (deterministic, unlike OpenCV's seeding)."""
    order = np.argsort(points[:, 0], kind="stable")
    centres = points[order[[len(points) // 10, (9 * len(points)) // 10]]].astype(np.float64)
    labels = np.zeros(len(points), np.int64)
    for _ in range(iterations):
        labels = np.argmin(np.linalg.norm(points[:, None, :] - centres[None], axis=-1), axis=1)
        for k in (0, 1):
            if np.any(labels == k):
                centres[k] = points[labels == k].mean(axis=0)
    return labels


def background_colour(lab: np.ndarray, person: np.ndarray, regions: CropRegions) -> np.ndarray | None:
    """``[3]`` CIELAB median of the background next to the head above the brows (the crop's
    non-person pixels there, else above the brows anywhere in the crop), or None when the
    segmenter leaves fewer than :data:`MIN_BACKGROUND_PIXELS` of them."""
    away = person < 0.5
    for where in (regions.head & ~regions.skull & regions.above & away, regions.above & away):
        if where.sum() >= MIN_BACKGROUND_PIXELS:
            return np.median(lab[where], axis=0)
    return None


def hair_mask(rgb: np.ndarray, person: np.ndarray, regions: CropRegions, stats,
              hair_lab: np.ndarray | None = None) -> np.ndarray:
    """``[N, N]`` bool hair pixels of a crop ``rgb`` ``[N, N, 3]`` float in [0, 1].

    ``person`` ``[N, N]``: segmenter probability; ``stats``: the
    :class:`~avatar_jax.texture.skin.SkinStats` of the face. Hair is the person in the head's
    neighbourhood off the face and above the nose, no skin highlight
    (:func:`~avatar_jax.texture.skin.skin_highlight`: a shiny bare scalp), that is not
    skin-coloured or, given the :func:`volume_colour` ``hair_lab``, nearer to it than to the
    skin's colour.
    """
    from avatar_jax.texture.skin import skin_highlight, skin_probability

    candidate = (person > 0.5) & regions.head & ~regions.face & ~regions.below & ~skin_highlight(rgb, stats)
    mask = candidate & (skin_probability(rgb, stats) < 0.5)
    if hair_lab is None:
        return mask
    # lightness counts half: shading and highlights change it on skin more than they change chroma
    w = np.float32([0.5, 1.0, 1.0])
    lab = _lab(rgb) * w
    nearer = (np.linalg.norm(lab - hair_lab * w, axis=-1)
              < np.linalg.norm(lab - _lab(stats.rgb()) * w, axis=-1))
    return mask | (candidate & nearer)


def estimate_hair(image: np.ndarray, head_xy: np.ndarray, face_xy: np.ndarray, scalp_xy: np.ndarray,
                  nose_y: float, stats, person: np.ndarray | None = None) -> HairEstimate:
    """Colour and coverage of the hair in ``image`` ``[H, W, 3]`` uint8 RGB.

    The colour is the CIELAB median of the hair on the skull's outline where there is enough of
    it (beyond it the background shows between loose strands), else the :func:`hair_volume`'s
    hair told from the background between its strands (:func:`hair_of_mixture`), else the median
    of all hair pixels; always away from the mask's edge, which mixes in background and skin.

    Args:
      head_xy: ``[N, 2]`` projected head vertices (above the chin), image pixels.
      face_xy: ``[27, 2]`` projected jaw and brow landmarks (iBUG 0-26): the face, where no hair
        is counted; the brows' mean row bounds the :func:`hair_volume`.
      scalp_xy: ``[P, 2]`` projected scalp vertices that face the camera: the coverage probes.
      nose_y: image row of the nose tip; nothing below it is counted (clothing).
      stats: the face's :class:`~avatar_jax.texture.skin.SkinStats` (numpy scalars).
      person: :func:`person_probability` of this crop if already run (the bake runs it first).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if np.shape(face_xy) != (27, 2):
        raise ValueError(f"face_xy must be the [27, 2] jaw and brow points, got {np.shape(face_xy)}")
    if len(head_xy) < 3 or not np.all(np.isfinite(head_xy)) or not np.all(np.isfinite(face_xy)):
        return NO_HAIR
    from avatar_jax.landmarks.mediapipe import crop

    roi = head_roi(np.asarray(head_xy, np.float64))
    patch = crop(image, roi, SEGMENTER_SIZE, cv2.BORDER_REPLICATE)
    rgb = patch.astype(np.float32) / 255.0
    regions = _regions(roi, head_xy, face_xy, nose_y)
    person = person_probability(patch) if person is None else np.asarray(person)
    volume = hair_volume(person, regions)
    lab = _lab(rgb)
    hair_lab = volume_colour(lab, volume, stats)
    mask = hair_mask(rgb, person, regions, stats, hair_lab)
    coverage = _coverage(mask, _to_crop(np.asarray(scalp_xy, np.float64).reshape(-1, 2), roi))
    volume_px = 0 if hair_lab is None else int(volume.sum())
    core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    pixels = int(core.sum())
    if pixels == 0:
        return HairEstimate(NO_HAIR.color, coverage, 0, volume_px)
    on_skull = core & regions.skull
    if on_skull.sum() >= MIN_HAIR_PIXELS:
        colour = _median_lab(rgb[on_skull])
    elif hair_lab is not None:
        colour = _lab_to_rgb(hair_of_mixture(lab[volume], background_colour(lab, person, regions)))
    else:
        colour = _median_lab(rgb[core])
    return HairEstimate(colour, coverage, pixels, volume_px)


def _regions(roi, head_xy, face_xy, nose_y) -> CropRegions:
    """The :class:`CropRegions` of the crop ``roi``: ``face_xy`` ``[27, 2]`` (jaw and brows),
    ``head_xy`` ``[N, 2]`` and ``nose_y`` in image pixels."""
    grow = max(1, round(0.03 * SEGMENTER_SIZE))
    face_crop = _to_crop(np.asarray(face_xy, np.float64), roi)
    head_crop = _to_crop(np.asarray(head_xy, np.float64), roi)
    nose_row = _to_crop(np.array([[roi.center[0], nose_y]]), roi)[0, 1]
    rows = np.broadcast_to(np.arange(SEGMENTER_SIZE, dtype=np.float64)[:, None], (SEGMENTER_SIZE,) * 2)
    return CropRegions(face=_polygon_mask(face_crop, grow), head=_polygon_mask(head_crop, 4 * grow),
                       skull=_polygon_mask(head_crop, 0), above=rows < face_crop[17:27, 1].mean(),
                       below=rows > nose_row)


def _coverage(mask: np.ndarray, probes: np.ndarray) -> float:
    """Fraction of the crop points ``[P, 2]`` inside the crop that fall on ``mask`` ``[N, N]``."""
    probes = probes[np.all(np.isfinite(probes), axis=1)]
    px = np.round(probes).astype(np.int64)
    inside = np.all((px >= 0) & (px < mask.shape[0]), axis=1)
    return float(mask[px[inside, 1], px[inside, 0]].mean()) if inside.any() else 0.0


def _lab(rgb) -> np.ndarray:
    """CIELAB ``[..., 3]`` of RGB ``[..., 3]`` in [0, 1]."""
    rgb = np.asarray(rgb, np.float32)
    return cv2.cvtColor(rgb.reshape(-1, 1, 3), cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """``[3]`` RGB in [0, 1] of one CIELAB colour ``[3]``."""
    lab = np.asarray(lab, np.float32).reshape(1, 1, 3)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB).reshape(3), 0.0, 1.0)


def _median_lab(rgb: np.ndarray) -> np.ndarray:
    """``[3]`` RGB of the per-channel median in CIELAB of colours ``[N, 3]`` in [0, 1]."""
    return _lab_to_rgb(np.median(_lab(rgb).reshape(-1, 3), axis=0))


# ----------------------------------------------------------------------------- strands

# Value-noise lattices (rows along the polar angle from the crown, columns around it) and their
# weights: fine streaks, clumps, and a low-frequency warp that makes the streaks wave.
STRAND_LATTICES = {"fine": (24, 420), "clump": (8, 96), "warp": (6, 20)}
STRAND_CONTRAST = 0.3  # gain = 1 +- this much (tanh of the noise)
STRAND_SOFTNESS = 0.6  # noise scale inside the tanh: lower is more sinusoidal, higher more binary
STRAND_SEED = 17
TABLES_VERSION = 1  # bump when scalp_weights or strand_gain change beyond their constants (disk cache)
STRAND_DARK_LUMA = 0.25  # hair darker than this gets the full contrast, lighter hair less
STRAND_MIN_CONTRAST = 0.4


def crown_axis(verts: np.ndarray, brows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``[3]`` and unit axis ``[3]`` of the strands: from the head's centre at brow height
    to the crown (top of the head, a little behind the middle), around which hair parts."""
    verts = np.asarray(verts, np.float64)
    brow_y = float(np.asarray(brows)[:, 1].mean())
    band = np.abs(verts[:, 1] - brow_y) < 10.0
    z_mid = 0.5 * (verts[band, 2].min() + verts[band, 2].max())
    centre = np.array([0.0, brow_y, z_mid])
    top = verts[:, 1].max()
    axis = np.array([0.0, top - brow_y, -0.25 * (top - brow_y)])
    return centre, axis / np.linalg.norm(axis)


def strand_gain(points: np.ndarray, weight: np.ndarray, size: int, centre: np.ndarray,
                axis: np.ndarray) -> np.ndarray:
    """``[S, S]`` uint8 gain (128 = 1) of streaks running from the crown down the scalp.

    Args:
      points: ``[L, L, 3]`` surface point of each texel of a coarser atlas (model frame, mm).
      weight: ``[L, L]`` how much hair each texel gets (0: gain 1).
      size: output side S; the polar coordinates are upsampled to it (they vary slowly) and the
        noise is evaluated at S, so the streaks are as fine as the texture.
      centre, axis: from :func:`crown_axis`.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 3 or points.shape[2] != 3 or np.shape(weight) != points.shape[:2]:
        raise ValueError(f"points must be [L, L, 3] and weight [L, L], got {points.shape}, "
                         f"{np.shape(weight)}")
    d = points - centre
    e1 = np.cross(axis, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    polar = np.arccos(np.clip(d @ axis / np.maximum(np.linalg.norm(d, axis=-1), 1e-6), -1, 1))
    azimuth = np.arctan2(d @ e2, d @ e1)
    # cos/sin, not the angle, are upsampled: the angle jumps by 2 pi across one line
    low = np.stack([polar, np.cos(azimuth), np.sin(azimuth), weight], -1).astype(np.float32)
    up = cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR)
    polar, azimuth = up[..., 0], np.arctan2(up[..., 2], up[..., 1])
    turn = (azimuth / (2 * np.pi)) % 1.0  # [0, 1) around the axis
    tables = _lattices()
    warp = _sample(tables["warp"], turn, polar)
    noise = (_sample(tables["fine"], turn + 0.004 * warp, polar)
             + 0.6 * _sample(tables["clump"], turn + 0.01 * warp, polar))
    # streaks converge at the crown: fade them where they would be finer than texels
    fade = _smoothstep(np.sin(polar) / 0.3) * np.clip(up[..., 3], 0.0, 1.0)
    gain = 1.0 + STRAND_CONTRAST * np.tanh(STRAND_SOFTNESS * noise) * fade
    g = np.clip(gain * 128.0 + 0.5, 0, 255).astype(np.uint8)
    return g


def hair_table_params() -> tuple:
    """Everything the per-model hair tables depend on besides the model (a disk-cache key)."""
    return (TABLES_VERSION, HAIRLINE_KNOTS, HAIRLINE_RAMP_MM, EAR_KEEP_OUT_MM, STRAND_LATTICES, STRAND_CONTRAST,
            STRAND_SOFTNESS, STRAND_SEED)


def strand_contrast(gain: np.ndarray, color: np.ndarray) -> np.ndarray:
    """``gain`` ``[S, S, C]`` uint8 (128 = 1) with its contrast lowered for light hair ``color``
    ``[3]``: the same relative gain would streak grey or blond hair far more visibly than dark."""
    luma = float(np.dot(np.asarray(color, np.float64), [0.299, 0.587, 0.114]))
    k = float(np.clip(STRAND_DARK_LUMA / max(luma, 1e-3), STRAND_MIN_CONTRAST, 1.0))
    if k == 1.0:
        return gain
    return cv2.addWeighted(gain, k, np.full_like(gain, 128), 1.0 - k, 0.0)


@functools.lru_cache(maxsize=1)
def _lattices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(STRAND_SEED)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in STRAND_LATTICES.items()}


def _sample(table: np.ndarray, turn: np.ndarray, polar: np.ndarray) -> np.ndarray:
    """Bicubic value noise: ``table`` ``[R, C]`` at columns ``turn`` (periodic) and rows
    ``polar / pi`` (both ``[S, S]``)."""
    rows, cols = table.shape
    x = (turn * cols).astype(np.float32)
    y = (polar / np.pi * rows).astype(np.float32)
    return cv2.remap(table, x, y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_WRAP)
