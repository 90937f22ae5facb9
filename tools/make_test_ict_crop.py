"""Write ``tests/data/ict_face_crop.npz``: the ICT-FaceKit head's face region (within 72 mm of
the nose tip) with its 68 landmark points, for the metric and EPnP tests, so the suite needs no
``../shared`` asset. MIT, USC ICT (``tests/data/LICENSE.ict-facekit``).

    python tools/make_test_ict_crop.py [--src ../shared/assets/ict_facekit/ict_head.npz]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CROP_MM = 72.0  # keeps the outer eye corners (70 mm from the nose tip)
NOSE_TIP = 30  # iBUG-68, 0-based


def crop(src: Path) -> dict[str, np.ndarray]:
    d = np.load(src)
    verts, faces, lm = d["vertices"], d["triangles"], d["landmarks68"]
    keep = np.linalg.norm(verts - verts[lm[NOSE_TIP]], axis=1) <= CROP_MM
    faces = faces[keep[faces].all(1)]
    used = np.unique(faces)
    new_id = np.full(len(verts), -1)
    new_id[used] = np.arange(len(used))
    return dict(vertices=verts[used].astype(np.float32), triangles=new_id[faces].astype(np.int32),
                landmarks68_ids=new_id[lm].astype(np.int32),  # -1: outside the crop (jaw)
                landmarks68_points=verts[lm].astype(np.float32),
                identity_mode0=d["identity_basis"][0][used].astype(np.float32),
                crop_mm=np.float32(CROP_MM), source_commit=d["source_commit"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "assets" / "ict_facekit" / "ict_head.npz")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "ict_face_crop.npz")
    args = ap.parse_args(argv)
    np.savez_compressed(args.out, **crop(args.src))
    shutil.copyfile(args.src.parent / "LICENSE", args.out.parent / "LICENSE.ict-facekit")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
