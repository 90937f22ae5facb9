"""``avatar-jax fit-batch INPUT --out DIR``: the command line of :func:`avatar_jax.batch.fit_batch`.

Exit status 0 when every item of this run's input (or shard) is ok, 1 when some failed (their
records say why), 2 for a usage error (bad INPUT, bad option, a DIR started with other settings).
"""

from __future__ import annotations

import sys

EXIT_PARTIAL = 1
EXIT_USAGE = 2


def add_parser(subparsers) -> None:
    """Add the ``fit-batch`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "fit-batch", help="fit thousands of photos in batches: streaming, resumable, shardable",
        description="Fit the head model to every image of INPUT in fixed-size batches; one .npz and one "
                    ".json record per image under DIR/items, DIR/results.jsonl and DIR/summary.json. "
                    "Rerun the same command to resume (finished images are skipped). See docs/batch.md.")
    p.add_argument("input", metavar="INPUT",
                   help="a folder (recursive), a quoted glob pattern, or a manifest: .csv with header "
                        "image[,landmarks][,id] or .jsonl with keys image, landmarks, id")
    p.add_argument("--out", required=True, help="output directory (also the resume state)")
    p.add_argument("--batch-size", type=int, default=64, help="images per fit call (default 64)")
    p.add_argument("--workers", type=int, default=2, help="decode/detect threads (default 2)")
    p.add_argument("--window", type=int, default=None,
                   help="most images in flight at once (default 2 x batch size)")
    p.add_argument("--shard", default="0/1", help="i/n: fit only the items whose index %% n == i "
                                                  "(one process per GPU or host; default 0/1)")
    p.add_argument("--export", nargs="+", default=[], choices=["glb", "obj"],
                   help="also texture and export each avatar (slow; default: parameters only)")
    p.add_argument("--texture-size", type=int, default=1024, help="texture side for --export (default 1024)")
    p.add_argument("--blendshape-names", default="arkit", choices=["arkit", "ict"],
                   help="--export glb morph target names: Apple's 52 ARKit names (default) or the head "
                        "model's 53 ICT-FaceKit shapes (docs/export.md)")
    p.add_argument("--backend", default="mediapipe", choices=["mediapipe", "dlib"], help="landmark detector")
    p.add_argument("--shape-source", default="landmarks", choices=["landmarks", "dense", "regressor"],
                   help="base shape P of each fit (see avatar-jax reconstruct --help)")
    p.add_argument("--regressor", default=None,
                   help="regressor .npz for --shape-source regressor (default: the shipped one)")
    p.add_argument("--landmarks-on-head", default="calibrated", choices=["calibrated", "ict"],
                   help="where the 68 detected points sit on the head model: 'calibrated' (default; where the "
                        "detector sees them on renders) or 'ict' (ICT FaceKit's own landmark vertices; "
                        "docs/landmarks.md)")
    p.add_argument("--route", default="refined", choices=["refined", "silhouette", "baseline", "fitted", "hybrid"],
                   help="MediaPipe mesh -> iBUG-68 route (docs/landmarks.md)")
    p.add_argument("--pts-index-base", type=int, default=1, choices=[0, 1],
                   help="user .pts files: 1 = iBUG/300-W (default), 0 = dlib")
    p.add_argument("--group-by", default=None, choices=["person", "folder"],
                   help="also fit each person's photos to one shared identity (groups/): 'person' = the "
                        "manifest's person column, 'folder' = one sub-folder of INPUT per person")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: jax.distributed.initialize() (auto-detected on TPU pods, SLURM and other "
                        "clusters, or from --coordinator/--num-processes/--process-id), then this process fits "
                        "the shard process_index/process_count of INPUT into the shared DIR (docs/batch.md)")
    p.add_argument("--coordinator", default=None, help="--distributed: HOST:PORT of process 0")
    p.add_argument("--num-processes", type=int, default=None, help="--distributed: number of processes")
    p.add_argument("--process-id", type=int, default=None, help="--distributed: this process's index")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default=None, choices=["cpu", "gpu", "tpu"],
                   help="JAX platform (default: JAX's choice)")
    p.add_argument("--devices", type=int, default=None,
                   help="shard each batch over this many local devices (default: all of them)")
    p.add_argument("--host-devices", type=int, default=None,
                   help="CPU: split the host into N JAX devices to shard over (sets XLA's thread pool "
                        "to match; process shards, --shard, use the cores as well)")


def run(args) -> int:
    """Run ``fit-batch`` from parsed arguments; returns the exit status."""
    import jax

    if args.device:
        jax.config.update("jax_platforms", args.device)
    if args.host_devices is not None:
        from avatar_jax._devices import use_host_devices

        try:
            use_host_devices(args.host_devices)
        except ValueError as err:
            print(f"avatar-jax fit-batch: --host-devices: {err}", file=sys.stderr)
            return EXIT_USAGE
    from avatar_jax.batch.inputs import list_items, parse_shard, shard

    try:  # jax.distributed first: it must run before anything starts JAX's backend
        index, count = _distributed_shard(args) if args.distributed else parse_shard(args.shard)
    except ValueError as err:
        print(f"avatar-jax fit-batch: {err}", file=sys.stderr)
        return EXIT_USAGE
    from avatar_jax.batch.run import BatchConfig, fit_batch
    from avatar_jax.batch.store import SettingsMismatch

    try:
        config = BatchConfig(batch_size=args.batch_size, workers=args.workers, window=args.window,
                             backend=args.backend, route=args.route, pts_index_base=args.pts_index_base,
                             exports=tuple(args.export), texture_size=args.texture_size,
                             blendshape_names=args.blendshape_names, shape_source=args.shape_source,
                             regressor=args.regressor, landmarks_on_head=args.landmarks_on_head,
                             devices=args.devices)
        items = list_items(args.input, exclude=args.out, group_by=args.group_by)
        mine = shard(items, index, count)
        report = fit_batch(mine, args.out, config, all_items=items,
                           progress=None if args.no_progress else _progress_bar(index, count))
        groups = _fit_groups(mine, items, report, args.landmarks_on_head) if args.group_by else None
    except SettingsMismatch as err:
        print(f"avatar-jax fit-batch: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:
        print(f"avatar-jax fit-batch: {err}", file=sys.stderr)
        return EXIT_USAGE
    return _print_outcome(report, mine, groups)


def _distributed_shard(args) -> tuple[int, int]:
    """Join the jax.distributed job; its process index and count are the shard."""
    import jax

    if args.shard != "0/1":
        raise ValueError("--distributed takes the shard from jax.distributed: drop --shard")
    try:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    except (RuntimeError, ValueError) as err:  # no cluster detected, coordinator unreachable, ...
        raise ValueError(f"--distributed: jax.distributed.initialize failed: {err}") from None
    return jax.process_index(), jax.process_count()


def _fit_groups(mine, items, report, landmarks_on_head: str) -> dict:
    from avatar_jax.batch.groups import fit_groups
    from avatar_jax.batch.store import Store
    from avatar_jax.model import load_head_model

    return fit_groups(mine, Store(report.out_dir), load_head_model(), all_items=items,
                      landmarks_on_head=landmarks_on_head)


def _progress_bar(index: int, count: int):
    from tqdm import tqdm

    desc = "fit-batch" if count == 1 else f"fit-batch {index}/{count}"
    return lambda total: tqdm(total=total, desc=desc, unit="img", smoothing=0.1)


def _print_outcome(report, mine, groups: dict | None = None) -> int:
    from avatar_jax.batch.store import read_record, Store

    store = Store(report.out_dir)
    failed = [r for r in (read_record(store, it.id) for it in mine) if r is None or r["status"] != "ok"]
    for r in failed[:20]:
        print(f"avatar-jax fit-batch: {r['status']}: {r['message']}" if r else "avatar-jax fit-batch: an item "
              "has no record", file=sys.stderr)
    if len(failed) > 20:
        print(f"avatar-jax fit-batch: ... and {len(failed) - 20} more (see {store.root}/results.jsonl)",
              file=sys.stderr)
    counts = ", ".join(f"{n} {label}" for label, n in report.summary["counts"].items())
    print(f"{store.root}: {len(mine)} items ({report.skipped} already done); {counts}; "
          f"{report.wall_s:.1f} s")
    if groups is not None:
        group_counts = ", ".join(f"{n} {label}" for label, n in groups["counts"].items())
        print(f"{store.root}/groups: {groups['groups']} groups ({groups['skipped']} already done); "
              f"{group_counts}; {groups['wall_s']:.1f} s")
    return EXIT_PARTIAL if failed else 0
