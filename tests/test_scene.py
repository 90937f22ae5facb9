"""The batched scene renderer: analytic cases (coverage, nearer wins, flat band-0 light, culling)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import trimesh

from avatar_jax.geometry import camera as cam
from avatar_jax.render import scene as sc

SIZE = (48, 64)  # (H, W)
DISTANCE = 400.0


@dataclasses.dataclass(frozen=True)
class Mesh:
    """The topology and UV layout render_scenes reads (the head model has the same fields)."""

    triangles: np.ndarray
    uvs: np.ndarray
    triangle_uvs: np.ndarray


def _quad(half: float, z: float, uv: tuple[float, float]):
    """A square facing +Z (towards the camera), all its UVs at one point of the texture."""
    verts = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], np.float32)
    return verts, np.array([[0, 1, 2], [0, 2, 3]], np.int32), np.array([uv], np.float32)


def _scenes(verts, textures, sh=None, background=0):
    b = len(verts)
    camera = cam.camera_from_image_size(np.tile(SIZE, (b, 1)), translation=np.tile([0.0, 0.0, -DISTANCE], (b, 1)))
    if sh is None:
        sh = np.zeros((b, sc.NUM_SH, 3), np.float32)
        sh[:, 0] = 1.0 / sc._SH_C0  # white light from everywhere: shading 1
    light = sc.Lighting(sh=np.asarray(sh, np.float32), specular=np.zeros(b, np.float32),
                        shininess=np.ones(b, np.float32), light_dir=np.tile([0.0, 0.0, 1.0], (b, 1)))
    backgrounds = np.full((b,) + SIZE + (3,), background, np.uint8)
    return sc.Scenes(np.asarray(verts, np.float32), camera, np.asarray(textures), light, backgrounds)


def _two_colour_texture():
    """16x16: left half red, right half green (UV u < 0.5 red)."""
    tex = np.zeros((16, 16, 3), np.uint8)
    tex[:, :8, 0] = 255
    tex[:, 8:, 1] = 255
    return tex


def test_coverage_is_the_projected_area_and_antialiased():
    verts, tris, _ = _quad(58.0, 0.0, (0.25, 0.5))
    mesh = Mesh(tris, np.array([[0.25, 0.5]], np.float32), np.zeros_like(tris))
    settings = sc.RenderSettings(image_size=SIZE, supersample=4)
    out = sc.render_scenes(mesh, _scenes(verts[None], _two_colour_texture()[None]), settings)
    coverage = np.asarray(out.coverage[0])
    side_px = 2 * 58.0 * max(SIZE) / DISTANCE  # focal = max(h, w), fs = 1
    # Each edge moves by at most a sample spacing (1 / supersample px).
    assert coverage.sum() == pytest.approx(side_px**2, abs=4 * side_px / settings.supersample)
    assert coverage[SIZE[0] // 2, SIZE[1] // 2] == 1.0 and coverage[0, 0] == 0.0
    assert np.any((coverage > 0.0) & (coverage < 1.0))  # edges are partial, not jagged
    image = np.asarray(out.images[0]).astype(float)
    # The red quad over black: each pixel's red is its coverage.
    np.testing.assert_allclose(image[..., 0], 255.0 * coverage, atol=1.0)
    assert image[..., 1:].max() == 0


def test_nearer_surface_wins_whatever_the_triangle_order():
    far, tris, _ = _quad(30.0, 0.0, (0.25, 0.5))
    near, _, _ = _quad(12.0, 20.0, (0.75, 0.5))  # +Z is towards the camera
    uvs = np.array([[0.25, 0.5], [0.75, 0.5]], np.float32)
    quads = [(far, 0), (near, 1)]  # (vertices, uv id): far red, near green
    for order in (quads, quads[::-1]):
        verts = np.concatenate([q for q, _ in order])
        mesh = Mesh(np.concatenate([tris + 4 * i for i in range(2)]), uvs,
                    np.concatenate([np.full_like(tris, uv) for _, uv in order]))
        out = sc.render_scenes(mesh, _scenes(verts[None], _two_colour_texture()[None]),
                               sc.RenderSettings(image_size=SIZE))
        image = np.asarray(out.images[0])
        np.testing.assert_array_equal(image[SIZE[0] // 2, SIZE[1] // 2], [0, 255, 0])  # the near quad
        np.testing.assert_array_equal(image[SIZE[0] // 2, SIZE[1] // 2 + 4], [255, 0, 0])  # only the far one


def test_band0_light_shades_a_sphere_flat_and_the_highlight_adds():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=100.0)
    tris = np.asarray(sphere.faces, np.int32)
    mesh = Mesh(tris, np.array([[0.5, 0.5]], np.float32), np.zeros_like(tris))
    texture = np.full((1, 8, 8, 3), 200, np.uint8)
    sh = np.zeros((1, sc.NUM_SH, 3), np.float32)
    sh[0, 0] = np.array([0.5, 0.75, 1.0]) / sc._SH_C0
    out = sc.render_scenes(mesh, _scenes(np.asarray(sphere.vertices)[None], texture, sh), sc.RenderSettings(SIZE))
    inside = np.asarray(out.coverage[0]) == 1.0
    assert inside.sum() > 300
    image = np.asarray(out.images[0]).astype(float)[inside]
    np.testing.assert_allclose(image, np.broadcast_to(np.round(200 * np.array([0.5, 0.75, 1.0])), image.shape),
                               atol=1.0)
    lit = _scenes(np.asarray(sphere.vertices)[None], texture, sh)
    lit = lit.replace(lighting=lit.lighting.replace(specular=np.full(1, 0.3, np.float32),
                                                    shininess=np.full(1, 30.0, np.float32)))
    shiny = np.asarray(sc.render_scenes(mesh, lit, sc.RenderSettings(SIZE)).images[0]).astype(float)
    centre = shiny[SIZE[0] // 2, SIZE[1] // 2]  # the normal faces the eye and the light
    np.testing.assert_allclose(centre, np.minimum(np.round(200 * np.array([0.5, 0.75, 1.0]) + 0.3 * 255), 255),
                               atol=2.0)


def test_directional_sh_lights_a_facing_white_surface_with_colour_plus_ambient():
    sh = np.asarray(sc.directional_sh(np.array([0.0, 0.0, 1.0]), np.array([0.6, 0.6, 0.6]), np.array([0.3, 0.2, 0.1])))
    facing = np.asarray(sc.sh_shading(sh, np.array([0.0, 0.0, 1.0])))
    np.testing.assert_allclose(facing, [0.9, 0.8, 0.7], atol=1e-5)
    away = np.asarray(sc.sh_shading(sh, np.array([0.0, 0.0, -1.0])))
    assert np.all(away < facing - 0.5)


def test_back_faces_are_culled():
    verts, tris, _ = _quad(30.0, 0.0, (0.25, 0.5))
    mesh = Mesh(tris[:, ::-1].copy(), np.array([[0.25, 0.5]], np.float32), np.zeros_like(tris))
    out = sc.render_scenes(mesh, _scenes(verts[None], _two_colour_texture()[None], background=7),
                           sc.RenderSettings(SIZE))
    assert float(np.asarray(out.coverage).max()) == 0.0
    assert np.all(np.asarray(out.images) == 7)


def test_one_shaded_sample_per_pixel_matches_full_supersampling_on_one_surface():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=100.0)
    tris = np.asarray(sphere.faces, np.int32)
    # A texture that varies over the sphere, so the sample position matters a little.
    uvs = (np.asarray(sphere.vertices)[:, :2] / 200.0 + 0.5).astype(np.float32)
    mesh = Mesh(tris, uvs, tris)
    texture = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3)).astype(np.uint8)
    scenes = _scenes(np.asarray(sphere.vertices)[None], texture, background=90)
    one = np.asarray(sc.render_scenes(mesh, scenes, sc.RenderSettings(SIZE)).images).astype(float)
    every = np.asarray(sc.render_scenes(mesh, scenes, sc.RenderSettings(SIZE, shade_every_sample=True)).images)
    diff = np.abs(one - every.astype(float))
    assert diff.mean() < 6.0  # the texture varies per fine sample; the silhouette blend is the same
    cov = np.asarray(sc.render_scenes(mesh, scenes, sc.RenderSettings(SIZE)).coverage[0])
    np.testing.assert_array_equal(one[0][cov == 0], 90)


def test_a_batch_renders_each_scene_and_does_not_recompile():
    verts, tris, _ = _quad(30.0, 0.0, (0.25, 0.5))
    mesh = Mesh(tris, np.array([[0.25, 0.5], [0.75, 0.5]], np.float32), np.zeros_like(tris))
    settings = sc.RenderSettings(SIZE)
    batch = np.stack([verts, verts * np.array([0.5, 0.5, 1.0], np.float32)])
    out = sc.render_scenes(mesh, _scenes(batch, np.stack([_two_colour_texture()] * 2)), settings)
    areas = np.asarray(out.coverage).sum((1, 2))
    assert areas[1] == pytest.approx(areas[0] / 4, rel=0.05)
    before = sc._render_batch._cache_size()
    sc.render_scenes(mesh, _scenes(batch + 1.0, np.stack([_two_colour_texture()] * 2)), settings)
    assert sc._render_batch._cache_size() == before


def test_bad_shapes_are_named():
    verts, tris, _ = _quad(30.0, 0.0, (0.25, 0.5))
    mesh = Mesh(tris, np.array([[0.25, 0.5]], np.float32), np.zeros_like(tris))
    scenes = _scenes(verts[None], _two_colour_texture()[None])
    with pytest.raises(ValueError, match="verts"):
        sc.render_scenes(mesh, scenes.replace(verts=verts[None, :3]), sc.RenderSettings(SIZE))
    with pytest.raises(ValueError, match="backgrounds"):
        sc.render_scenes(mesh, scenes, sc.RenderSettings((32, 32)))
    with pytest.raises(ValueError, match="textures"):
        sc.render_scenes(mesh, scenes.replace(textures=np.zeros((1, 8, 4, 3), np.uint8)), sc.RenderSettings(SIZE))
    with pytest.raises(ValueError, match="supersample"):
        sc.RenderSettings(SIZE, supersample=0)
