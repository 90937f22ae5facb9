"""A mouth interior on the mouth cap: the photo's teeth where its mouth is open, a dark cavity elsewhere.

The mesh's mouth opening is closed by a cap (:mod:`avatar_jax.texture.caps`) that the bake
textures from the photo like any other surface, and fills where the photo does not show it with
the skin fill. So a photo with a closed mouth (or a fit whose opening is larger than the photo's)
puts lip skin and skin fill on the cap, and when the animation opens the jaw the avatar shows
skin-coloured streaks inside its mouth.

:func:`paint_mouth_cap` repaints the cap's texels after the bake, from each texel's photo
position (the bake's projection): inside the photo's mouth opening (MediaPipe's inner-lip
contour) the photo (teeth, tongue, its own dark interior), elsewhere a cavity that runs
from the lips' colour, darkened, at the rim to near black at the cap's centre, with a soft edge
between the two. The cap follows its rim in every morph target, so the cavity opens and closes
with the lips. What it cannot do: teeth are painted on the cap, so a wide-open jaw stretches the
photo's teeth with it (a mesh with teeth would keep their size).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from avatar_jax.texture.eyes import cap_block, check_cap_inputs

# MediaPipe face mesh: inner lip contour (upper lip left to right, then the lower lip back) and
# outer lip contour, in the same order.
INNER_LIP_IDS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
DEFAULT_LIPS = (0.6, 0.35, 0.33)
RIM_DARKEN = 0.45  # the cavity at the rim: this times the lips' colour (the inner, shadowed lip)
CENTRE_DARKEN = 0.08  # and at the cap's centre (the throat), so a grey photo gets a grey cavity
CAVITY_DEPTH = 0.5  # rim-to-centre fraction at which the cavity reaches its darkest
FEATHER_PX = 1.5  # soft edge of the photo's opening (photo pixels)
MIN_OPENING_PX = 4.0  # an opening with less area than this (px²) counts as closed


@dataclasses.dataclass(frozen=True)
class MouthObservation:
    """The mouth in a photo (pixels; RGB in [0, 1]).

    Attributes:
      opening: ``[20, 2]`` the inner-lip polygon (:data:`INNER_LIP_IDS`).
      lips_rgb: ``[3]`` median colour of the lips (between the outer and the inner contour).
      open: whether the opening has an area of at least :data:`MIN_OPENING_PX`.
    """

    opening: np.ndarray
    lips_rgb: np.ndarray
    open: bool


def observe_mouth(image: np.ndarray, landmarks478: np.ndarray) -> MouthObservation:
    """The photo's mouth opening and lip colour from ``image`` ``[H, W, 3]`` uint8 RGB and its
    face's MediaPipe points ``landmarks478`` ``[>=468, >=2]`` (pixels)."""
    lms = np.asarray(landmarks478, np.float64)
    if lms.ndim != 2 or lms.shape[0] < 468 or lms.shape[1] < 2:
        raise ValueError(f"observe_mouth: need [468+, 2+] MediaPipe landmarks, got {lms.shape}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"observe_mouth: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    inner = lms[list(INNER_LIP_IDS), :2].astype(np.float32)
    outer = lms[list(OUTER_LIP_IDS), :2].astype(np.float32)
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(outer.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(outer.max(0)).astype(int) + 2, (w, h))
    lips = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
    cv2.fillPoly(lips, [np.round(outer - (x0, y0)).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(inner - (x0, y0)).astype(np.int32)], 0)
    px = image[y0:y1, x0:x1][lips > 0].astype(np.float32) / 255.0
    lips_rgb = np.median(px, 0) if len(px) >= 8 else np.float32(DEFAULT_LIPS)
    return MouthObservation(inner, np.asarray(lips_rgb, np.float32), bool(cv2.contourArea(inner) >= MIN_OPENING_PX))


def cavity_colour(depth: np.ndarray, lips_rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB of the cavity at ``depth`` ``[...]`` (0 at the cap's rim, 1 at its centre)."""
    k = np.clip(depth / CAVITY_DEPTH, 0.0, 1.0)[..., None]
    k = k * k * (3.0 - 2.0 * k)
    return ((1.0 - k) * RIM_DARKEN + k * CENTRE_DARKEN) * np.asarray(lips_rgb, np.float32)


def opening_weight(px: np.ndarray, mouth: MouthObservation) -> np.ndarray:
    """``[...]`` in [0, 1]: how far inside the photo's mouth opening photo positions ``px``
    ``[..., 2]`` are (1 deeper than :data:`FEATHER_PX`, 0 outside)."""
    if not mouth.open:
        return np.zeros(px.shape[:-1], np.float32)
    pad = int(np.ceil(2 * FEATHER_PX)) + 1
    x0, y0 = np.floor(mouth.opening.min(0)).astype(int) - pad
    x1, y1 = np.ceil(mouth.opening.max(0)).astype(int) + pad
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((mouth.opening - (x0, y0)) * 4).astype(np.int32)], 1, shift=2)
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    # remap wants 2-D maps of under 32k a side: any points as rows of 1024
    flat = np.asarray(px, np.float32).reshape(-1, 2)
    n = len(flat)
    grid = np.pad(flat - np.float32([x0, y0]), ((0, -n % 1024), (0, 0))).reshape(-1, 1024, 2)
    d = cv2.remap(depth, grid, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return np.clip(d.ravel()[:n] / FEATHER_PX, 0.0, 1.0).reshape(px.shape[:-1])


def paint_mouth_cap(texture: np.ndarray, image: np.ndarray, texel_px_low: np.ndarray, gain_low: np.ndarray,
                    loop_map: np.ndarray, loop: int, mouth: MouthObservation) -> np.ndarray:
    """A copy of the baked ``texture`` ``[S, S, 3]`` uint8 with the mouth interior on the mouth
    cap's texels: the photo inside its mouth opening, the cavity elsewhere.

    Inside the photo's opening the texel takes the photo's colour at its position even where the
    bake's depth test hides it: the fitted lips curl inwards over the cap, so the depth test hides
    much of what the photo shows between the lips (the teeth), while the inner-lip contour is
    measured on the photo itself.

    Args:
      image: ``[H, W, 3]`` uint8 RGB, the photo the texture was baked from.
      texel_px_low: ``[L, L, 2]`` photo position of each half-resolution texel (the bake's
        projection, ``bake_texture(diagnostics=...)["pos"]``), ``L = ceil(S / 2)``.
      gain_low: ``[L, L, 3]`` the bake's de-lighting gain (``diagnostics["gain"]``; ones when the
        photo's light is kept), applied to the photo's colours as the bake does.
      loop_map: ``[L, L]`` :func:`~avatar_jax.texture.eyes.cap_loop_map`; ``loop`` the mouth's
        loop index in it (:func:`mouth_loop`).
      mouth: :func:`observe_mouth` of the same face.
    """
    check_cap_inputs("paint_mouth_cap", texture, texel_px_low, loop_map)
    if gain_low.shape != loop_map.shape + (3,):
        raise ValueError(f"paint_mouth_cap: gain_low must be {loop_map.shape + (3,)}, got {gain_low.shape}")
    block = cap_block(loop_map, loop, texture.shape[0])
    if block is None:
        return texture
    # rim-to-centre depth of each cap texel: its distance from the island's edge in the atlas
    cap = np.pad((loop_map == loop).astype(np.uint8), 1)
    edge_dist = cv2.distanceTransform(cap, cv2.DIST_L2, 3)[1:-1, 1:-1]
    edge_dist /= max(float(edge_dist.max()), 1e-6)
    px = block.up(texel_px_low.astype(np.float32))
    photo = cv2.remap(image, px[..., 0], px[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    photo = photo.astype(np.float32) / 255.0 * block.up(gain_low.astype(np.float32))
    w = opening_weight(px, mouth)[..., None]
    out = texture.copy()
    block.paint(out, w * photo + (1.0 - w) * cavity_colour(block.up(edge_dist), mouth.lips_rgb))
    return out


def mouth_loop(verts: np.ndarray, loops, nose_tip: int) -> int | None:
    """Index of the cap loop below the nose tip (the mouth; the eyes are above), or None.
    ``verts`` ``[V, 3]`` the capped mesh (model frame, mm), ``loops`` the caps' rim loops."""
    verts = np.asarray(verts, np.float32)
    below = [k for k, loop in enumerate(loops) if verts[np.asarray(loop), 1].mean() < verts[nose_tip, 1]]
    return below[0] if len(below) == 1 else None
