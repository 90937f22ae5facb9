"""Lighting removal (avatar_jax.texture.delight and bake_texture(delight=...))."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.model import load_head_model
from avatar_jax.pipeline import capped_model
from avatar_jax.render import scene as sc
from avatar_jax.texture import delight
from avatar_jax.texture.bake import bake_plan

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import delight as bench  # noqa: E402  benchmarks/delight.py: the same round trip, printed

SIZE = 512


@pytest.fixture(scope="module")
def capped():
    cm, caps = capped_model(load_head_model())
    return cm, bake_plan(cm, SIZE, np.arange(cm.num_vertices) >= caps.num_base)


def test_fit_recovers_a_known_light_despite_outliers():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(3000, 3))
    n[:, 2] = np.abs(n[:, 2]) + 0.3  # the half of the sphere a camera sees
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    sh = sc.directional_sh(np.float32([0.5, 0.3, 0.8]), np.float32([0.6, 0.5, 0.4]), np.float32([0.3, 0.3, 0.35]))
    albedo = np.float32([0.8, 0.6, 0.5])
    colors = albedo * np.asarray(sc.sh_shading(sh, jnp.asarray(n, jnp.float32)))
    colors[:300] *= 0.3  # brows, stubble: dark outliers
    ok = np.ones(len(n), bool)
    ok[-200:] = False
    colors[-200:] = 5.0  # ignored samples
    fit, found = delight.fit_sh_light(jnp.asarray(colors), jnp.asarray(n, jnp.float32), jnp.asarray(ok))
    assert bool(found)
    # From one hemisphere of normals the coefficients are not all identifiable (the constant and
    # z² bands trade off), the shading there is.
    clean = jnp.asarray(n[300:-200], jnp.float32)
    np.testing.assert_allclose(np.asarray(sc.sh_shading(fit, clean)), albedo * np.asarray(sc.sh_shading(sh, clean)),
                               rtol=0.03, atol=0.025)
    # The gain takes the clean samples to a constant colour (albedo times the median shading).
    ref = delight.reference_shading(fit, jnp.asarray(n, jnp.float32), jnp.asarray(ok))
    flat = colors[300:-200] * np.asarray(delight.delight_gain(fit, ref, jnp.asarray(n[300:-200], jnp.float32)))
    assert np.all(np.std(flat, 0) < 0.1 * np.std(colors[300:-200], 0))
    _, found = delight.fit_sh_light(jnp.asarray(colors), jnp.asarray(n, jnp.float32), jnp.zeros(len(n), bool))
    assert not bool(found)
    with pytest.raises(ValueError, match="colors"):
        delight.fit_sh_light(jnp.asarray(colors[:, :2]), jnp.asarray(n), jnp.asarray(ok))


def test_delit_bake_recovers_the_albedo_of_a_lit_render(capped):
    cm, plan = capped
    rt = bench.round_trip(cm, plan, SIZE)
    lit, delit = rt[False]["gain"][1], rt[True]["gain"][1]  # PSNR (dB) after one gain per channel
    # The side light makes the lit bake far from the albedo; de-lit it is close.
    assert lit < 20.0 and delit > 30.0, (lit, delit)
    assert rt["shading_rel_err"] < 0.1
    assert rt["texels"] > 0.1 * SIZE * SIZE


def test_delight_off_keeps_the_photo_light(capped):
    from avatar_jax.texture.bake import bake_texture

    cm, plan = capped
    albedo = bench.albedo_texture(SIZE)
    image, verts, cam, _ = bench.synthetic_photo(cm, albedo)
    on, off = {}, {}
    tex_on = bake_texture(image, verts, cam, cm, SIZE, plan=plan, hair=False, diagnostics=on)
    tex_off = bake_texture(image, verts, cam, cm, SIZE, plan=plan, hair=False, delight=False, diagnostics=off)
    assert np.all(off["gain"] == 1.0) and on["light_found"]
    np.testing.assert_allclose(on["light"], off["light"], atol=1e-6)  # fitted either way
    seen = np.repeat(np.repeat(on["weight"] > 0.9, 2, 0), 2, 1)
    assert np.abs(tex_on[seen].astype(int) - tex_off[seen]).mean() > 10  # the side light is undone
