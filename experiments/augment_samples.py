"""Shape augmentation: a picture of sources and samples, and the numbers in docs/augment.md.

    python experiments/augment_samples.py [--out docs/augment] [--sources 500] [--samples 2000]

Writes ``samples.png`` (rows: picked source subject, DR, linear and C-PCA samples drawn from that
subject's group; front view) and ``stats.json`` (round-trip error, timings, plausibility per
method), and prints them as markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np

from avatar_jax.augment import (
    AugmentConfig,
    augment_shapes,
    component_centroids,
    dr_basis,
    dr_decode,
    dr_encode,
    plausibility,
    sample_identities,
)
from avatar_jax.geometry.camera import Camera
from avatar_jax.model import load_head_model
from avatar_jax.render.preview import render_mesh

REPO = Path(__file__).resolve().parents[1]
ROWS = (("source", None), ("DR", "dr"), ("linear", "linear"), ("C-PCA", "cpca"))


def front_camera(size: int) -> Camera:
    return Camera(rotvec=jnp.array([0.0, 0.35, 0.0]), translation=jnp.array([0.0, 25.0, -430.0]),
                  log_fs=jnp.asarray(0.0), focal=jnp.asarray(float(size)),
                  principal=jnp.array([size / 2, size / 2]))


def render_grid(model, rows, size=220) -> np.ndarray:
    """``rows``: list of (label, shapes [C, V, 3]) -> an RGB uint8 grid image."""
    camera = front_camera(size)
    strips = []
    for label, shapes in rows:
        tiles = [np.asarray(render_mesh(s, model.triangles, camera, (size, size))) for s in shapes]
        strip = (np.clip(np.concatenate(tiles, 1), 0, 1) * 255).astype(np.uint8)
        cv2.putText(strip, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 30, 30), 2)
        strips.append(strip)
    return np.concatenate(strips, 0)


def picture(model, sources, out: Path, columns=6, seed=11) -> None:
    results = {method: augment_shapes(model, method, 200, seed=seed, sources=sources)
               for _, method in ROWS if method}
    picked = results["dr"].sources[:, 0]
    first = [int(np.flatnonzero(picked == p)[0]) for p in dict.fromkeys(picked.tolist())][:columns]
    rows = [(label, sources.shapes[picked[first]] if method is None else results[method].shapes[first])
            for label, method in ROWS]
    image = render_grid(model, rows)
    cv2.imwrite(str(out / "samples.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def dr_numbers(model, sources) -> dict:
    basis = dr_basis(sources.shapes.mean(0), np.asarray(model.triangles))
    heads = np.concatenate([np.asarray(model.neutral, np.float64)[None], sources.shapes[:64]])
    out = {}
    for exact in (True, False):
        decoded = dr_decode(basis, dr_encode(basis, heads, exact=exact),
                            anchor=component_centroids(basis, heads))
        err = np.sqrt(np.mean(np.sum((decoded - heads) ** 2, -1), -1))
        out[f"round_trip_rms_mm_exact_{exact}"] = {"median": float(np.median(err)), "max": float(err.max())}
    for batch in (1, 64):
        shapes = heads[:batch]
        features = dr_encode(basis, shapes)
        out[f"encode_s_per_shape_batch_{batch}"] = best_of(lambda s=shapes: dr_encode(basis, s)) / batch
        out[f"encode_plain_s_per_shape_batch_{batch}"] = best_of(
            lambda s=shapes: dr_encode(basis, s, exact=False)) / batch
        out[f"decode_s_per_shape_batch_{batch}"] = best_of(lambda f=features: dr_decode(basis, f)) / batch
    out["basis_s"] = best_of(lambda: dr_basis(sources.shapes.mean(0), np.asarray(model.triangles)))
    return out


def nearest_source_rms(samples, sources) -> np.ndarray:
    """``[n]`` per-vertex RMS (mm) from each sample to its closest source shape."""
    a = samples.reshape(len(samples), -1)
    b = sources.reshape(len(sources), -1)
    sq = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq.min(1), 0) / samples.shape[1])


def plausibility_numbers(model, sources, n, seed=0) -> dict:
    def summary(x):
        return {"median": float(np.median(x)), "p5": float(np.percentile(x, 5)),
                "p95": float(np.percentile(x, 95)), "max": float(np.max(x))}

    src = plausibility(model, sources.shapes)
    out = {"sources": {"residual_rms_mm": summary(src.residual_rms), "prior_energy": summary(src.prior_energy)}}
    variants = [("dr", "dr", AugmentConfig()), ("dr_plain", "dr", AugmentConfig(exact_dr=False)),
                ("linear", "linear", AugmentConfig()), ("cpca", "cpca", AugmentConfig()),
                ("none", "none", AugmentConfig())]
    for name, method, config in variants:
        t = time.perf_counter()
        res = augment_shapes(model, method, n, seed=seed, sources=sources, config=config)
        seconds = time.perf_counter() - t
        p = plausibility(model, res.shapes)
        out[name] = {"residual_rms_mm": summary(p.residual_rms), "prior_energy": summary(p.prior_energy),
                     "nearest_source_rms_mm": summary(nearest_source_rms(res.shapes, sources.shapes)),
                     "weight_sum": summary(res.weights.sum(1)), "seconds": seconds}
    return out


def markdown(stats: dict) -> str:
    lines = [("| set | off-span RMS mm (median / p95 / max) | prior energy (p5 / median / p95) | "
              "nearest source RMS mm (median) | weight sum (median) |"), "|---|---|---|---|---|"]
    for name, s in stats["plausibility"].items():
        r, e = s["residual_rms_mm"], s["prior_energy"]
        near = s.get("nearest_source_rms_mm", {}).get("median", float("nan"))
        wsum = s.get("weight_sum", {}).get("median", float("nan"))
        lines.append(f"| {name} | {r['median']:.3g} / {r['p95']:.3g} / {r['max']:.3g} | "
                     f"{e['p5']:.1f} / {e['median']:.1f} / {e['p95']:.1f} | {near:.2f} | {wsum:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs" / "augment"))
    ap.add_argument("--sources", type=int, default=500)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--skip-stats", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_head_model()
    sources = sample_identities(model, 0, args.sources)
    picture(model, sources, out)
    print(f"wrote {out / 'samples.png'}")
    if args.skip_stats:
        return
    stats = {"num_sources": args.sources, "num_samples": args.samples, "dr": dr_numbers(model, sources),
             "plausibility": plausibility_numbers(model, sources, args.samples)}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats["dr"], indent=2))
    print(markdown(stats))


if __name__ == "__main__":
    main()
