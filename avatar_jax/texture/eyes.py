"""Clean eyes on the eye caps: sclera, the photo's iris colour, pupil, no eyelid skin.

The mesh's eye openings are closed by caps (:mod:`avatar_jax.texture.caps`) that the bake
textures from the photo like any other surface. The fitted opening is usually a little larger
than the photo's (the lids are thin and the fit is coarse), so the photo's lids, lashes and lid
shadow land on the caps, and the iris shows only where the photo's lids leave it.

:func:`paint_eyes` instead draws a clean eye **into a copy of the photo**, inside each cap's
projected rim (the only photo pixels a cap texel samples that no lid texel does): a sclera in the
photo's sclera colour, an iris disc at MediaPipe's iris centre with its radius and the photo's
iris colour (darker limbal ring, faint radial fibres), a pupil. The bake then projects it onto the
caps as usual (mirroring included), so the gaze is the photo's, and since the caps follow their
rims in every morph target the painted eye closes with the lids when the avatar blinks.
"""

from __future__ import annotations

import dataclasses

import cv2
import jax.numpy as jnp
import numpy as np

from avatar_jax.geometry.camera import project
from avatar_jax.landmarks.mediapipe import EYE_CONTOUR_IDS_263, EYE_CONTOUR_IDS_33

IRIS_FIRST = (468, 473)  # iris centre of the 33/133 eye and of the 362/263 eye, then 4 edge points
DEFAULT_SCLERA = (0.86, 0.83, 0.8)
DEFAULT_IRIS = (0.35, 0.24, 0.16)
MIN_SCLERA_Y = 0.68
PUPIL_FRACTION = 0.38  # pupil radius / iris radius
PUPIL_RGB = (0.03, 0.03, 0.035)
LIMBUS = 0.55  # iris colour factor at its rim (the dark limbal ring)
LID_SHADOW = 0.7  # sclera brightness under the upper lid
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class EyeObservation:
    """One eye in the photo (pixels; RGB in [0, 1])."""

    centre: np.ndarray  # [2] iris centre
    radius: float  # iris radius
    iris_rgb: np.ndarray  # [3]
    sclera_rgb: np.ndarray  # [3]


def _eyelid_polygon(landmarks478: np.ndarray, ids) -> np.ndarray:
    """``[16, 2]`` the photo's eye opening: lower lid corner to corner, then the upper lid back."""
    ids = list(ids[:16])
    return landmarks478[ids[:9] + ids[9:16][::-1], :2].astype(np.float32)


def observe_eyes(image: np.ndarray, landmarks478: np.ndarray) -> tuple[EyeObservation, EyeObservation]:
    """Both eyes' iris position, size and colour and the sclera colour from a photo.

    Args:
      image: ``[H, W, 3]`` uint8 RGB.
      landmarks478: ``[478, >=2]`` MediaPipe points with iris (pixels).

    The colours are medians over the photo's eye opening (the eyelid contour): the iris over the
    ring 0.45-0.9 of its radius (pupil and rim excluded) minus the brightest tenth (catchlights),
    the sclera over the opening outside 1.15 radii, its brighter half (lashes and lid shadow are
    darker), lifted to a luminance of at least :data:`MIN_SCLERA_Y`. Too few pixels:
    :data:`DEFAULT_IRIS` / :data:`DEFAULT_SCLERA`.
    """
    lms = np.asarray(landmarks478, np.float64)
    if lms.ndim != 2 or lms.shape[0] < 478 or lms.shape[1] < 2:
        raise ValueError(f"observe_eyes: need [478, 2+] landmarks with iris, got {lms.shape}")
    h, w = image.shape[:2]
    rgb = image.astype(np.float32) / 255.0
    out = []
    for first, ids in zip(IRIS_FIRST, (EYE_CONTOUR_IDS_33, EYE_CONTOUR_IDS_263)):
        centre = lms[first, :2]
        radius = float(np.mean(np.linalg.norm(lms[first + 1:first + 5, :2] - centre, axis=1)))
        poly = _eyelid_polygon(lms, ids)
        x0, y0 = np.floor(poly.min(0)).astype(int) - 1
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        mask = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
        cv2.fillPoly(mask, [np.round(poly - (x0, y0)).astype(np.int32)], 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r = np.hypot(xx - centre[0], yy - centre[1]) / max(radius, 1e-3)
        px = rgb[y0:y1, x0:x1]
        lum = px @ np.float32([0.299, 0.587, 0.114]) if px.size else np.zeros(mask.shape)
        ring = (mask > 0) & (r > 0.45) & (r < 0.9)
        iris = DEFAULT_IRIS
        if ring.sum() >= 8:
            keep = ring & (lum <= np.quantile(lum[ring], 0.9))
            iris = np.median(px[keep], 0)
        white = (mask > 0) & (r > 1.15)
        sclera = DEFAULT_SCLERA
        if white.sum() >= 8:
            keep = white & (lum >= np.median(lum[white]))
            sclera = np.median(px[keep], 0)
            # A shadowed photo sclera reads as grey on a relit avatar: lift it to a white's level.
            sclera = sclera * max(1.0, MIN_SCLERA_Y / max(float(sclera @ np.float32([0.299, 0.587, 0.114])), 1e-3))
        out.append(EyeObservation(centre, radius, np.asarray(iris, np.float32), np.asarray(sclera, np.float32)))
    return out[0], out[1]


def _eye_patch(shape: tuple[int, int], centre, radius: float, eye: EyeObservation, top: float,
               bottom: float) -> np.ndarray:
    """``[h, w, 3]`` float eye drawn at :data:`SUPERSAMPLE`² samples per pixel, box-filtered; the
    patch's pixel centres are at integer coordinates, ``centre`` in the same frame; ``top`` /
    ``bottom`` the rim's vertical extent there (for the lid shadow)."""
    h, w = shape
    s = SUPERSAMPLE
    yy, xx = (np.mgrid[0:h * s, 0:w * s] + 0.5) / s - 0.5
    r = np.hypot(xx - centre[0], yy - centre[1]) / max(radius, 1e-3)
    t = np.clip((yy - top) / max(bottom - top, 1e-3), 0.0, 1.0)
    shade = LID_SHADOW + (1.0 - LID_SHADOW) * np.clip(t / 0.45, 0.0, 1.0)  # darker under the upper lid
    img = eye.sclera_rgb * shade[..., None]
    theta = np.arctan2(yy - centre[1], xx - centre[0])
    fibres = 1.0 + 0.08 * np.sin(23.0 * theta) * np.sin(7.0 * theta + 1.3)
    limbus = 1.0 - (1.0 - LIMBUS) * np.clip((r - 0.7) / 0.3, 0.0, 1.0)
    iris = eye.iris_rgb * (limbus * fibres * (0.85 + 0.15 * shade))[..., None]
    img = np.where((r < 1.0)[..., None], iris, img)
    img = np.where((r < PUPIL_FRACTION)[..., None], np.float32(PUPIL_RGB), img)
    return img.reshape(h, s, w, s, 3).mean((1, 3))


def paint_eyes(image: np.ndarray, rims_px: list[np.ndarray], eyes: tuple[EyeObservation, ...]) -> np.ndarray:
    """A copy of ``image`` ``[H, W, 3]`` uint8 with a clean eye drawn inside each projected rim.

    Args:
      rims_px: per eye cap, the projected rim loop ``[n, 2]`` (pixels), any order of the caps.
      eyes: :func:`observe_eyes`; each rim gets the eye whose iris centre is nearest its centroid.
    """
    out = image.copy()
    h, w = image.shape[:2]
    for rim in rims_px:
        rim = np.asarray(rim, np.float32)
        if rim.ndim != 2 or rim.shape[1] != 2 or len(rim) < 3:
            raise ValueError(f"paint_eyes: each rim must be [n >= 3, 2], got {rim.shape}")
        eye = min(eyes, key=lambda e: np.linalg.norm(e.centre - rim.mean(0)))
        x0, y0 = np.floor(rim.min(0)).astype(int) - 1
        x1, y1 = np.ceil(rim.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        # One pixel beyond the rim: the cap's border texels sample it bilinearly.
        cv2.fillPoly(mask, [np.round(rim - (x0, y0)).astype(np.int32)], 1)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
        patch = _eye_patch(mask.shape, eye.centre - (x0, y0), eye.radius, eye, rim[:, 1].min() - y0,
                           rim[:, 1].max() - y0)
        region = out[y0:y1, x0:x1]
        region[mask] = np.clip(patch[mask] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def eye_rims_px(verts, loops, camera, nose_tip: int) -> list[np.ndarray]:
    """Projected rims ``[n, 2]`` of the cap loops above the nose tip (the eyes; the mouth is below).

    ``verts`` ``[V, 3]`` the fitted mesh (model frame, mm), ``loops`` the caps' rim loops
    (:class:`~avatar_jax.texture.caps.HoleCaps`), ``camera`` the fitted camera.
    """
    verts = np.asarray(verts, np.float32)
    eyes = [np.asarray(loop) for loop in loops if verts[np.asarray(loop), 1].mean() > verts[nose_tip, 1]]
    return [np.asarray(project(camera, jnp.asarray(verts[loop]))) for loop in eyes]
