"""Do several photos of one person give a more consistent shape? Single-photo fits against
fit_joint on the identity-labelled test photos.

    python experiments/joint_identity.py [--photos ../shared/testdata]

Faces as in ``experiments/identity_auc.py`` (detected, labelled left to right, copies of one
photo left out). Each face's neutral face shape (identity + corrective, no expression, face
region, rigidly aligned before comparing) is taken from

- its single-photo fit (the default landmark fit), and
- for a person with n >= 2 photos, fit_joint over every way of splitting the photos into two
  disjoint halves (sizes n//2 and n - n//2): each half's shared identity plus the mean of its
  photos' correctives.

Same-person distances: single vs single photo; joint half vs the other half. Different-person
distances: every pair of shapes of different people in the same mode (a joint half of one
person against a joint half or a single photo of another). Prints the means and the
verification AUC of both, and writes ``docs/batch/joint_identity.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from identity_auc import REPO, _faces, _neutral, _rigid_rms, verification_summary


def _halves(members: list[int]):
    """Every split of ``members`` into two disjoint halves (each split once)."""
    n = len(members)
    seen = set()
    for first in itertools.combinations(members, n // 2):
        rest = tuple(m for m in members if m not in first)
        key = frozenset((first, rest))
        if first and key not in seen:
            seen.add(key)
            yield list(first), list(rest)


def _joint_shape(model, faces, members, mask) -> np.ndarray:
    """The shared neutral face shape ``[Vf, 3]`` of fit_joint over ``members``."""
    from avatar_jax.fit import fit_joint
    from avatar_jax.pipeline import head_landmark_set

    lm = np.stack([np.asarray(faces[i][3].landmarks68, np.float32) for i in members])[None]
    sizes = np.stack([np.array(faces[i][2].shape[:2], np.float32) for i in members])[None]
    res = fit_joint(lm, sizes, model=model, landmark_set=head_landmark_set(model, "calibrated"))
    used = np.asarray(res.view_used)[0]
    alpha = np.asarray(res.identity)[0]
    shape = np.asarray(model.neutral) + np.einsum("k,kvd->vd", alpha, np.asarray(model.identity_basis))
    shape = shape + np.asarray(res.views.corrective)[0][used].mean(0)
    return shape[mask], int(used.sum())


def main(argv=None) -> None:
    from avatar_jax import pipeline
    from avatar_jax.model import load_head_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "testdata")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "batch")
    args = ap.parse_args(argv)
    model = load_head_model()
    mask = np.asarray(model.face_mask)
    faces = list(_faces(args.photos))
    single = [_neutral(model, pipeline.fit_faces(image, [face], model=model))[mask] for _, _, image, face in faces]
    people = {}
    for i, (_, name, _, _) in enumerate(faces):
        if name is not None:
            people.setdefault(name, []).append(i)

    # joint halves: (person, shape); a single-photo person enters with its single fit
    halves, same_joint, used_counts = [], [], []
    for name, members in people.items():
        if len(members) < 2:
            halves.extend((name, single[i]) for i in members)
            continue
        for a, b in _halves(members):
            (sa, na), (sb, nb) = _joint_shape(model, faces, a, mask), _joint_shape(model, faces, b, mask)
            used_counts += [(len(a), na), (len(b), nb)]
            same_joint.append(_rigid_rms(sa, sb))
            halves += [(name, sa), (name, sb)]
    diff_joint = [_rigid_rms(x, y) for (p, x), (q, y) in itertools.combinations(halves, 2) if p != q]

    same_single, diff_single = [], []
    for (i, (_, a, _, _)), (j, (_, b, _, _)) in itertools.combinations(enumerate(faces), 2):
        d = _rigid_rms(single[i], single[j])
        (same_single if a is not None and a == b else diff_single).append(d)

    result = {"faces": [[f, n] for f, n, _, _ in faces],
              "people_with_several_photos": {p: len(m) for p, m in people.items() if len(m) > 1},
              "photos_used_of_requested": used_counts}
    for mode, same, diff in (("single photo", same_single, diff_single), ("joint halves", same_joint, diff_joint)):
        result[mode] = verification_summary(mode, same, diff, width=14)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "joint_identity.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
