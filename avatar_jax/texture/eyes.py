"""Clean eyes on the eye caps: sclera, the photo's iris colour, pupil, no eyelid skin.

The mesh's eye openings are closed by caps (:mod:`avatar_jax.texture.caps`) that the bake
textures from the photo like any other surface. The fitted opening is usually a little larger
than the photo's (the lids are thin and the fit is coarse), so the photo's lids, lashes and lid
shadow land on the caps, and the iris shows only where the photo's lids leave it.

:func:`paint_eye_caps` instead paints a clean eye on the eye caps' texels after the bake: each
texel's photo position (the bake's projection) is coloured by an analytic eye drawn in photo
pixels, a sclera in the photo's sclera colour (darker under the upper lid), an iris disc at
MediaPipe's iris centre with its radius and the photo's iris colour (darker limbal ring, faint
radial fibres) and a pupil. Every cap texel gets it, seen or not (no lid skin, no fill, no mirror
seam), so the gaze is the photo's, and since the caps follow their rims in every morph target the
eye closes with the lids when the avatar blinks.
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


def eye_colour(px: np.ndarray, eye: EyeObservation, top: float, bottom: float) -> np.ndarray:
    """``[..., 3]`` RGB in [0, 1] of the analytic eye at photo positions ``px`` ``[..., 2]``;
    ``top`` / ``bottom`` the projected rim's vertical extent (pixel rows, for the lid shadow)."""
    d = px - eye.centre
    r = np.hypot(d[..., 0], d[..., 1]) / max(eye.radius, 1e-3)
    t = np.clip((px[..., 1] - top) / max(bottom - top, 1e-3), 0.0, 1.0)
    shade = LID_SHADOW + (1.0 - LID_SHADOW) * np.clip(t / 0.45, 0.0, 1.0)  # darker under the upper lid
    theta = np.arctan2(d[..., 1], d[..., 0])
    fibres = 1.0 + 0.08 * np.sin(23.0 * theta) * np.sin(7.0 * theta + 1.3)
    limbus = 1.0 - (1.0 - LIMBUS) * np.clip((r - 0.7) / 0.3, 0.0, 1.0)
    img = eye.sclera_rgb * shade[..., None]
    iris = eye.iris_rgb * (limbus * fibres * (0.85 + 0.15 * shade))[..., None]
    img = np.where((r < 1.0)[..., None], iris, img)
    return np.where((r < PUPIL_FRACTION)[..., None], np.float32(PUPIL_RGB), img)


def cap_loop_map(model, caps, uv_low) -> np.ndarray:
    """``[L, L]`` int8: the caps' loop index of each texel of ``uv_low`` (-1: not a cap).

    ``model`` the capped model, ``caps`` its :class:`~avatar_jax.texture.caps.HoleCaps`."""
    # A cap vertex belongs to the loop of its largest rim weight; a triangle to its vertices' loop.
    loop_of = np.full(model.num_vertices, -1)
    for k, loop in enumerate(caps.loops):
        loop_of[np.asarray(loop)] = k
    loop_of[caps.num_base:] = loop_of[np.argmax(np.asarray(caps.weights), axis=1)]
    tris = np.asarray(model.triangles)
    tri_loop = np.where(tris.max(1) >= caps.num_base, loop_of[tris].max(1), -1)  # caps use a cap vertex
    tri_id = np.asarray(uv_low.tri_id)
    return np.where(tri_id >= 0, tri_loop[np.maximum(tri_id, 0)], -1).astype(np.int8)


@dataclasses.dataclass(frozen=True)
class CapBlock:
    """The full-size texels of one cap: the bounding block of its half-resolution texels in a
    ``[S, S]`` texture, each texel's centre in half-resolution coordinates (the bake's
    upsampling) and which of the block's texels belong to the cap."""

    rows: slice
    cols: slice
    gx: np.ndarray  # [h, w] float32
    gy: np.ndarray  # [h, w] float32
    mine: np.ndarray  # [h, w] bool

    def up(self, low: np.ndarray, mode: int = cv2.INTER_LINEAR) -> np.ndarray:
        """A half-resolution map ``[L, L, ...]`` sampled at the block's full-size texels."""
        return cv2.remap(np.ascontiguousarray(low), self.gx, self.gy, mode, borderMode=cv2.BORDER_REPLICATE)

    def paint(self, texture: np.ndarray, colour: np.ndarray) -> None:
        """Write ``colour`` ``[h, w, 3]`` RGB in [0, 1] into ``texture``'s cap texels, in place."""
        block = texture[self.rows, self.cols]
        block[self.mine] = np.clip(colour[self.mine] * 255.0 + 0.5, 0, 255).astype(np.uint8)


def cap_block(loop_map: np.ndarray, loop: int, size: int) -> CapBlock | None:
    """The :class:`CapBlock` of cap ``loop`` in :func:`cap_loop_map` ``loop_map`` ``[L, L]`` for an
    ``[S, S]`` texture, ``S = size``; None when the cap has no texel."""
    rows, cols = np.nonzero(loop_map == loop)
    if len(rows) == 0:
        return None
    r0, r1 = 2 * rows.min(), min(2 * rows.max() + 2, size)
    c0, c1 = 2 * cols.min(), min(2 * cols.max() + 2, size)
    gy, gx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    gx, gy = (gx + 0.5) / 2 - 0.5, (gy + 0.5) / 2 - 0.5
    mine = cv2.remap((loop_map == loop).astype(np.uint8), gx, gy, cv2.INTER_NEAREST) > 0
    return CapBlock(slice(r0, r1), slice(c0, c1), gx, gy, mine)


def check_cap_inputs(name: str, texture: np.ndarray, texel_px_low: np.ndarray, loop_map: np.ndarray) -> None:
    """ValueError naming ``name`` unless ``texel_px_low`` is ``[L, L, 2]`` and ``loop_map``
    ``[L, L]`` for the ``[S, S, 3]`` ``texture``, ``L = ceil(S / 2)``."""
    size, low = texture.shape[0], loop_map.shape[0]
    if texel_px_low.shape != (low, low, 2) or low != (size + 1) // 2:
        raise ValueError(f"{name}: texel_px_low must be [{(size + 1) // 2}]*2 + [2] for a {size}² "
                         f"texture, got {texel_px_low.shape} and a loop map of {loop_map.shape}")


def paint_eye_caps(texture: np.ndarray, texel_px_low: np.ndarray, loop_map: np.ndarray,
                   rims_px: dict[int, np.ndarray], eyes: tuple[EyeObservation, ...]) -> np.ndarray:
    """A copy of ``texture`` ``[S, S, 3]`` uint8 with a clean eye on every eye-cap texel.

    Args:
      texel_px_low: ``[L, L, 2]`` photo position of each half-resolution texel (the bake's
        projection, ``bake_texture(diagnostics=...)["pos"]``), ``L = ceil(S / 2)``.
      loop_map: ``[L, L]`` :func:`cap_loop_map`.
      rims_px: loop index -> projected rim ``[n, 2]`` of the eye caps (:func:`eye_rims_px`).
      eyes: :func:`observe_eyes`; each cap gets the eye whose iris centre is nearest its rim.
    """
    check_cap_inputs("paint_eye_caps", texture, texel_px_low, loop_map)
    out = texture.copy()
    for k, rim in rims_px.items():
        rim = np.asarray(rim, np.float32)
        block = cap_block(loop_map, k, texture.shape[0])
        if block is None:
            continue
        eye = min(eyes, key=lambda e: np.linalg.norm(e.centre - rim.mean(0)))
        px = block.up(texel_px_low.astype(np.float32))
        block.paint(out, eye_colour(px, eye, float(rim[:, 1].min()), float(rim[:, 1].max())))
    return out


def eye_rims_px(verts, loops, camera, nose_tip: int) -> dict[int, np.ndarray]:
    """Loop index -> projected rim ``[n, 2]`` of the cap loops above the nose tip (the eyes; the
    mouth is below). ``verts`` ``[V, 3]`` the fitted capped mesh (model frame, mm), ``loops``
    the caps' rim loops (:class:`~avatar_jax.texture.caps.HoleCaps`), ``camera`` the fitted camera.
    """
    verts = np.asarray(verts, np.float32)
    return {k: np.asarray(project(camera, jnp.asarray(verts[np.asarray(loop)])))
            for k, loop in enumerate(loops) if verts[np.asarray(loop), 1].mean() > verts[nose_tip, 1]}
