"""make-dataset: deterministic shards, resume, ground truth that matches the renders, de-identified skins."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from avatar_jax.dataset import make as mk
from avatar_jax.dataset.scenes import SceneConfig

SMALL = mk.DatasetConfig(n=6, shard_size=4, num_sources=12, num_skins=3, skins_per_shard=2, texture_size=128,
                         scene=SceneConfig(image_size=64), seed=3)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = mk.make_dataset(SMALL, out, progress=False)
    return out, summary


def test_a_shard_is_a_pure_function_of_config_and_index(made):
    out, summary = made
    assert summary["shards_made"] == 2 and summary["images_made"] == 6
    shards = list(mk.iter_shards(out))
    assert [len(s["images"]) for s in shards] == [4, 2]
    again = mk.make_shard(SMALL, 1)  # alone, in a fresh context
    for key, value in shards[1].items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    other = mk.make_shard(dataclasses.replace(SMALL, seed=4), 1)
    assert not np.allclose(other["shapes"], shards[1]["shapes"])
    assert set(shards[0]) == set(mk.SHARD_FIELDS) - {"mesh478", "detected68"}


def test_rerun_skips_finished_shards_and_remakes_a_missing_one(made):
    out, _ = made
    before = dict(np.load(mk.shard_path(out, 0)))
    mk.shard_path(out, 0).unlink()
    summary = mk.make_dataset(SMALL, out, progress=False)
    assert summary["shards_made"] == 1 and summary["shards_skipped"] == 1
    after = dict(np.load(mk.shard_path(out, 0)))
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    assert not list(out.glob(".*tmp"))  # nothing partial left behind
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 3 and manifest["shards"] == ["shard-00000.npz", "shard-00001.npz"]


def test_another_config_in_the_same_folder_is_refused(made):
    out, _ = made
    with pytest.raises(ValueError, match="another config"):
        mk.make_dataset(dataclasses.replace(SMALL, aug="cpca"), out, progress=False)


def test_ground_truth_matches_the_render(made):
    from avatar_jax.geometry.camera import Camera, project
    from avatar_jax.model import load_head_model
    from avatar_jax.model.head import landmarks

    out, _ = made
    shard = next(mk.iter_shards(out))
    model = load_head_model()
    verts = shard["shapes"] + np.einsum("nk,kvd->nvd", shard["expression"], np.asarray(model.expression_basis))
    np.testing.assert_allclose(verts, shard["vertices"], atol=1e-3)
    for i in range(len(verts)):
        camera = Camera(*(shard[f][i] for f in ("rotvec", "translation", "log_fs", "focal", "principal")))
        inner = np.asarray(project(camera, landmarks(model, verts[i])))[17:]
        np.testing.assert_allclose(inner, shard["landmarks68"][i, 17:], atol=1e-2)
        # The nose tip is on the head: the render there differs from the background's colour
        # at the image corner (plain or smooth backgrounds).
        x, y = np.round(shard["landmarks68"][i, 30]).astype(int)
        image = shard["images"][i].astype(float)
        assert 0 <= x < 64 and 0 <= y < 64
        assert np.abs(image[y, x] - image[0, 0]).max() > 3 or np.abs(image[y, x] - image[-1, -1]).max() > 3


def test_skins_are_drawn_from_the_pool_independently_of_the_shape(made):
    out, _ = made
    shards = list(mk.iter_shards(out))
    skins = np.concatenate([s["skin"] for s in shards])
    assert skins.min() >= 0 and skins.max() < SMALL.num_skins


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="aug"):
        mk.DatasetConfig(aug="pca")
    with pytest.raises(ValueError, match="skin_photos"):
        mk.DatasetConfig(skins="photo")
    with pytest.raises(ValueError, match="out of range"):
        mk.make_shard(SMALL, 5)


def test_an_old_manifest_without_the_newer_options_still_resumes(made):
    out, _ = made
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["scene"]["background_photos"]  # as written before that option existed
    path.write_text(json.dumps(manifest))
    assert mk.make_dataset(SMALL, out, progress=False)["shards_skipped"] == 2


def test_the_packaged_background_bank_is_face_free_and_licensed():
    from avatar_jax.dataset import scenes as sc
    from avatar_jax.landmarks import detect_faces

    photos = sc.background_photos()
    listed = json.loads((sc.PHOTO_BANK / "sources.json").read_text())["crops"]
    assert len(photos) == len(listed) >= 20
    assert all(entry["licence"] and entry["source"] for entry in listed)
    assert sorted(p.name for p in sc.PHOTO_BANK.glob("*.jpg")) == sorted(e["file"] for e in listed)
    assert not any(detect_faces(photo, small_faces=True) for photo in photos[::4])


def test_photo_backgrounds_are_crops_of_the_given_photos(tmp_path):
    from PIL import Image

    from avatar_jax.dataset import scenes as sc

    left_red = np.zeros((96, 160, 3), np.uint8)
    left_red[:, :80, 0] = 255
    left_red[:, 80:, 2] = 255
    Image.fromarray(left_red).save(tmp_path / "halves.png")
    backgrounds = sc.sample_backgrounds(np.random.default_rng(0), 8, 32, ("photo",), str(tmp_path))
    again = sc.sample_backgrounds(np.random.default_rng(0), 8, 32, ("photo",), str(tmp_path))
    np.testing.assert_array_equal(backgrounds, again)
    assert backgrounds[..., 1].max() < 40  # only the photo's red and blue, tinted and blurred
    red_share = (backgrounds[..., 0] > backgrounds[..., 2]).mean((1, 2))
    assert np.ptp(red_share) > 0.2  # different crops (and mirrors) of the photo
    with pytest.raises(ValueError, match="not a folder"):
        SceneConfig(backgrounds=("plain", "photo"), background_photos=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .jpg"):
        SceneConfig(backgrounds=("photo",), background_photos=str(tmp_path / "empty"))


def test_cli_renders_over_photo_backgrounds(tmp_path):
    from avatar_jax.cli import main

    args = ["make-dataset", "--out", str(tmp_path), "--n", "2", "--shard-size", "2", "--num-sources", "12",
            "--num-skins", "2", "--image-size", "64", "--backgrounds", "photo", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["scene"]["backgrounds"] == ["photo"]
    corners = next(mk.iter_shards(tmp_path))["images"][:, :8, :8].reshape(2, -1, 3).astype(float)
    assert corners.std(1).max() > 2  # a photo crop, not one plain colour


def test_cli_makes_its_shard_of_the_dataset(tmp_path):
    from avatar_jax.cli import main

    args = ["make-dataset", "--out", str(tmp_path), "--n", "4", "--shard-size", "2", "--num-sources", "12",
            "--num-skins", "2", "--image-size", "64", "--shard", "1/2", "--no-progress"]
    assert main(args) == 0
    assert sorted(p.name for p in tmp_path.glob("shard-*.npz")) == ["shard-00001.npz"]
    assert main(args[:-3] + ["--shard", "2/2"]) == 2


def test_deidentified_skins_carry_no_source_photos_features():
    """Feature-region detail (brows, eyes, nose: high-pass luminance) of every drawn skin correlates
    with each bundled photo's baked texture less than a texture correlates with itself."""
    import cv2

    from avatar_jax.dataset.skins import make_skin, sample_skin_params, skin_atlas
    from avatar_jax.evaluate.rendered import example_photos
    from avatar_jax.model import load_head_model
    from avatar_jax.texture.caps import capped_model

    model = load_head_model()
    capped, caps = capped_model(model)
    atlas = skin_atlas(capped, caps, 256)
    mask = atlas.regions["features"] > 0.5

    def detail(texture):
        g = cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY).astype(np.float32)
        d = (g - cv2.GaussianBlur(g, (0, 0), 4))[mask]
        return (d - d.mean()) / (d.std() + 1e-6)

    photos = [detail(mk._photo_skin(p, 256, model)) for p in example_photos()]
    rng = np.random.default_rng(0)
    for _ in range(6):
        skin = detail(make_skin(atlas, sample_skin_params(rng)))
        for photo in photos:
            assert float(np.mean(skin * photo)) < 0.6
    assert float(np.mean(photos[0] * photos[0])) == pytest.approx(1.0, abs=1e-3)
