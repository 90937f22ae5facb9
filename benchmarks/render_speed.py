"""Renderer and make-dataset throughput on this machine, side by side in one run.

    python benchmarks/render_speed.py [--batch 64] [--repeats 3] [--dataset 256]

Rows (256x256 output, 2x2 supersampled coverage, 512² skins, heads posed as make-dataset poses
them): ``render_scenes`` with one shaded sample per pixel (the default), with every sample
shaded, and the rendered evaluation suite's per-image path (``evaluate.rendered.render_head``,
the peer this renderer replaces for synthetic data). Then ``make_dataset`` end to end (shapes,
skins, render, ground truth, compressed shard write) on ``--dataset`` images. Best of
``--repeats`` after a warm-up call; images/s and the ratio to the peer.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_seconds


def main(argv=None) -> None:
    from avatar_jax.dataset import make as mk
    from avatar_jax.dataset import scenes as sc
    from avatar_jax.evaluate.rendered import render_head
    from avatar_jax.render.scene import Lighting, RenderSettings, Scenes, fit_tile_budget, render_scenes
    from avatar_jax.texture.caps import extend_vertices

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dataset", type=int, default=768, help="images for the make-dataset row (0: skip)")
    args = ap.parse_args(argv)
    config = mk.DatasetConfig(n=args.batch, shard_size=args.batch, num_sources=50)
    ctx = mk._context(config)
    shard_inputs = np.random.default_rng(0)
    b = args.batch
    shapes = ctx.sources.shapes[shard_inputs.integers(0, ctx.sources.num, b)].astype(np.float32)
    camera = sc.sample_cameras(shard_inputs, b, config.scene)
    _, textures = mk._draw_skins(shard_inputs, b, config, ctx)
    lights = sc.sample_lights(shard_inputs, b)
    backgrounds = sc.sample_backgrounds(shard_inputs, b, 256)
    verts = extend_vertices(ctx.caps, jnp.asarray(shapes))
    scenes = Scenes(verts, camera, jnp.asarray(textures),
                    Lighting(lights.sh, lights.specular, lights.shininess, lights.light_dir), jnp.asarray(backgrounds))
    base = fit_tile_budget(ctx.capped, verts, camera, RenderSettings(image_size=(256, 256)))
    rows = {}
    for name, settings in (("render_scenes, one shaded sample / pixel", base),
                           ("render_scenes, every sample shaded", dataclasses.replace(base, shade_every_sample=True))):
        render = lambda s=settings: jax.block_until_ready(render_scenes(ctx.capped, scenes, s).images)  # noqa: E731
        t = best_seconds(render, args.repeats)
        rows[name] = b / t
    peer_n = min(b, 16)
    tex = [jnp.asarray(t, jnp.float32) / 255.0 for t in textures[:peer_n]]
    verts_np = np.asarray(verts)

    def peer():
        for i in range(peer_n):
            render_head(ctx.capped, verts_np[i], jax.tree.map(lambda a: a[i], camera), (256, 256), tex[i],
                        backgrounds[i].astype(np.float32) / 255.0, (0.3, 0.3, 1.0))

    rows["peer: evaluate.rendered.render_head (per image)"] = peer_n / best_seconds(peer, args.repeats)
    if args.dataset:
        with tempfile.TemporaryDirectory() as out:
            cfg = mk.DatasetConfig(n=args.dataset, shard_size=min(256, args.dataset), num_sources=500)
            # Warm-up: compile the renders of a few tile budgets and the per-shard functions.
            mk.make_dataset(dataclasses.replace(cfg, n=3 * cfg.shard_size, seed=99), out + "/warm", progress=False)
            summary = mk.make_dataset(cfg, out + "/run", progress=False)
            rows[f"make_dataset end to end ({args.dataset} images, DR, de-identified skins)"] = summary["images_per_s"]
    peer_rate = rows["peer: evaluate.rendered.render_head (per image)"]
    print(f"{'path':<72} {'images/s':>9} {'vs peer':>8}")
    for name, rate in rows.items():
        print(f"{name:<72} {rate:9.1f} {rate / peer_rate:7.1f}x")


if __name__ == "__main__":
    main()
