"""Apple's 52 ARKit blendshape names for the head model's expression shapes.

ARKit face capture, Live Link Face, Unreal's and three.js's face-capture examples and most avatar
platforms drive a face by these 52 names. The packaged head's 53 ICT-FaceKit shapes follow ARKit's
design (``_L`` / ``_R`` = the subject's own left / right, as ARKit's ``Left`` / ``Right``), with
two differences, both handled by :data:`ARKIT_FROM_ICT`, the one mapping table:

* ICT splits ``browInnerUp`` and ``cheekPuff`` into a left and a right shape; the ARKit shape is
  their sum (both halves at once, as ARKit's one coefficient moves both sides).
* ``tongueOut`` has no ICT shape: the packaged head has no tongue (the asset build dropped
  ICT-FaceKit's gums, teeth and tongue, ``tools/build_head_model.py``). It is exported as a morph
  target with zero deltas, so a rig that binds all 52 names finds it, and it moves nothing.

The weights go both ways: :func:`ict_from_arkit` is exact (an ARKit weight drives every ICT shape
it sums), :func:`arkit_from_ict` is the least-squares ARKit weight of a fitted ICT expression (for a
pair fitted with unequal halves, the single weight whose sum shape is closest to the fitted one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# ARKit name -> the ICT shapes whose sum it is (empty: no geometry). Order: ARFaceAnchor's
# BlendShapeLocation documentation order, as Live Link Face writes its CSV columns.
ARKIT_FROM_ICT: dict[str, tuple[str, ...]] = {
    "eyeBlinkLeft": ("eyeBlink_L",), "eyeLookDownLeft": ("eyeLookDown_L",), "eyeLookInLeft": ("eyeLookIn_L",),
    "eyeLookOutLeft": ("eyeLookOut_L",), "eyeLookUpLeft": ("eyeLookUp_L",), "eyeSquintLeft": ("eyeSquint_L",),
    "eyeWideLeft": ("eyeWide_L",),
    "eyeBlinkRight": ("eyeBlink_R",), "eyeLookDownRight": ("eyeLookDown_R",), "eyeLookInRight": ("eyeLookIn_R",),
    "eyeLookOutRight": ("eyeLookOut_R",), "eyeLookUpRight": ("eyeLookUp_R",), "eyeSquintRight": ("eyeSquint_R",),
    "eyeWideRight": ("eyeWide_R",),
    "jawForward": ("jawForward",), "jawLeft": ("jawLeft",), "jawRight": ("jawRight",), "jawOpen": ("jawOpen",),
    "mouthClose": ("mouthClose",), "mouthFunnel": ("mouthFunnel",), "mouthPucker": ("mouthPucker",),
    "mouthLeft": ("mouthLeft",), "mouthRight": ("mouthRight",),
    "mouthSmileLeft": ("mouthSmile_L",), "mouthSmileRight": ("mouthSmile_R",),
    "mouthFrownLeft": ("mouthFrown_L",), "mouthFrownRight": ("mouthFrown_R",),
    "mouthDimpleLeft": ("mouthDimple_L",), "mouthDimpleRight": ("mouthDimple_R",),
    "mouthStretchLeft": ("mouthStretch_L",), "mouthStretchRight": ("mouthStretch_R",),
    "mouthRollLower": ("mouthRollLower",), "mouthRollUpper": ("mouthRollUpper",),
    "mouthShrugLower": ("mouthShrugLower",), "mouthShrugUpper": ("mouthShrugUpper",),
    "mouthPressLeft": ("mouthPress_L",), "mouthPressRight": ("mouthPress_R",),
    "mouthLowerDownLeft": ("mouthLowerDown_L",), "mouthLowerDownRight": ("mouthLowerDown_R",),
    "mouthUpperUpLeft": ("mouthUpperUp_L",), "mouthUpperUpRight": ("mouthUpperUp_R",),
    "browDownLeft": ("browDown_L",), "browDownRight": ("browDown_R",),
    "browInnerUp": ("browInnerUp_L", "browInnerUp_R"),
    "browOuterUpLeft": ("browOuterUp_L",), "browOuterUpRight": ("browOuterUp_R",),
    "cheekPuff": ("cheekPuff_L", "cheekPuff_R"),
    "cheekSquintLeft": ("cheekSquint_L",), "cheekSquintRight": ("cheekSquint_R",),
    "noseSneerLeft": ("noseSneer_L",), "noseSneerRight": ("noseSneer_R",),
    "tongueOut": (),
}
ARKIT_NAMES: tuple[str, ...] = tuple(ARKIT_FROM_ICT)
NAMINGS = ("arkit", "ict")

__all__ = ["ARKIT_FROM_ICT", "ARKIT_NAMES", "NAMINGS", "arkit_from_ict", "arkit_sum_matrix", "blendshapes",
           "expression_weights", "ict_from_arkit"]


def arkit_sum_matrix(ict_names: Sequence[str]) -> np.ndarray:
    """``[52, Ke]`` 0/1 matrix ``S`` with ``arkit_basis = S @ ict_basis`` (a row per ARKit name).

    Raises ValueError naming the ICT shapes the table expects and ``ict_names`` lacks.
    """
    index = {n: j for j, n in enumerate(ict_names)}
    missing = sorted({n for group in ARKIT_FROM_ICT.values() for n in group} - set(index))
    if missing:
        raise ValueError(f"the expression shapes lack {missing}, which the ARKit table (avatar_jax.model.arkit) "
                         "maps; pass blendshape names 'ict' for this model")
    s = np.zeros((len(ARKIT_NAMES), len(ict_names)))
    for a, group in enumerate(ARKIT_FROM_ICT.values()):
        s[a, [index[n] for n in group]] = 1.0
    return s


def blendshapes(basis, ict_names: Sequence[str], naming: str = "arkit") -> dict[str, np.ndarray]:
    """Ordered ``{name: [V, 3] deltas}`` of ``basis`` ``[Ke, V, 3]`` (named ``ict_names``) under
    ``naming``: ``"arkit"`` (52 shapes, :data:`ARKIT_NAMES` order) or ``"ict"`` (as given)."""
    basis = np.asarray(basis)
    if naming == "ict":
        return {n: basis[j] for j, n in enumerate(ict_names)}
    _check_naming(naming)
    combined = np.einsum("ak,kvd->avd", arkit_sum_matrix(ict_names), basis).astype(basis.dtype)
    return dict(zip(ARKIT_NAMES, combined))


def ict_from_arkit(weights, ict_names: Sequence[str]) -> np.ndarray:
    """ARKit weights ``[..., 52]`` -> the ICT expression ``[..., Ke]`` that moves the mesh exactly as
    the ARKit morph targets do (a summed shape's weight drives each of its halves)."""
    weights = np.asarray(weights, np.float64)
    if weights.shape[-1:] != (len(ARKIT_NAMES),):
        raise ValueError(f"ARKit weights must have shape [..., {len(ARKIT_NAMES)}], got {weights.shape}")
    return weights @ arkit_sum_matrix(ict_names)


def arkit_from_ict(expression, basis, ict_names: Sequence[str]) -> np.ndarray:
    """ICT expression ``[..., Ke]`` -> ARKit weights ``[..., 52]``: each ARKit weight minimises
    ``|sum_i e_i d_i - w sum_i d_i|`` over its group's shapes ``d_i`` (exact for a single shape;
    the shape-norm-weighted mean of a pair). ``tongueOut`` is 0."""
    s = arkit_sum_matrix(ict_names)
    flat = np.asarray(basis, np.float64).reshape(len(ict_names), -1)
    gram = flat @ flat.T  # [Ke, Ke]
    summed = s @ gram  # [52, Ke]: <d_i, D_a> for the ARKit shape D_a = sum of its group
    norms = np.einsum("ak,ak->a", summed, s)  # |D_a|^2
    projection = np.where(s > 0, summed, 0.0) / np.maximum(norms, 1e-30)[:, None]
    return np.asarray(expression, np.float64) @ projection.T


def expression_weights(expression, basis, ict_names: Sequence[str], naming: str = "arkit") -> dict[str, float]:
    """One face's fitted expression ``[Ke]`` as ``{name: weight}`` under ``naming`` (for reports)."""
    expression = np.asarray(expression, np.float64)
    if naming == "ict":
        return dict(zip(ict_names, expression.tolist()))
    _check_naming(naming)
    return dict(zip(ARKIT_NAMES, arkit_from_ict(expression, basis, ict_names).tolist()))


def _check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise ValueError(f"blendshape naming must be one of {NAMINGS}, got {naming!r}")
