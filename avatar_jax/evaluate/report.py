"""Evaluation report: results.json / results.csv, matplotlib plots and a markdown summary.

    paths = write_report(out_dir, synthetic=run_synthetic(...), landmarks=run_landmark_suite(...),
                         docs_dir="docs")

Writes into ``out_dir``: ``results.json`` (summaries and every per-item number), ``results.csv``
(one row per scored item), ``armse_vs_d.png`` (mean ARMSE vs crop distance d per method, one panel
per noise level, like the paper's Fig. 3), ``armse_vs_yaw.png``, ``error_heatmap.png`` (per-vertex
error of one median example on the true mesh), ``landmark_overlays.png``, for the rendered suite
``rendered_armse_vs_d.png`` (ARMSE vs d and detected-landmark NME vs yaw) and
``rendered_example.png`` (a render with true and detected landmarks), and ``results.md``. With
``docs_dir`` the markdown is also written to ``docs_dir/results.md`` with the PNGs copied to
``docs_dir/results/``.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np

from avatar_jax.status import Status

CSV_COLUMNS = ("suite", "method", "noise_px", "item", "yaw_deg", "d_mm", "armse_mm",
               "reprojection_px", "status", "nme")
_COLOURS = {"landmark-only": "tab:blue", "full energy": "tab:red", "mean identity": "tab:gray", "eos-py": "tab:green",
            "regressor + full energy": "tab:purple"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- synthetic

def synthetic_summary(res) -> dict:
    """JSON-ready summary: mean/std/median ARMSE ``[D]`` and mean reprojection per method/noise."""
    rows = []
    for mi, method in enumerate(res.methods):
        for li, noise in enumerate(res.noise_levels):
            a = res.armse[mi, li]  # [n, D]
            ok = np.all(np.isfinite(a), -1)
            rows.append(dict(
                method=method, noise_px=float(noise), heads=int(a.shape[0]), failed=int((~ok).sum()),
                armse_mean=[_finite(v) for v in np.nanmean(a, 0)] if ok.any() else None,
                armse_std=[_finite(v) for v in np.nanstd(a, 0)] if ok.any() else None,
                armse_median=[_finite(v) for v in np.nanmedian(a, 0)] if ok.any() else None,
                reprojection_px_mean=_finite(np.nanmean(res.reprojection_error[mi, li]))))
    return dict(
        distances_mm=[float(d) for d in res.distances], noise_levels_px=[float(v) for v in res.noise_levels],
        methods=list(res.methods), skipped=res.skipped, config=res.config, rows=rows,
        truth_residual_mm=dict(mean=float(np.mean(res.residual_mm)), min=float(np.min(res.residual_mm)),
                               max=float(np.max(res.residual_mm))),
        deformation_rms_mm=float(np.mean(res.displacement_mm)),
        fit_seconds=res.fit_seconds, armse_seconds=res.armse_seconds,
        example={k: v for k, v in res.example.items() if k not in ("true_vertices", "error")})


def _synthetic_items(res) -> list[dict]:
    items = []
    for mi, method in enumerate(res.methods):
        for li, noise in enumerate(res.noise_levels):
            for i in range(res.armse.shape[2]):
                for di, d in enumerate(res.distances):
                    items.append(dict(suite="synthetic", method=method, noise_px=float(noise), item=f"head{i:03d}",
                                      yaw_deg=round(float(res.yaw_deg[i]), 3), d_mm=float(d),
                                      armse_mm=_finite(res.armse[mi, li, i, di]),
                                      reprojection_px=_finite(res.reprojection_error[mi, li, i]),
                                      status=Status.of(res.status[mi, li, i]).label, nme=None))
    return items


def plot_armse_vs_d(res, path: str | Path) -> Path:
    """Mean ARMSE vs d (band: 25-75th percentile over heads), one line per method, one panel per
    noise level."""
    plt = _plt()
    levels = len(res.noise_levels)
    fig, axes = plt.subplots(1, levels, figsize=(3.6 * levels, 3.4), sharey=True, squeeze=False)
    for li, ax in enumerate(axes[0]):
        for mi, method in enumerate(res.methods):
            a = res.armse[mi, li]
            if not np.isfinite(a).any():
                continue
            colour = _COLOURS.get(method)
            ax.plot(res.distances, np.nanmean(a, 0), "o-", color=colour, label=method)
            lo, hi = np.nanpercentile(a, [25, 75], axis=0)
            ax.fill_between(res.distances, lo, hi, color=colour, alpha=0.12)
        ax.set_title(f"landmark noise {res.noise_levels[li]:g} px")
        ax.set_xlabel("crop distance d (mm)")
        ax.set_xticks(res.distances)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("ARMSE (mm)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Synthetic heads (n = {res.armse.shape[2]}, out-of-space deformed, yaw "
                 f"±{res.config['yaw_deg']:g}°): mean, band = 25-75th percentile", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_armse_vs_yaw(res, path: str | Path, d_index: int = -1) -> Path:
    """ARMSE at one d vs head yaw, per method, at the lowest and highest noise level."""
    plt = _plt()
    picks = sorted({0, len(res.noise_levels) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 3.4), sharey=True, squeeze=False)
    for ax, li in zip(axes[0], picks):
        for mi, method in enumerate(res.methods):
            ax.scatter(res.yaw_deg, res.armse[mi, li, :, d_index], s=14, color=_COLOURS.get(method),
                       label=method, alpha=0.8)
        ax.set_title(f"noise {res.noise_levels[li]:g} px, d = {res.distances[d_index]:g} mm")
        ax.set_xlabel("head yaw (deg)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("ARMSE (mm)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _orthographic_pixels(verts: np.ndarray, yaw_deg: float, size: int, centre, scale) -> np.ndarray:
    """``[V, 3]`` (u, v, depth) of ``verts`` turned by ``yaw_deg`` about +Y, seen from +Z."""
    c, s = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    v = (verts - centre) @ rot.T
    return np.stack([size / 2 + scale * v[:, 0], size / 2 - scale * v[:, 1], 1000.0 - v[:, 2]], -1), v


def render_vertex_values(verts: np.ndarray, triangles: np.ndarray, values: np.ndarray, yaw_deg: float,
                         size: int, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """Orthographic shaded render ``[size, size, 3]`` of per-vertex ``values`` ``[V]`` on a mesh.

    Colours are interpolated per pixel from the three corners (the z-buffer of
    :func:`avatar_jax.render.raster.rasterize`); a pixel with a NaN corner is light grey
    (outside the crop), the background white. The head fills ~90% of the frame.
    """
    import jax.numpy as jnp
    from matplotlib import colormaps

    from avatar_jax.geometry.mesh import vertex_normals
    from avatar_jax.render.raster import rasterize

    verts, triangles = np.asarray(verts, np.float32), np.asarray(triangles, np.int32)
    centre = 0.5 * (verts.min(0) + verts.max(0))
    scale = 0.9 * size / np.max(verts.max(0) - verts.min(0))
    px, turned = _orthographic_pixels(verts, yaw_deg, size, centre, scale)
    tri_id, bary, _ = rasterize(jnp.asarray(px, jnp.float32), jnp.asarray(triangles), size, size,
                                perspective_correct=False)
    tri_id, bary = np.asarray(tri_id), np.asarray(bary)
    ids = triangles[np.maximum(tri_id, 0)]  # [H, W, 3]
    value = np.sum(bary * values[ids], -1)
    colour = colormaps[cmap](np.clip(value / vmax, 0, 1))[..., :3]
    colour = np.where(np.isnan(value)[..., None], 0.8, colour)
    normals = np.asarray(vertex_normals(jnp.asarray(turned, jnp.float32), jnp.asarray(triangles)))
    n = np.sum(bary[..., None] * normals[ids], -2)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = 0.45 + 0.55 * np.clip(n @ light, 0, 1)
    return np.where((tri_id >= 0)[..., None], colour * shade[..., None], 1.0)


def plot_error_heatmap(res, triangles, path: str | Path, size: int = 360) -> Path | None:
    """Per-vertex distance of the example's true mesh to the fitted surface (front + 3/4 view)."""
    ex = res.example
    if not ex:
        return None
    plt = _plt()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    err = np.asarray(ex["error"], np.float64)
    vmax = float(np.nanpercentile(err, 99)) if np.isfinite(err).any() else 1.0
    views = [render_vertex_values(ex["true_vertices"], triangles, err, yaw, size, vmax) for yaw in (0.0, 40.0)]
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.9))
    for ax, img, title in zip(axes, views, ("front", "yaw 40°")):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.colorbar(ScalarMappable(Normalize(0, vmax), colormaps["inferno"]), ax=axes, shrink=0.8,
                 label="distance to fitted surface (mm)")
    fig.suptitle(f"{ex['method']}, noise {ex['noise_px']:g} px, head {ex['head']} (median of the run): "
                 f"ARMSE {ex['armse']:.2f} mm at d = {ex['d']:g} mm; grey = outside the crop", fontsize=8.5)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _armse_cells(row: dict, num_distances: int) -> str:
    """Table cells of one method row: ARMSE mean ± std per d, the median at the largest d, and
    the mean reprojection error."""
    cells = (["n/a"] * (num_distances + 1) if row["armse_mean"] is None else
             [f"{m:.2f} ± {s:.2f}" for m, s in zip(row["armse_mean"], row["armse_std"])]
             + [f"{row['armse_median'][-1]:.2f}"])
    rp = row["reprojection_px_mean"]
    return " | ".join(cells + ["n/a" if rp is None else f"{rp:.2f}"])


def synthetic_markdown(res, summary: dict, image_prefix: str) -> str:
    ds = res.distances
    head = ("| method | noise (px) | " + " | ".join(f"d = {d:g} mm" for d in ds)
            + f" | median, d = {ds[-1]:g} | reproj. (px) | failed |")
    lines = [
        "## Synthetic benchmark (ground truth)", "",
        f"{res.armse.shape[2]} heads sampled from the model's identity and expression spaces "
        f"(seed {res.config['seed']}), moved out of the model space by {res.config['deformation']} "
        f"along the normals (RMS displacement {summary['deformation_rms_mm']:.2f} mm; distance of the true "
        f"meshes to the model's linear span {summary['truth_residual_mm']['mean']:.2f} mm RMS, "
        f"min {summary['truth_residual_mm']['min']:.2f}), posed at yaw ±{res.config['yaw_deg']:g}°, "
        f"pitch ±{res.config['pitch_deg']:g}°, roll ±{res.config['roll_deg']:g}°, landmarks projected "
        "from the deformed mesh (jaw on its silhouette) plus Gaussian noise. ARMSE in mm, mean ± std "
        "over heads (3DFAW protocol: 7-point + ICP alignment, nose-tip crops).", "",
        head, "|" + "---|" * (len(ds) + 5)]
    for row in summary["rows"]:
        lines.append(f"| {row['method']} | {row['noise_px']:g} | " + _armse_cells(row, len(ds))
                     + f" | {row['failed']}/{row['heads']} |")
    lines += [""] + [f"- *{m}*: not run: {why}." for m, why in res.skipped.items()]
    timing = ", ".join(f"{m} {s:.0f} s" for m, s in res.fit_seconds.items())
    lines += [f"- Wall time (2-core CPU, shared): fits {timing} (ours incl. compilation); ARMSE "
              f"{res.armse_seconds:.0f} s.", "",
              f"![ARMSE vs d]({image_prefix}armse_vs_d.png)", "",
              f"![ARMSE vs yaw]({image_prefix}armse_vs_yaw.png)", ""]
    if res.example:
        lines += [f"![per-vertex error]({image_prefix}error_heatmap.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- landmarks

def landmark_summary(res) -> dict:
    faces = [dict(image=f.name, status=f.status.label, image_size=list(f.image_size),
                  nme_detected=_finite(f.nme_detected), nme_fitted=_finite(f.nme_fitted),
                  nme_fit_to_labels=_finite(f.nme_fit_to_labels),
                  reprojection_px=_finite(f.reprojection_px)) for f in res.faces]
    return dict(data_dir=res.data_dir, faces=faces, mean={k: _finite(v) for k, v in res.mean.items()},
                seconds=res.seconds, notes=res.notes)


def _landmark_items(res) -> list[dict]:
    items = []
    for f in res.faces:
        for method, value in (("detected", f.nme_detected), ("fitted", f.nme_fitted),
                              ("fit to labels", f.nme_fit_to_labels)):
            items.append(dict(suite="landmarks", method=method, noise_px=None, item=f.name, yaw_deg=None,
                              d_mm=None, armse_mm=None, reprojection_px=None, status=f.status.label,
                              nme=_finite(value)))
    return items


def plot_landmark_overlays(res, path: str | Path, panel: int = 320) -> Path:
    """One panel per labelled face: labels (green), detected (red), fitted model (blue)."""
    plt = _plt()
    from avatar_jax.io.image import load_image

    n = len(res.faces)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, f in zip(axes[0], res.faces):
        image = load_image(f.image_path)
        lo, hi = f.labels.min(0), f.labels.max(0)
        pad = 0.35 * float(np.max(hi - lo))
        x0, y0 = np.maximum(lo - pad, 0).astype(int)
        x1, y1 = np.minimum(hi + pad, [image.shape[1], image.shape[0]]).astype(int)
        ax.imshow(image[y0:y1, x0:x1], extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))
        for pts, colour, label in ((f.labels, "lime", "label"), (f.detected, "red", "detected"),
                                   (f.fitted, "deepskyblue", "fitted")):
            if pts is not None:
                ax.scatter(pts[:, 0], pts[:, 1], s=7, color=colour, label=label, edgecolors="none")
        ax.set_xlim(x0 - 0.5, x1 - 0.5)
        ax.set_ylim(y1 - 0.5, y0 - 0.5)
        ax.set_title(f"{f.name}\nNME det {100 * f.nme_detected:.2f}%  fit {100 * f.nme_fitted:.2f}%", fontsize=8)
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def landmark_markdown(res, image_prefix: str) -> str:
    pct = lambda v: "n/a" if not math.isfinite(v) else f"{100 * v:.2f}"
    lines = ["## Landmark suite (human-labelled photos)", "",
             "68-point NME (% of sqrt(w h) of the label box) on the human-labelled images of the dev "
             "test data: the MediaPipe detector's points, the landmarks of the model fitted to them "
             "(full energy), and of the model fitted to the labels themselves.", "",
             "| image | status | detected | fitted to detected | fitted to labels | reproj. of the fit to detected (px) |",
             "|---|---|---|---|---|---|"]
    for f in res.faces:
        lines.append(f"| {f.name} | {f.status.label} | {pct(f.nme_detected)} | {pct(f.nme_fitted)} | "
                     f"{pct(f.nme_fit_to_labels)} | {f.reprojection_px:.2f} |")
    m = res.mean
    lines += [f"| **mean** | | {pct(m['nme_detected'])} | {pct(m['nme_fitted'])} | "
              f"{pct(m['nme_fit_to_labels'])} | |", ""]
    lines += [f"- {note}." for note in res.notes]
    lines += [f"- Wall time: detection {res.seconds['detect']:.1f} s, fits {res.seconds['fit']:.1f} s "
              "(incl. compilation).", "", f"![landmark overlays]({image_prefix}landmark_overlays.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- rendered

YAW_BINS = (0.0, 15.0, 30.0, 45.0, 60.0)


def _armse_stats(a: np.ndarray) -> dict:
    """Mean / std / median ``[D]`` over the rows of ``a`` ``[n, D]`` that are finite (None if none)."""
    ok = np.all(np.isfinite(a), -1)
    if not ok.any():
        return dict(armse_mean=None, armse_std=None, armse_median=None)
    return dict(armse_mean=[float(v) for v in a[ok].mean(0)], armse_std=[float(v) for v in a[ok].std(0)],
                armse_median=[float(v) for v in np.median(a[ok], 0)])


def _nme_by_yaw(res) -> list[dict]:
    """Detection rate and mean / median NME per |yaw| bin of :data:`YAW_BINS`."""
    rows = []
    yaw = np.abs(res.yaw_deg)
    for lo, hi in zip(YAW_BINS[:-1], YAW_BINS[1:]):
        sel = (yaw >= lo) & ((yaw < hi) | (hi == YAW_BINS[-1]))
        found = sel & res.found
        rows.append(dict(yaw_lo=lo, yaw_hi=hi, heads=int(sel.sum()), found=int(found.sum()),
                         nme_mean=_finite(np.mean(res.nme[found])) if found.any() else None,
                         nme_median=_finite(np.median(res.nme[found])) if found.any() else None,
                         nme_inner_mean=_finite(np.mean(res.nme_inner[found])) if found.any() else None))
    return rows


def rendered_summary(res) -> dict:
    """JSON-ready summary of :class:`avatar_jax.evaluate.rendered.RenderedResults`: detection
    rate, NME (all and per |yaw| bin), ARMSE ``[D]`` per method over the detected heads."""
    n = int(res.found.shape[0])
    rows = []
    for mi, method in enumerate(res.methods):
        a = res.armse[mi]
        rows.append(dict(method=method, heads=n, scored=int(np.all(np.isfinite(a), -1).sum()), **_armse_stats(a),
                         reprojection_px_mean=_finite(np.nanmean(res.reprojection_error[mi]))
                         if np.isfinite(res.reprojection_error[mi]).any() else None))
    found = res.found
    return dict(
        distances_mm=[float(d) for d in res.distances], methods=list(res.methods), skipped=res.skipped,
        config=res.config, textures=list(res.texture_names), rows=rows,
        detection=dict(heads=n, found=int(found.sum()), rate=float(found.mean())),
        nme=dict(mean=_finite(np.mean(res.nme[found])) if found.any() else None,
                 median=_finite(np.median(res.nme[found])) if found.any() else None,
                 inner_mean=_finite(np.mean(res.nme_inner[found])) if found.any() else None,
                 by_abs_yaw=_nme_by_yaw(res)),
        seconds=res.seconds,
        example={k: v for k, v in res.example.items() if k not in ("image", "detected", "true")})


def _rendered_items(res) -> list[dict]:
    items = []
    for i in range(res.found.shape[0]):
        items.append(dict(suite="rendered", method="detected", noise_px=None, item=f"head{i:03d}",
                          yaw_deg=round(float(res.yaw_deg[i]), 3), d_mm=None, armse_mm=None,
                          reprojection_px=None, status=(Status.OK if res.found[i] else Status.NO_FACE).label,
                          nme=_finite(res.nme[i])))
    for mi, method in enumerate(res.methods):
        for i in range(res.found.shape[0]):
            for di, d in enumerate(res.distances):
                items.append(dict(suite="rendered", method=method, noise_px=None, item=f"head{i:03d}",
                                  yaw_deg=round(float(res.yaw_deg[i]), 3), d_mm=float(d),
                                  armse_mm=_finite(res.armse[mi, i, di]),
                                  reprojection_px=_finite(res.reprojection_error[mi, i]),
                                  status=Status.of(res.status[mi, i]).label,
                                  nme=_finite(res.nme[i])))
    return items


def plot_rendered(res, path: str | Path) -> Path:
    """Left: mean ARMSE vs d per method over the detected heads (band: 25-75th percentile).
    Right: NME of the detected 68 (and 51 inner) points vs head yaw; renders with no face found
    as crosses on the axis."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 3.5))
    for mi, method in enumerate(res.methods):
        a = res.armse[mi][np.all(np.isfinite(res.armse[mi]), -1)]
        if not len(a):
            continue
        colour = _COLOURS.get(method)
        ax.plot(res.distances, a.mean(0), "o-", color=colour, label=method)
        lo, hi = np.percentile(a, [25, 75], axis=0)
        ax.fill_between(res.distances, lo, hi, color=colour, alpha=0.12)
    ax.set_xlabel("crop distance d (mm)")
    ax.set_ylabel("ARMSE (mm)")
    ax.set_xticks(res.distances)
    ax.set_title("ARMSE vs d (fits to detected points)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    f = res.found
    bx.scatter(res.yaw_deg[f], 100 * res.nme[f], s=16, color="tab:red", label="68 points")
    bx.scatter(res.yaw_deg[f], 100 * res.nme_inner[f], s=12, color="tab:blue", marker="s",
               label="51 inner points")
    if (~f).any():
        bx.scatter(res.yaw_deg[~f], np.zeros((~f).sum()), marker="x", color="k", label="no face found")
    bx.set_xlabel("head yaw (deg)")
    bx.set_ylabel("NME vs true landmarks (%)")
    bx.set_title(f"MediaPipe on the renders: {int(f.sum())}/{f.size} found", fontsize=9)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8)
    fig.suptitle(f"Rendered synthetic heads (n = {f.size}, yaw ±{res.config['yaw_deg']:g}°)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_rendered_example(res, path: str | Path) -> Path | None:
    """The example render (median NME) with the true (green) and detected (red) landmarks."""
    ex = res.example
    if not ex:
        return None
    plt = _plt()
    image, true = ex["image"], ex["true"]
    lo, hi = true.min(0), true.max(0)
    pad = 0.6 * float(np.max(hi - lo))
    x0, y0 = np.maximum(lo - pad, 0).astype(int)
    x1, y1 = np.minimum(hi + pad, [image.shape[1], image.shape[0]]).astype(int)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.9), gridspec_kw=dict(width_ratios=[4, 3]))
    axes[0].imshow(image)
    axes[0].set_title("render", fontsize=9)
    axes[1].imshow(image[y0:y1, x0:x1], extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))
    axes[1].scatter(true[:, 0], true[:, 1], s=9, color="lime", label="true", edgecolors="none")
    if np.all(np.isfinite(ex["detected"])):
        axes[1].scatter(ex["detected"][:, 0], ex["detected"][:, 1], s=9, color="red", label="detected",
                        edgecolors="none")
    axes[1].set_xlim(x0 - 0.5, x1 - 0.5)
    axes[1].set_ylim(y1 - 0.5, y0 - 0.5)
    axes[1].legend(fontsize=7, loc="lower left")
    nme = "no face found" if not math.isfinite(ex["nme"]) else f"NME {100 * ex['nme']:.2f}%"
    axes[1].set_title(f"head {ex['head']}, yaw {ex['yaw_deg']:.0f}°: {nme} (median of the run)", fontsize=9)
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def rendered_markdown(res, summary: dict, image_prefix: str) -> str:
    ds = res.distances
    det, nme = summary["detection"], summary["nme"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"
    cfg = res.config
    lines = [
        "## Rendered synthetic benchmark (detector in the loop)", "",
        f"The same {det['heads']} out-of-space heads and cameras as the synthetic benchmark (seed "
        f"{cfg['seed']}, yaw ±{cfg['yaw_deg']:g}°), rendered at {cfg['image_size'][1]}×{cfg['image_size'][0]} px "
        f"({cfg['supersample']}× supersampled) with eye/mouth caps, a {cfg['texture_size']}² skin texture baked "
        f"from a real photo ({', '.join(res.texture_names)}, round robin), Lambert light (ambient "
        f"{cfg['ambient']:g}) and a blurred cluttered background; MediaPipe (default route) detects the 68 "
        "points, each method fits them, ARMSE against the true mesh as above.", "",
        f"**Detection**: a face was found in {det['found']}/{det['heads']} renders "
        f"({100 * det['rate']:.0f}%); heads without one are failures and are left out of the ARMSE rows "
        "(never the batch).", "",
        ("| method | " + " | ".join(f"d = {d:g} mm" for d in ds)
         + f" | median, d = {ds[-1]:g} | reproj. (px) | scored |"),
        "|" + "---|" * (len(ds) + 4)]
    for row in summary["rows"]:
        lines.append(f"| {row['method']} | " + _armse_cells(row, len(ds)) + f" | {row['scored']}/{row['heads']} |")
    lines += [""] + [f"- *{m}*: not run: {why}." for m, why in res.skipped.items()]
    lines += ["", "**Landmark NME** of the detected points against the true projected landmarks (% of "
              "sqrt(w h) of the true box; jaw = the true mesh's silhouette points):", "",
              "| abs yaw | found | NME 68 mean | NME 68 median | NME inner 51 mean |", "|---|---|---|---|---|"]
    for b in nme["by_abs_yaw"]:
        lines.append(f"| {b['yaw_lo']:g}-{b['yaw_hi']:g}° | {b['found']}/{b['heads']} | {pct(b['nme_mean'])} | "
                     f"{pct(b['nme_median'])} | {pct(b['nme_inner_mean'])} |")
    lines += [f"| **all** | {det['found']}/{det['heads']} | {pct(nme['mean'])} | {pct(nme['median'])} | "
              f"{pct(nme['inner_mean'])} |", ""]
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items())
    lines += ["- The heads wear another person's face texture on the model's UV layout, so part of the NME "
              "is texture/geometry mismatch (e.g. a smiling photo on a neutral mouth), not detector error.",
              f"- Wall time (2-core CPU, shared): {secs} (ours incl. compilation).", "",
              f"![rendered: ARMSE vs d and NME vs yaw]({image_prefix}rendered_armse_vs_d.png)", ""]
    if res.example:
        lines += [f"![rendered example]({image_prefix}rendered_example.png)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- output

def _code_version() -> str:
    """`` at commit abc1234`` (+ `` with uncommitted changes`` under avatar_jax/), or "" outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True,
                                        timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        dirty = run("status", "--porcelain", "--", "avatar_jax")
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" at commit {commit}" + (" with uncommitted changes under avatar_jax/" if dirty else "")


def write_report(out_dir: str | Path, synthetic=None, landmarks=None, docs_dir: str | Path | None = None,
                 triangles=None, command: str | None = None, rendered=None) -> dict:
    """Write results.json, results.csv, the plots and results.md (see the module docstring).

    ``triangles`` ``[F, 3]``: topology for the heat map (default: the bundled model's).
    ``rendered``: :class:`avatar_jax.evaluate.rendered.RenderedResults` (its section follows the
    synthetic one; plots ``rendered_armse_vs_d.png`` and ``rendered_example.png``).
    Returns ``{name: path}`` of everything written.
    """
    if synthetic is None and landmarks is None and rendered is None:
        raise ValueError("write_report: nothing to report (pass synthetic=, rendered= and/or landmarks=)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, summary, items, sections = {}, {}, [], []
    header = ["# Evaluation results", "", "Generated by `avatar-jax eval`"
              + (f" (`{command}`)" if command else "") + f"{_code_version()}; numbers as measured by that run.", ""]
    if synthetic is not None:
        if triangles is None:
            from avatar_jax.model import load_head_model

            triangles = np.asarray(load_head_model().triangles)
        summary["synthetic"] = synthetic_summary(synthetic)
        items += _synthetic_items(synthetic)
        written["armse_vs_d"] = plot_armse_vs_d(synthetic, out / "armse_vs_d.png")
        written["armse_vs_yaw"] = plot_armse_vs_yaw(synthetic, out / "armse_vs_yaw.png")
        heat = plot_error_heatmap(synthetic, triangles, out / "error_heatmap.png")
        if heat is not None:
            written["error_heatmap"] = heat
        sections.append(lambda prefix: synthetic_markdown(synthetic, summary["synthetic"], prefix))
    if rendered is not None:
        summary["rendered"] = rendered_summary(rendered)
        items += _rendered_items(rendered)
        written["rendered_armse_vs_d"] = plot_rendered(rendered, out / "rendered_armse_vs_d.png")
        example = plot_rendered_example(rendered, out / "rendered_example.png")
        if example is not None:
            written["rendered_example"] = example
        sections.append(lambda prefix: rendered_markdown(rendered, summary["rendered"], prefix))
    if landmarks is not None:
        summary["landmarks"] = landmark_summary(landmarks)
        items += _landmark_items(landmarks)
        written["landmark_overlays"] = plot_landmark_overlays(landmarks, out / "landmark_overlays.png")
        sections.append(lambda prefix: landmark_markdown(landmarks, prefix))
    written["json"] = out / "results.json"
    written["json"].write_text(json.dumps(dict(summary=summary, items=items), indent=1, allow_nan=False))
    written["csv"] = out / "results.csv"
    with open(written["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in items)
    markdown = lambda prefix: "\n".join(header + [s(prefix) for s in sections])
    written["markdown"] = out / "results.md"
    written["markdown"].write_text(markdown(""))
    if docs_dir is not None:
        docs = Path(docs_dir)
        (docs / "results").mkdir(parents=True, exist_ok=True)
        for key, path in list(written.items()):
            if path.suffix == ".png":
                shutil.copyfile(path, docs / "results" / path.name)
        written["docs_markdown"] = docs / "results.md"
        written["docs_markdown"].write_text(markdown("results/"))
    return written
