"""Encoders behind one interface: images and detected faces -> features ``[B, D]`` for the decoder.

- ``"dlib"``: the paper's kind of encoder, a frozen face-recognition network (dlib's ResNet,
  :mod:`avatar_jax.regress.dlib_resnet`) on a 150x150 chip aligned from five of the 68 points:
  128-D.
- ``"mesh"``: MediaPipe's 478-point mesh normalised for pose and scale
  (:mod:`avatar_jax.regress.features`): 1434-D.
- ``"both"``: the two concatenated.

``mask_eyes`` (dlib part): the paper's eye masking, which it used because its renders had no
eye models: each eye's region (its six points' hull, grown by :data:`EYE_MASK_GROW` of the eye's
width) is painted over with the median colour of the skin around it before the chip is cut, in
training and at inference alike (the regressor remembers it in its ``extras``).

:func:`regress` runs a trained :class:`~avatar_jax.regress.train.Regressor` on a photo's faces.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from avatar_jax.regress import dlib_resnet, features
from avatar_jax.regress.features import MESH_POINTS

ENCODERS = ("dlib", "mesh", "both")
EYE_MASK_GROW = 0.35
EYES = (slice(36, 42), slice(42, 48))  # iBUG-68 points of each eye


def _check_encoder(encoder: str) -> None:
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; expected one of {ENCODERS}")


def mask_eye_regions(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """A copy of ``image`` ``[H, W, 3]`` uint8 with both eye regions (from ``landmarks68``
    ``[68, 2]``) filled with the median colour of a ring of skin around each."""
    import cv2

    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    for eye in EYES:
        pts = np.asarray(landmarks68[eye], np.float64)
        grow = max(1, int(round(EYE_MASK_GROW * np.linalg.norm(pts[0] - pts[3]))))
        region = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(region, np.round(pts).astype(np.int32), 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
        region = cv2.dilate(region, kernel)
        ring = cv2.dilate(region, kernel).astype(bool) & ~region.astype(bool)
        if ring.any():
            out[region.astype(bool)] = np.median(out[ring].reshape(-1, out.shape[-1]), 0).astype(np.uint8)
    return out


def dlib_features(images, landmarks68, params=None, mask_eyes: bool = False) -> np.ndarray:
    """``[B, 128]`` dlib descriptors of ``images`` (a sequence of ``[H, W, 3]`` uint8) at their
    ``[B, 68, 2]`` points; NaN rows where a point is missing. ``mask_eyes``: see the module."""
    landmarks68 = np.asarray(landmarks68, np.float32)
    if landmarks68.ndim != 3 or landmarks68.shape[1:] != (68, 2) or len(landmarks68) != len(images):
        raise ValueError(f"dlib_features: landmarks68 must be [B = {len(images)}, 68, 2], got {landmarks68.shape}")
    out = np.full((len(images), 128), np.nan, np.float32)
    ok = [i for i in range(len(images)) if np.all(np.isfinite(landmarks68[i]))]
    if ok:
        params = params if params is not None else dlib_resnet.load_dlib_resnet()
        prepare = mask_eye_regions if mask_eyes else (lambda image, _: image)
        chips = np.stack([dlib_resnet.align_chip(prepare(images[i], landmarks68[i]),
                                                 dlib_resnet.points5_from_ibug68(landmarks68[i])) for i in ok])
        out[ok] = np.asarray(dlib_resnet.face_descriptor(params, chips))
    return out


def encode(encoder: str, *, images=None, landmarks68=None, mesh478=None, template=None,
           dlib_params=None, mask_eyes: bool = False) -> np.ndarray:
    """Features ``[B, D]`` of one encoder (NaN rows where its input is missing).

    ``images`` + ``landmarks68`` ``[B, 68, 2]`` feed "dlib"; ``mesh478`` ``[B, 478, 3]`` +
    ``template`` ``[478, 3]`` feed "mesh"; "both" needs all of them. ``mask_eyes``: the dlib
    part sees the eyes painted over (see the module).
    """
    _check_encoder(encoder)
    parts = []
    if encoder in ("dlib", "both"):
        if images is None or landmarks68 is None:
            raise ValueError(f"encoder {encoder!r} needs images and landmarks68")
        parts.append(dlib_features(images, landmarks68, dlib_params, mask_eyes))
    if encoder in ("mesh", "both"):
        if mesh478 is None or template is None:
            raise ValueError(f"encoder {encoder!r} needs mesh478 and a template")
        parts.append(features.mesh_features(mesh478, template))
    return np.concatenate(parts, 1)


def regress(regressor, image: np.ndarray, faces: Sequence) -> np.ndarray:
    """``[F, V, 3]`` base shapes (mm, model frame) for the faces of one photo; a face the encoder
    cannot read (no 478-point mesh, e.g. from dlib's detector) raises ValueError."""
    return regress_faces(regressor, [image] * len(faces), faces)


def regress_faces(regressor, images: Sequence[np.ndarray], faces: Sequence) -> np.ndarray:
    """``[F, V, 3]`` base shapes for faces of several photos: ``images[i]`` holds ``faces[i]``."""
    if not faces:
        raise ValueError("regress: no faces")
    if len(images) != len(faces):
        raise ValueError(f"regress: {len(images)} images for {len(faces)} faces")
    landmarks68 = np.stack([np.asarray(f.landmarks68, np.float32) for f in faces])
    mesh = None
    if regressor.encoder in ("mesh", "both"):
        if any(f.landmarks478 is None or len(f.landmarks478) != MESH_POINTS for f in faces):
            raise ValueError(f"regress: the {regressor.encoder!r} regressor needs MediaPipe's "
                             f"{MESH_POINTS}-point mesh on every face (detect with the mediapipe backend)")
        mesh = np.stack([np.asarray(f.landmarks478, np.float32) for f in faces])
    x = encode(regressor.encoder, images=list(images), landmarks68=landmarks68, mesh478=mesh,
               template=regressor.extras.get("template"), mask_eyes=bool(regressor.extras.get("mask_eyes", False)))
    if not np.all(np.isfinite(x)):
        raise ValueError("regress: a face has missing landmarks; the encoder cannot read it")
    return np.asarray(regressor.predict(x))
