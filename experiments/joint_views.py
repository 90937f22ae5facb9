"""How much a shared identity helps: single-photo fits against fit_joint on synthetic people.

    python experiments/joint_views.py [--people 8] [--views 4 8] [--noise 0 2] [--seed 5]

Each person (identity from the model's prior) is seen in V photos with its own camera and
expression; landmarks are the model's 68 points (jaw on the silhouette) plus Gaussian noise.
Prints the mean face-region error (vertices within 100 mm of the nose tip) of the neutral shape
(identity + corrective) for the mean face, single-photo fits and fit_joint with either identity
prior. The table in docs/batch.md was measured with these settings.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from avatar_jax.fit import fit, fit_joint, synthetic
from avatar_jax.geometry import camera as cam
from avatar_jax.model import load_head_model
from avatar_jax.model.head import silhouette_landmarks, vertices


def people(model, count, views, noise, seed):
    """Landmarks ``[G, V, 68, 2]``, image sizes ``[G, V, 2]`` and true identities ``[G, Ki]``."""
    lms, sizes, ident = [], [], []
    rng = np.random.default_rng(seed)
    for g in range(count):
        b = synthetic.numpy(synthetic.sample(model, jax.random.PRNGKey(100 * seed + g), views))
        verts = jax.vmap(vertices, (None, None, 0))(model, b.identity[0], b.expression)
        pts = jax.vmap(lambda v, c: silhouette_landmarks(model, v, c))(verts, b.camera)
        clean = np.asarray(jax.vmap(cam.project)(b.camera, pts))
        lms.append(clean + noise * rng.normal(size=clean.shape))
        sizes.append(b.image_sizes)
        ident.append(b.identity[0])
    return np.stack(lms).astype(np.float32), np.stack(sizes), np.stack(ident)


def face_error(model, alpha, corrective, true_alpha):
    neutral = np.asarray(model.neutral)
    face = np.linalg.norm(neutral - neutral[np.argmax(neutral[:, 2])], axis=1) < 100.0
    basis = np.asarray(model.identity_basis).reshape(model.num_identity, -1)
    d = ((np.asarray(alpha) - true_alpha) @ basis).reshape(np.shape(alpha)[:-1] + (-1, 3)) + corrective
    return float(np.linalg.norm(d, axis=-1)[..., face].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--views", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 2.0])
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    model = load_head_model()
    print("| noise (px) | V | mean face | single photo | joint, prior per photo | joint, prior once |")
    print("|---|---|---|---|---|---|")
    for noise in args.noise:
        for v in args.views:
            lms, sizes, truth = people(model, args.people, v, noise, args.seed)
            single = fit(lms.reshape(-1, 68, 2), sizes.reshape(-1, 2), model=model)
            per_view_truth = np.repeat(truth, v, 0)
            row = [face_error(model, np.zeros_like(truth), 0.0, truth),
                   face_error(model, np.asarray(single.identity), np.asarray(single.corrective), per_view_truth)]
            for prior in ("per_photo", "once"):
                res = fit_joint(lms, sizes, model=model, identity_prior=prior)
                row.append(face_error(model, np.asarray(res.views.identity).reshape(-1, model.num_identity),
                                      np.asarray(res.views.corrective).reshape(-1, model.num_vertices, 3),
                                      per_view_truth))
            print(f"| {noise:g} | {v} | " + " | ".join(f"{x:.2f}" for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
