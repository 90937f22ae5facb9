"""Embed MediaPipe's 468 canonical-face points on the neutral head's surface.

    python tools/embed_mediapipe_on_head.py [--iterations 8] [--identity-prior 1.0]

Writes ``avatar_jax/fit/data/mediapipe468_on_head.npz``:

* ``faces [468, 3]`` int32 head vertex ids and ``bary [468, 3]`` float32 barycentric
  coordinates of each MediaPipe point on the head surface (valid for every identity/expression,
  since they share the topology);
* ``residual_mm [468]``: distance of each registered canonical point to its surface point (the
  part of the canonical face the head cannot represent, e.g. eyelid-margin points over the
  head's open eye);
* ``rigid_residual_mm [468]``: the same distance to the *neutral* head after the similarity alone;
* ``identity [Ki]``: the identity coefficients of the head shape the canonical face was
  registered to; ``similarity_scale``, ``similarity_rotation [3, 3]``, ``similarity_translation [3]``.

Registration (canonical cm -> head mm; both use ICT/MediaPipe axes: +X subject's left, +Y up, +Z
out of the face):

1. Similarity from seven obvious correspondences: eye corners 33/263/133/362, nose tip 1, mouth
   corners 61/291 <-> iBUG 36/45/39/42/30/48/54 of the head.
2. Non-rigid refinement in the head model's own identity space (a few alternations): closest
   points of the canonical points on the current head, then identity coefficients alpha by ridge
   least squares (prior alpha ~ N(0, sigma^2)) pulling the head's surface points onto the
   canonical points (robust Geman-McClure weights, 3 mm), plus the 51 inner iBUG landmarks of the
   head onto their MediaPipe baseline vertices and the seven anchors (heavier); then the
   similarity again from all correspondences. Fitting identity, not a free deformation, keeps the
   head a plausible head, so the embedding transfers to the neutral topology unchanged.
3. Final closest point on the fitted head: (face, bary) per point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avatar_jax.landmarks import ibug68  # noqa: E402
from avatar_jax.model import load_head_model  # noqa: E402
from avatar_jax.geometry.closest import closest_point_on_mesh  # noqa: E402

OUT = REPO / "avatar_jax" / "fit" / "data" / "mediapipe468_on_head.npz"
ANCHORS_MP = (33, 263, 133, 362, 1, 61, 291)
ANCHORS_IBUG = (36, 45, 39, 42, 30, 48, 54)
CM_TO_MM = 10.0
ROBUST_MM = 3.0
ANCHOR_WEIGHT = 20.0
INNER_WEIGHT = 2.0


def umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None):
    """Similarity (s, R, t) minimising sum w |s R src + t - dst|^2. src, dst ``[N, 3]``."""
    w = np.ones(len(src)) if w is None else np.asarray(w, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / (w @ np.sum(a * a, 1))
    return scale, rot, mu_d - scale * rot @ mu_s


def sample(verts, faces, bary):
    return np.einsum("nk,nkd->nd", bary, verts[faces])


def surface_matrix(faces: np.ndarray, bary: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``[3N, Ki]``: derivative of the surface points w.r.t. the identity coefficients."""
    return np.einsum("nk,ankd->nda", bary, basis[:, faces]).reshape(-1, basis.shape[0])


def register(model, iterations: int, identity_prior: float):
    neutral = np.asarray(model.neutral, np.float64)
    tris = np.asarray(model.triangles)
    basis = np.asarray(model.identity_basis, np.float64)
    sigma = np.asarray(model.identity_sigma, np.float64)
    lm_faces, lm_bary = np.asarray(model.landmark_faces), np.asarray(model.landmark_bary, np.float64)
    canon = ibug68.canonical_mesh()[0] * CM_TO_MM

    head_lm = sample(neutral, lm_faces, lm_bary)
    s, rot, t = umeyama(canon[list(ANCHORS_MP)], head_lm[list(ANCHORS_IBUG)])
    rigid = canon @ (s * rot).T + t
    _, rigid_residual, _, _ = closest_point_on_mesh(neutral, tris, rigid)

    inner_mp = np.array(ibug68.BASELINE_INDICES[17:])
    inner_ibug = np.arange(17, 68)
    # Anchors are among the inner points; give them the extra weight on top.
    lm_w = np.full(51, INNER_WEIGHT)
    for i in ANCHORS_IBUG:
        lm_w[i - 17] = ANCHOR_WEIGHT
    alpha = np.zeros(len(sigma))
    verts = neutral
    for it in range(iterations):
        pts = canon @ (s * rot).T + t
        _, dist, fid, bary = closest_point_on_mesh(verts, tris, pts)
        robust = ROBUST_MM**2 / (dist**2 + ROBUST_MM**2)
        faces = tris[fid]
        # alpha: surface points at (faces, bary) and inner landmarks onto their canonical points
        a_surf = surface_matrix(faces, bary, basis)
        r_surf = (pts - sample(neutral, faces, bary)).reshape(-1)
        a_lm = surface_matrix(lm_faces[inner_ibug], lm_bary[inner_ibug], basis)
        r_lm = (pts[inner_mp] - sample(neutral, lm_faces[inner_ibug], lm_bary[inner_ibug])).reshape(-1)
        w = np.concatenate([np.repeat(robust, 3), np.repeat(lm_w, 3)])
        a = np.concatenate([a_surf, a_lm])
        r = np.concatenate([r_surf, r_lm])
        normal = (a * w[:, None]).T @ a + identity_prior * np.diag(1.0 / sigma**2)
        alpha = np.linalg.solve(normal, (a * w[:, None]).T @ r)
        verts = neutral + np.einsum("k,kvd->vd", alpha, basis)
        # similarity again, from all correspondences on the new head
        surf = sample(verts, faces, bary)
        lm = sample(verts, lm_faces[inner_ibug], lm_bary[inner_ibug])
        s, rot, t = umeyama(np.concatenate([canon, canon[inner_mp]]), np.concatenate([surf, lm]),
                            np.concatenate([robust, lm_w]))
        print(f"iteration {it}: median distance {np.median(dist):.2f} mm, p90 {np.percentile(dist, 90):.2f}, "
              f"|alpha/sigma| {np.linalg.norm(alpha / sigma):.2f}, scale {s:.3f}")
    pts = canon @ (s * rot).T + t
    _, residual, fid, bary = closest_point_on_mesh(verts, tris, pts)
    lm_err = np.linalg.norm(pts[inner_mp] - sample(verts, lm_faces[inner_ibug], lm_bary[inner_ibug]), axis=1)
    return dict(faces=tris[fid].astype(np.int32), bary=bary.astype(np.float32),
                residual_mm=residual.astype(np.float32), rigid_residual_mm=rigid_residual.astype(np.float32),
                identity=alpha.astype(np.float32), similarity_scale=np.float32(s),
                similarity_rotation=rot.astype(np.float32), similarity_translation=t.astype(np.float32),
                inner_landmark_error_mm=lm_err.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--identity-prior", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out = register(load_head_model(), args.iterations, args.identity_prior)
    np.savez(args.out, **out)
    for name in ("rigid_residual_mm", "residual_mm", "inner_landmark_error_mm"):
        v = out[name]
        print(f"{name}: median {np.median(v):.2f}, mean {v.mean():.2f}, p90 {np.percentile(v, 90):.2f}, "
              f"max {v.max():.2f} (argmax {int(np.argmax(v))})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
