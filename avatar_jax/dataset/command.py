"""``avatar-jax make-dataset --n N --aug dr|cpca|linear|none --skins deid|photo --out DIR``."""

from __future__ import annotations

import json
import sys

EXIT_USAGE = 2


def add_parser(subparsers) -> None:
    """Add the ``make-dataset`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "make-dataset", help="synthetic training renders with exact ground truth, sharded and resumable",
        description="Render N synthetic heads (augmented identities, random expression, pose, light, skin and "
                    "background) with their ground truth into DIR/shard-*.npz plus DIR/manifest.json. "
                    "Deterministic for a seed; a rerun skips finished shards. See docs/dataset.md.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n", type=int, default=10_000, help="images (default 10000)")
    p.add_argument("--aug", default="dr", choices=["dr", "cpca", "linear", "none"],
                   help="identity augmentation (default: the paper's DR interpolation)")
    p.add_argument("--skins", default="deid", choices=["deid", "photo"],
                   help="de-identified procedural skins (default) or textures baked from --skin-photos")
    p.add_argument("--skin-photos", nargs="+", default=(), help="face photos for --skins photo")
    p.add_argument("--backgrounds", nargs="+", default=["plain", "noise"], choices=["plain", "noise", "photo"],
                   help="background kinds drawn uniformly (default: plain noise; photo = crops of real photos)")
    p.add_argument("--background-photos", default="",
                   help="folder of face-free photos for --backgrounds photo (default: the packaged bank)")
    p.add_argument("--image-size", type=int, default=256, help="render side in pixels (default 256)")
    p.add_argument("--shard-size", type=int, default=256, help="images per shard (default 256)")
    p.add_argument("--num-sources", type=int, default=500, help="prior identities to blend (default 500)")
    p.add_argument("--num-skins", type=int, default=1000, help="de-identified skin pool (default 1000)")
    p.add_argument("--detect", action="store_true", help="also run MediaPipe's face mesh on every render")
    p.add_argument("--shard", default=None, help="make only shards k with k %% n == i, given as i/n")
    p.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run ``make-dataset`` from parsed arguments; returns the exit status."""
    from avatar_jax.dataset.make import DatasetConfig, make_dataset
    from avatar_jax.dataset.scenes import SceneConfig

    try:
        config = DatasetConfig(n=args.n, shard_size=args.shard_size, aug=args.aug, skins=args.skins,
                               num_sources=args.num_sources, num_skins=args.num_skins, detect=args.detect,
                               skin_photos=tuple(str(p) for p in args.skin_photos),
                               scene=SceneConfig(image_size=args.image_size, backgrounds=tuple(args.backgrounds),
                                                 background_photos=args.background_photos), seed=args.seed)
        shards = _shards(args.shard, config.num_shards)
        summary = make_dataset(config, args.out, shards=shards, progress=not args.no_progress)
    except ValueError as err:
        print(f"avatar-jax make-dataset: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(summary))
    return 0


def _shards(spec, count):
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be i/n, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {spec!r}")
    return [k for k in range(count) if k % n == i]
