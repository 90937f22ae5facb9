"""The shape regressor's decoder, training loop, checkpoints and geometric encoder.

Training data here are head-model identities with features that carry part of their
coefficients plus noise: a real learning signal that the decoder can (and must) pick up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avatar_jax.model import load_head_model
from avatar_jax.regress import decoder as dec
from avatar_jax.regress import encode, features
from avatar_jax.regress.train import TrainConfig, load_regressor, save_regressor, train_regressor


@pytest.fixture(scope="module")
def model():
    return load_head_model()


@pytest.fixture(scope="module")
def data(model):
    rng = np.random.default_rng(0)
    n = 160
    alpha = rng.normal(size=(n, model.num_identity)).astype(np.float32)
    shapes = np.asarray(model.neutral)[None] + np.einsum("nk,kvc->nvc", alpha, np.asarray(model.identity_basis))
    feats = alpha[:, :16] + 0.1 * rng.normal(size=(n, 16)).astype(np.float32)
    return feats, shapes.astype(np.float32)


def test_pca_start_returns_the_training_mean(model, data):
    _, shapes = data
    pca = dec.shape_pca(shapes[:50])
    np.testing.assert_allclose(pca.mean, shapes[:50].mean(0), atol=1e-4)
    decoder = dec.VertexDecoder(model.num_vertices)
    params = dec.init_decoder(decoder, jax.random.PRNGKey(0), 7, pca)
    out = decoder.apply({"params": params}, jax.random.normal(jax.random.PRNGKey(1), (3, 7)))
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(pca.mean, out.shape), atol=1e-4)
    # 50 shapes span 49 directions: the components rebuild every centred training shape.
    comps = pca.components.reshape(dec.COMPONENTS, -1)
    centred = (shapes[:50] - pca.mean).reshape(50, -1)
    coef, *_ = np.linalg.lstsq(comps[:49].T, centred.T, rcond=None)
    np.testing.assert_allclose((comps[:49].T @ coef).T, centred, atol=1e-2)
    assert np.abs(comps[49:]).max() < 1e-6 * np.abs(comps[0]).max()


def test_loss_weights_and_weighted_l1(model):
    mean = np.asarray(model.neutral)
    w = dec.vertex_weights(mean, int(model.nose_tip), 95.0, 5.0)
    near = np.linalg.norm(mean - mean[int(model.nose_tip)], axis=-1) < 95.0
    assert set(np.unique(w)) == {1.0, 5.0} and np.all(w[near] == 5.0) and np.all(w[~near] == 1.0)
    true = jnp.zeros((1, 2, 3))
    pred = jnp.array([[[1.0, -1.0, 0.0], [0.0, 0.0, 3.0]]])
    # vertex 0: L1 2 (weight 5), vertex 1: L1 3 (weight 1) -> (10 + 3) / 6
    assert float(dec.weighted_l1(pred, true, jnp.array([5.0, 1.0]))) == pytest.approx(13.0 / 6.0)


def test_training_beats_the_mean_on_held_out_items(model, data):
    feats, shapes = data
    reg, hist = train_regressor(feats, shapes, model, TrainConfig(epochs=40, batch_size=32, learning_rate=1e-3))
    assert hist.held_out_face_mm[-1] < 0.8 * hist.baseline_face_mm, (hist.held_out_face_mm[-1], hist.baseline_face_mm)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert reg.predict(feats[:5]).shape == (5, model.num_vertices, 3)


def test_resumed_training_equals_an_uninterrupted_run(model, data, tmp_path):
    feats, shapes = data
    config = TrainConfig(epochs=6, batch_size=32, checkpoint_every=3)
    straight, _ = train_regressor(feats, shapes, model, config)
    train_regressor(feats, shapes, model, TrainConfig(epochs=3, batch_size=32, checkpoint_every=3), out_dir=tmp_path)
    resumed, hist = train_regressor(feats, shapes, model, config, out_dir=tmp_path)
    assert len(hist.train_loss) == 6 and all(v > 0 for v in hist.train_loss)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="another configuration"):
        train_regressor(feats, shapes, model, TrainConfig(epochs=6, batch_size=16), out_dir=tmp_path)


def test_save_load_round_trip(model, data, tmp_path):
    feats, shapes = data
    reg, _ = train_regressor(feats[:40], shapes[:40], model, TrainConfig(epochs=2, batch_size=16),
                             extras={"template": np.ones((478, 3), np.float32)})
    path = save_regressor(tmp_path / "r.npz", reg, card={"data": "test"})
    back = load_regressor(path)
    np.testing.assert_array_equal(np.asarray(back.predict(feats[:4])), np.asarray(reg.predict(feats[:4])))
    assert back.encoder == "mesh" and back.extras["template"].shape == (478, 3)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a regressor file"):
        load_regressor(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="no such file"):
        load_regressor(tmp_path / "missing.npz")


def test_bad_training_input_raises(model, data):
    feats, shapes = data
    with pytest.raises(ValueError, match="shapes must be"):
        train_regressor(feats, shapes[:, :10], model)
    with pytest.raises(ValueError, match="held_out_fraction"):
        TrainConfig(held_out_fraction=1.5)


def _rotation(rotvec):
    import cv2

    return cv2.Rodrigues(np.asarray(rotvec, np.float64))[0]


def test_mesh_features_ignore_pose_and_scale():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(3, features.MESH_POINTS, 3)) * np.array([60.0, 80.0, 30.0])
    template = features.mesh_template(base)
    moved = 2.5 * base @ _rotation([0.3, -0.5, 0.2]).T + np.array([300.0, 200.0, 5.0])
    a, b = features.mesh_features(base, template), features.mesh_features(moved, template)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert not np.allclose(a[0], a[1], atol=1e-2)  # different meshes stay different
    holed = base.copy()
    holed[1, 7, 0] = np.nan
    out = features.mesh_features(holed, template)
    assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))
    with pytest.raises(ValueError, match=r"\[B, 478, 3\]"):
        features.mesh_features(base[:, :468], template)


def test_encode_checks_its_inputs():
    with pytest.raises(ValueError, match="unknown encoder"):
        encode.encode("lightcnn", mesh478=np.zeros((1, 478, 3)))
    with pytest.raises(ValueError, match="needs mesh478"):
        encode.encode("mesh")


# ----------------------------------------------------------------------------- train-regressor on renders

@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """Two tiny make-dataset folders with MediaPipe run on the renders (train seed 0, test seed 1)."""
    from avatar_jax.dataset.make import DatasetConfig, make_dataset
    from avatar_jax.dataset.scenes import SceneConfig

    root = tmp_path_factory.mktemp("renders")
    base = DatasetConfig(n=24, shard_size=12, num_sources=12, num_skins=4, skins_per_shard=2, texture_size=256,
                         detect=True, scene=SceneConfig(image_size=128, yaw_deg=30))
    make_dataset(base, root / "train", progress=False)
    make_dataset(DatasetConfig(**{**base.__dict__, "n": 12, "seed": 1}), root / "test", progress=False)
    return root


def test_train_regressor_command_writes_a_run_and_resumes(renders, tmp_path):
    import json

    from avatar_jax.cli import main

    run = tmp_path / "run"
    args = ["train-regressor", "--data", str(renders / "train"), "--test", str(renders / "test"), "--out", str(run),
            "--epochs", "3", "--no-progress"]
    assert main(args) == 0
    for name in ("regressor.npz", "history.json", "loss.png", "metrics.json", "train_config.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["items"] + metrics["test"]["dropped_no_face"] == 12
    assert np.isfinite(metrics["test"]["face_mm"]) and metrics["test"]["mean_shape_face_mm"] > 0
    reg = load_regressor(run / "regressor.npz")
    assert reg.encoder == "mesh" and reg.extras["template"].shape == (478, 3)
    history = json.loads((run / "history.json").read_text())
    assert len(history["train_loss"]) == 3
    # More epochs resume from the checkpoint; another configuration in the same folder is refused.
    assert main(args[:-3] + ["--epochs", "5", "--no-progress"]) == 0
    assert len(json.loads((run / "history.json").read_text())["train_loss"]) == 5
    assert np.allclose(json.loads((run / "history.json").read_text())["train_loss"][:3], history["train_loss"])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"learning_rate": 1e-3}))
    assert main(args[:-3] + ["--config", str(config), "--no-progress"]) == 2


def test_train_regressor_names_a_dataset_without_detections(tmp_path):
    from avatar_jax.dataset.make import DatasetConfig, make_dataset
    from avatar_jax.dataset.scenes import SceneConfig
    from avatar_jax.regress.command import dataset_features

    make_dataset(DatasetConfig(n=2, shard_size=2, num_sources=12, num_skins=1, texture_size=64,
                               scene=SceneConfig(image_size=64)), tmp_path, progress=False)
    with pytest.raises(ValueError, match="--detect"):
        dataset_features(tmp_path, "mesh")
    with pytest.raises(ValueError, match="not a dataset"):
        dataset_features(tmp_path / "nowhere", "mesh")


def test_regress_then_fit_end_to_end_on_a_photo(renders, tmp_path):
    from pathlib import Path

    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image
    from avatar_jax.regress.command import train
    from avatar_jax.status import Status

    train(renders / "train", "mesh", tmp_path / "run", TrainConfig(epochs=2), progress=False)
    reg = load_regressor(tmp_path / "run" / "regressor.npz")
    image = load_image(Path(__file__).parent / "data" / "photos" / "fr_obama.jpg")
    faces = pipeline.detect(image)
    model = load_head_model()
    # (the dense source goes through the same path: tests/test_batch.py and the reconstruct test below)
    base = pipeline.base_shapes(image, faces, "regressor", model=model, regressor=reg)
    assert base.shape == (1, model.num_vertices, 3) and np.all(np.isfinite(base))
    assert np.abs(base - np.asarray(model.neutral)).max() > 0.1  # not just the mean head
    res = pipeline.fit_faces(image, faces, model=model, base_shapes=base)
    assert Status.of(int(res.status[0])) == Status.OK
    assert pipeline.base_shapes(image, faces, "landmarks") is None
    with pytest.raises(ValueError, match="needs a regressor"):
        pipeline.base_shapes(image, faces, "regressor")
    with pytest.raises(ValueError, match="source must be"):
        pipeline.base_shapes(image, faces, "magic")


def test_reconstruct_reports_the_shape_source(tmp_path):
    import json
    from pathlib import Path

    from avatar_jax.cli import main

    photo = Path(__file__).parent / "data" / "photos" / "fr_obama.jpg"
    out = tmp_path / "out"
    assert main(["reconstruct", str(photo), "--out", str(out), "--shape-source", "dense", "--texture-size", "64",
                 "--formats", "glb", "--no-overlay"]) == 0
    assert json.loads((out / "fr_obama.json").read_text())["shape_source"] == "dense"
    assert main(["reconstruct", str(photo), "--out", str(out), "--shape-source", "regressor",
                 "--regressor", str(tmp_path / "missing.npz")]) == 2


def test_the_shipped_regressor_is_the_default_shape_source(tmp_path):
    import json
    from pathlib import Path

    from avatar_jax.cli import main
    from avatar_jax.regress import DEFAULT_REGRESSOR

    reg = load_regressor()
    assert reg.encoder == "dlib" and reg.num_vertices == load_head_model().num_vertices
    assert (DEFAULT_REGRESSOR.parent / "MODEL_CARD.md").is_file()
    photo = Path(__file__).parent / "data" / "photos" / "fr_obama.jpg"
    out = tmp_path / "out"
    assert main(["reconstruct", str(photo), "--out", str(out), "--shape-source", "regressor", "--texture-size", "64",
                 "--formats", "glb", "--no-overlay"]) == 0
    assert json.loads((out / "fr_obama.json").read_text())["shape_source"] == "regressor"


def test_eye_masking_paints_over_the_eyes_only():
    from pathlib import Path

    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image
    from avatar_jax.regress.encode import mask_eye_regions

    image = load_image(Path(__file__).parent / "data" / "photos" / "fr_obama.jpg")
    lm = pipeline.detect(image)[0].landmarks68
    masked = mask_eye_regions(image, lm)
    changed = np.any(masked != image, -1)
    ys, xs = np.nonzero(changed)
    eyes = lm[36:48]
    assert changed.sum() > 200 and image.shape == masked.shape
    assert xs.min() > eyes[:, 0].min() - 20 and xs.max() < eyes[:, 0].max() + 20  # nothing beyond the eyes
    assert ys.min() > eyes[:, 1].min() - 20 and ys.max() < eyes[:, 1].max() + 20
    for eye in (slice(36, 42), slice(42, 48)):  # each eye's centre is one flat colour
        cx, cy = np.round(lm[eye].mean(0)).astype(int)
        assert np.ptp(masked[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3), 0).max() == 0


def test_an_eye_masking_regressor_masks_at_inference_too(renders, tmp_path):
    from pathlib import Path

    from avatar_jax import pipeline
    from avatar_jax.io.image import load_image
    from avatar_jax.regress.command import train
    from avatar_jax.regress.encode import dlib_features

    train(renders / "train", "dlib", tmp_path / "run", TrainConfig(epochs=2), progress=False, mask_eyes=True)
    reg = load_regressor(tmp_path / "run" / "regressor.npz")
    assert bool(reg.extras["mask_eyes"])
    image = load_image(Path(__file__).parent / "data" / "photos" / "fr_obama.jpg")
    faces = pipeline.detect(image)
    lm = faces[0].landmarks68[None]
    masked, plain = (dlib_features([image], lm, mask_eyes=m) for m in (True, False))
    assert np.linalg.norm(masked - plain) > 0.05  # the descriptor sees the masking
    base = pipeline.base_shapes(image, faces, "regressor", regressor=reg)
    np.testing.assert_allclose(base, np.asarray(reg.predict(masked)), atol=1e-5)
    with pytest.raises(ValueError, match="mask_eyes"):
        train(renders / "train", "mesh", tmp_path / "run2", TrainConfig(epochs=1), progress=False, mask_eyes=True)
