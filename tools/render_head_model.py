"""Render the committed head model for a visual check: docs/head_{front,side,wireframe}.png.

    python tools/render_head_model.py [--path model.npz] [--out docs]

Orthographic views drawn with matplotlib (painter's algorithm, back-face culling, flat
Lambert shading). The wireframe shows the 68 landmark embeddings (red), the alignment
landmarks (yellow) and the sliding-contour candidates (one polyline per jaw landmark, front
point circled).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avatar_jax.geometry.mesh import vertex_normals  # noqa: E402
from avatar_jax.model import ALIGNMENT_LANDMARKS, landmarks, load_head_model  # noqa: E402


def view_rotation(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """Rotation taking model coordinates to camera coordinates (camera looks down -Z).

    yaw < 0 shows the subject's right side (-X) with the face towards image right;
    yaw = -90 is a right profile.
    """
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    ry = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ ry


def draw_mesh(ax, verts, faces, rot, face_color=(0.85, 0.72, 0.62), edges=False):
    """Flat-shaded, back-face-culled, depth-sorted mesh; returns camera-space vertices."""
    cam = verts @ rot.T
    tri = cam[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    visible = n[:, 2] > 0
    order = np.argsort(tri[:, :, 2].mean(1))
    order = order[visible[order]]
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = 0.25 + 0.75 * np.clip(n[order] @ light, 0, 1)
    colors = np.clip(shade[:, None] * np.asarray(face_color)[None], 0, 1)
    if edges:
        colors = np.full((len(order), 3), 0.97)
    pc = PolyCollection(tri[order][:, :, :2], facecolors=colors,
                        edgecolors=(0.25, 0.25, 0.35) if edges else colors,
                        linewidths=0.25 if edges else 0.3)
    ax.add_collection(pc)
    pad = 10
    ax.set_xlim(cam[:, 0].min() - pad, cam[:, 0].max() + pad)
    ax.set_ylim(cam[:, 1].min() - pad, cam[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    return cam


def draw_landmarks(ax, model, verts, rot):
    """Landmarks and contour candidates on the camera-facing side only (vertex normal test)."""
    normals = np.asarray(vertex_normals(model.neutral, model.triangles)) @ rot.T
    facing = normals[:, 2] > -0.05
    lm_facing = facing[np.asarray(model.landmark_faces)].any(1)
    lm = np.asarray(landmarks(model, verts)) @ rot.T
    ax.scatter(lm[lm_facing, 0], lm[lm_facing, 1], s=9, c="red", zorder=5)
    align = lm[[i for i in ALIGNMENT_LANDMARKS if lm_facing[i]]]
    ax.scatter(align[:, 0], align[:, 1], s=24, facecolors="none", edgecolors="yellow",
               linewidths=1.0, zorder=6)
    cam = verts @ rot.T
    cc = np.asarray(model.contour_candidates)
    cc = cc[facing[cc[:, 0]]]  # rows whose front point faces the camera
    cmap = plt.get_cmap("viridis")
    segs = [cam[row][:, :2] for row in cc]
    ax.add_collection(LineCollection(segs, colors=[cmap(i / 16) for i in range(len(cc))],
                                     linewidths=1.5, zorder=4))
    pts = cam[cc.ravel()]
    ax.scatter(pts[:, 0], pts[:, 1], s=7, c="blue", zorder=5)
    front = cam[cc[:, 0]]
    ax.scatter(front[:, 0], front[:, 1], s=30, facecolors="none", edgecolors="blue", zorder=6)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--path", type=Path, default=None, help="model .npz (default: committed lowpoly)")
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args(argv)
    model = load_head_model(path=args.path) if args.path else load_head_model()
    verts = np.asarray(model.neutral, np.float64)
    faces = np.asarray(model.triangles)
    args.out.mkdir(parents=True, exist_ok=True)
    title = f"{model.num_vertices} vertices, {faces.shape[0]} triangles"

    for name, yaw in (("front", 0.0), ("side", -90.0)):
        fig, ax = plt.subplots(figsize=(6, 7), dpi=110)
        draw_mesh(ax, verts, faces, view_rotation(yaw))
        ax.set_title(f"{name}: {title}", fontsize=9)
        fig.savefig(args.out / f"head_{name}.png", bbox_inches="tight")
        plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 8), dpi=110)
    for ax, yaw in zip(axes, (0.0, -50.0)):
        rot = view_rotation(yaw)
        draw_mesh(ax, verts, faces, rot, edges=True)
        draw_landmarks(ax, model, verts, rot)
        ax.set_title(f"yaw {yaw:g} deg: 68 landmarks (red), alignment points (yellow), "
                     "contour candidates (lines, front circled)", fontsize=8)
    fig.savefig(args.out / "head_wireframe.png", bbox_inches="tight")
    plt.close(fig)
    print("wrote", *(args.out / f"head_{n}.png" for n in ("front", "side", "wireframe")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
