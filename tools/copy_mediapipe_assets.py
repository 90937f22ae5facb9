"""Copy the MediaPipe face models + canonical face model into the package, with their licence.

    python tools/copy_mediapipe_assets.py [--src ../shared/assets/mediapipe] [--wheel mediapipe-0.10.14-*.whl]

Writes ``avatar_jax/landmarks/data/``: the three ``.tflite`` face models (plus, with ``--wheel``, the
full-range detector and the selfie segmentation model), ``canonical_face_model.obj``,
``geometry_pipeline_metadata_landmarks.pbtxt`` (Procrustes weights), ``LICENSE.mediapipe``
(Apache-2.0, verbatim), ``README.md`` with provenance and sha256 of every copied file, and
``canonical_face_model.npz`` (the same canonical mesh and Procrustes weights parsed into arrays,
which is what the package reads at run time).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "assets" / "mediapipe"
DEST = REPO / "avatar_jax" / "landmarks" / "data"

# From the PyPI wheel mediapipe==0.10.14 (pip download mediapipe==0.10.14 --no-deps): archive path -> packaged name
WHEEL_FILES = {
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite":
        "face_detection_full_range_sparse.tflite",
    # person/background mask (hair colour for the scalp, avatar_jax.texture.hair)
    "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite": "selfie_segmentation.tflite",
}
WHEEL_NOTE = "".join(
    f"\n`{name}`: from the PyPI wheel `mediapipe==0.10.14` (`{member.rpartition('/')[0]}/`), "
    "unmodified, same licence.\n" for member, name in WHEEL_FILES.items())
FILES = {  # source name -> packaged name
    "face_detection_short_range.tflite": "face_detection_short_range.tflite",
    "face_landmark.tflite": "face_landmark.tflite",
    "iris_landmark.tflite": "iris_landmark.tflite",
    "canonical_face_model.obj": "canonical_face_model.obj",
    "geometry_pipeline_metadata_landmarks.pbtxt": "geometry_pipeline_metadata_landmarks.pbtxt",
    "LICENSE": "LICENSE.mediapipe",
}

README_HEAD = """# MediaPipe face models (Apache-2.0)

Copyright The MediaPipe Authors, licensed under the Apache License 2.0 (`LICENSE.mediapipe`,
verbatim). Copied by `tools/copy_mediapipe_assets.py` from `../shared/assets/mediapipe`, whose
provenance is: the `.tflite` files from the PyPI wheel `mediapipe==0.10.21`
(`mediapipe/modules/...`); `canonical_face_model.obj` and
`geometry_pipeline_metadata_landmarks.pbtxt` from github.com/google-ai-edge/mediapipe tag
`v0.10.21`, `mediapipe/modules/face_geometry/data/`. Files are unmodified.

| file | bytes | sha256 |
|---|---|---|
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_canonical_obj(path: Path) -> dict[str, np.ndarray]:
    """``vertices [468,3]`` cm, ``uvs [468,2]`` (indexed like the vertices), ``triangles [898,3]``."""
    verts, uvs, tris, tri_uvs = [], [], [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            uvs.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            corners = [c.split("/") for c in parts[1:4]]
            tris.append([int(c[0]) - 1 for c in corners])
            tri_uvs.append([int(c[1]) - 1 for c in corners])
    verts, uvs = np.asarray(verts, np.float32), np.asarray(uvs, np.float32)
    tris, tri_uvs = np.asarray(tris, np.int32), np.asarray(tri_uvs, np.int32)
    vertex_uvs = np.zeros((len(verts), 2), np.float32)
    vertex_uvs[tris.ravel()] = uvs[tri_uvs.ravel()]
    return {"vertices": verts, "uvs": vertex_uvs, "triangles": tris}


def parse_procrustes_weights(path: Path) -> dict[str, np.ndarray]:
    """``procrustes_ids [33]`` landmark ids and ``procrustes_weights [33]`` from the pbtxt."""
    pairs = re.findall(r"procrustes_landmark_basis\s*\{\s*landmark_id:\s*(\d+)\s+weight:\s*([0-9.eE+-]+)",
                       path.read_text())
    return {"procrustes_ids": np.asarray([int(i) for i, _ in pairs], np.int32),
            "procrustes_weights": np.asarray([float(w) for _, w in pairs], np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--wheel", type=Path, default=None,
                        help="the mediapipe==0.10.14 wheel (full-range detector, selfie segmentation)")
    args = parser.parse_args()
    missing = [name for name in FILES if not (args.src / name).is_file()]
    if missing:
        raise SystemExit(f"missing in {args.src}: {', '.join(missing)}")
    DEST.mkdir(parents=True, exist_ok=True)
    rows = []
    for src_name, dst_name in FILES.items():
        dst = DEST / dst_name
        shutil.copyfile(args.src / src_name, dst)
        rows.append(f"| `{dst_name}` | {dst.stat().st_size} | `{sha256(dst)}` |")
    # the wheel's rows before the npz note, so the table stays one table
    rows += _copy_from_wheel(args.wheel) if args.wheel else _packaged_rows(WHEEL_FILES.values())
    arrays = parse_canonical_obj(DEST / "canonical_face_model.obj")
    arrays |= parse_procrustes_weights(DEST / "geometry_pipeline_metadata_landmarks.pbtxt")
    np.savez_compressed(DEST / "canonical_face_model.npz", **arrays)
    rows.append("\n`canonical_face_model.npz`: `vertices [468,3]` (cm), `uvs [468,2]`, "
                "`triangles [898,3]`, `procrustes_ids [33]`, `procrustes_weights [33]`, "
                "parsed from the two files above.")
    readme = DEST / "README.md"
    # other tools' sections (the iBUG-68 mapping) follow this one: keep them
    rest = readme.read_text().partition("\n# `ibug68")[1:] if readme.is_file() else ("", "")
    readme.write_text(README_HEAD + "\n".join(rows) + "\n" + WHEEL_NOTE + "".join(rest))
    print(f"copied {len(FILES)} files to {DEST}")


def _copy_from_wheel(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        for member, name in WHEEL_FILES.items():
            (DEST / name).write_bytes(archive.read(member))
    return _packaged_rows(WHEEL_FILES.values())


def _packaged_rows(names) -> list[str]:
    return [f"| `{n}` | {(DEST / n).stat().st_size} | `{sha256(DEST / n)}` |" for n in names if (DEST / n).is_file()]


if __name__ == "__main__":
    main()
