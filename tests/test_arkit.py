"""The ARKit-52 naming of the head's expression shapes: the table, the summed pairs, the weights both ways."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from avatar_jax.model import arkit, load_head_model, vertices

# Apple's ARFaceAnchor.BlendShapeLocation names, typed independently of the table under test.
APPLE_52 = """
browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft
cheekSquintRight eyeBlinkLeft eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft eyeLookInRight
eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight eyeSquintLeft eyeSquintRight eyeWideLeft
eyeWideRight jawForward jawLeft jawOpen jawRight mouthClose mouthDimpleLeft mouthDimpleRight mouthFrownLeft
mouthFrownRight mouthFunnel mouthLeft mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight
mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft
mouthSmileRight mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft
noseSneerRight tongueOut
""".split()


@pytest.fixture(scope="module")
def model():
    return load_head_model()


def test_the_table_names_apples_52_and_uses_every_ict_shape_once(model):
    assert len(APPLE_52) == 52 and sorted(arkit.ARKIT_NAMES) == sorted(APPLE_52)
    used = [n for group in arkit.ARKIT_FROM_ICT.values() for n in group]
    assert sorted(used) == sorted(model.expression_names)  # each ICT shape in exactly one ARKit shape


def test_left_is_the_subjects_left_as_in_arkit(model):
    # The model frame's +X is the subject's left; ARKit's "Left" shapes move the subject's left side.
    shapes = arkit.blendshapes(model.expression_basis, model.expression_names)
    neutral = np.asarray(model.neutral)
    for name in ("eyeBlinkLeft", "mouthSmileLeft", "browDownLeft", "cheekSquintLeft"):
        moved = np.linalg.norm(shapes[name], axis=1)
        assert (neutral[:, 0] * moved).sum() / moved.sum() > 15.0, name  # mm to the subject's left


def test_summed_pairs_and_the_absent_tongue(model):
    basis, names = np.asarray(model.expression_basis), model.expression_names
    shapes = arkit.blendshapes(basis, names)
    assert list(shapes) == list(arkit.ARKIT_NAMES)
    both = basis[names.index("browInnerUp_L")] + basis[names.index("browInnerUp_R")]
    np.testing.assert_allclose(shapes["browInnerUp"], both, atol=1e-6)
    np.testing.assert_array_equal(shapes["jawOpen"], basis[names.index("jawOpen")])
    assert not shapes["tongueOut"].any()
    assert list(arkit.blendshapes(basis, names, "ict")) == list(names)


def test_arkit_weights_move_the_mesh_as_the_morph_targets_do(model):
    rng = np.random.default_rng(0)
    weights = rng.uniform(0, 1, len(arkit.ARKIT_NAMES))
    shapes = np.stack(list(arkit.blendshapes(model.expression_basis, model.expression_names).values()))
    morphed = np.asarray(model.neutral) + np.einsum("a,avd->vd", weights, shapes)
    expression = arkit.ict_from_arkit(weights, model.expression_names)
    np.testing.assert_allclose(np.asarray(vertices(model, expression=np.float32(expression))), morphed, atol=1e-3)
    # and back: a mesh posed by ARKit weights reads as the same weights (tongueOut has no geometry)
    back = arkit.arkit_from_ict(expression, model.expression_basis, model.expression_names)
    np.testing.assert_allclose(back[:-1], weights[:-1], atol=1e-9)
    assert back[-1] == 0.0


def test_an_unequal_pair_reads_as_its_least_squares_weight(model):
    basis, names = np.asarray(model.expression_basis, np.float64), model.expression_names
    e = np.zeros(len(names))
    e[names.index("cheekPuff_L")], e[names.index("jawOpen")] = 0.8, 0.3
    w = arkit.expression_weights(e, basis, names)
    target = 0.8 * basis[names.index("cheekPuff_L")]
    summed = basis[names.index("cheekPuff_L")] + basis[names.index("cheekPuff_R")]
    grid = np.linspace(0, 1, 2001)
    best = grid[np.argmin([np.linalg.norm(target - g * summed) for g in grid])]
    assert abs(w["cheekPuff"] - best) < 1e-3 and w["jawOpen"] == pytest.approx(0.3)
    assert arkit.expression_weights(e, basis, names, "ict")["cheekPuff_L"] == pytest.approx(0.8)


def test_bad_names_are_named(model):
    with pytest.raises(ValueError, match="blendshape naming"):
        arkit.blendshapes(model.expression_basis, model.expression_names, "apple")
    with pytest.raises(ValueError, match="jawOpen"):
        arkit.arkit_sum_matrix([n for n in model.expression_names if n != "jawOpen"])
    with pytest.raises(ValueError, match=r"\[\.\.\., 52\]"):
        arkit.ict_from_arkit(np.zeros(53), model.expression_names)


def test_the_docs_table_is_the_code_table():
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.*) \|$", text, re.M)
    assert [(a, tuple(re.findall(r"`(\w+)`", ict))) for a, ict in rows] == list(arkit.ARKIT_FROM_ICT.items())
