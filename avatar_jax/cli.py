"""``avatar-jax`` command line.

    avatar-jax reconstruct PHOTO... --out DIR [--texture-size 2048] [--formats glb obj]
                           [--blendshape-names arkit|ict] [--backend mediapipe|dlib] [--all-faces]
                           [--no-overlay] [--no-hair] [--keep-lighting]
                           [--shape-source landmarks|dense|regressor] [--regressor FILE.npz]
                           [--device cpu|gpu|tpu]
    avatar-jax eval --suite synthetic|rendered|landmarks|all --out DIR [--data DIR] [--num N] [--docs DIR]
                    [--yaw DEG] [--texture-photos PHOTO...]
    avatar-jax fit-batch INPUT --out DIR [--batch-size 64] [--workers 2] [--shard i/n] [--export glb obj]
                         [--blendshape-names arkit|ict]
    avatar-jax animate AVATAR.glb SPEECH.wav --out DIR [--fps 30] [--recognizer pocketsphinx|energy]
                       [--size 320] [--no-video] [--seed 0]
    avatar-jax make-dataset --out DIR [--n 10000] [--aug dr|cpca|linear|none] [--skins deid|photo]
                            [--skin-photos PHOTO...] [--detect] [--shard i/n] [--seed 0]
    avatar-jax train-regressor --data DIR --out RUN [--encoder mesh|dlib|both] [--test DIR]
                               [--config FILE.json] [--epochs N]

Each photo that fails prints one line (unreadable file, no face, fit failed) and the exit status
is non-zero, but the other photos' outputs are still written.
"""

from __future__ import annotations

import argparse
import sys

EXIT_PARTIAL = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="avatar-jax", description="One photo -> textured 3D head avatar.")
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconstruct", help="photos -> .glb / .obj avatars, overlay and JSON report")
    rec.add_argument("photos", nargs="+", help="image files (JPEG, PNG, WebP, BMP, TIFF, GIF)")
    rec.add_argument("--out", required=True, help="output directory")
    rec.add_argument("--texture-size", type=int, default=2048, help="UV texture side in texels")
    rec.add_argument("--formats", nargs="+", default=["glb", "obj"], choices=["glb", "obj"])
    rec.add_argument("--blendshape-names", default="arkit", choices=["arkit", "ict"],
                     help="morph target and report names: Apple's 52 ARKit names (default) or the head "
                          "model's 53 ICT-FaceKit shapes (docs/export.md)")
    rec.add_argument("--backend", default="mediapipe", choices=["mediapipe", "dlib"],
                     help="landmark detector")
    rec.add_argument("--all-faces", action="store_true", help="one avatar per face (default: largest)")
    rec.add_argument("--no-overlay", action="store_true", help="skip the landmark/wireframe overlay PNG")
    rec.add_argument("--no-hair", action="store_true",
                     help="skin colour on the unseen scalp (default: the photo's hair colour where it shows hair)")
    rec.add_argument("--keep-lighting", action="store_true",
                     help="keep the photo's shading in the texture (default: divided out, so viewers can relight it)")
    rec.add_argument("--shape-source", default="landmarks", choices=["landmarks", "dense", "regressor"],
                     help="base shape P of the fit: the identity from the 68 landmarks (default), from the head "
                          "model fitted to MediaPipe's 468 points, or a trained regressor (--regressor)")
    rec.add_argument("--regressor", default=None,
                     help="regressor .npz for --shape-source regressor (default: the shipped one, dlib encoder)")
    rec.add_argument("--landmarks-on-head", default="calibrated", choices=["calibrated", "ict"],
                     help="where the 68 detected points sit on the head model: 'calibrated' (default; where the "
                          "detector sees them on renders) or 'ict' (ICT FaceKit's own landmark vertices; "
                          "docs/landmarks.md)")
    rec.add_argument("--device", default=None, choices=["cpu", "gpu", "tpu"],
                     help="JAX platform (default: JAX's choice)")
    _add_eval_parser(sub)
    from avatar_jax.batch import command as batch_command  # light: no JAX until it runs

    batch_command.add_parser(sub)
    from avatar_jax.animate import command as animate_command  # light: no JAX until it runs

    animate_command.add_parser(sub)
    from avatar_jax.dataset import command as dataset_command  # light: no JAX until it runs

    dataset_command.add_parser(sub)
    from avatar_jax.regress import command as regress_command  # light: no JAX until it runs

    regress_command.add_parser(sub)
    return ap


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluation suites: synthetic ARMSE benchmark (projected and "
                                     "rendered), landmark NME; JSON/CSV, plots and a markdown report")
    ev.add_argument("--suite", default="all", choices=["synthetic", "rendered", "landmarks", "all"])
    ev.add_argument("--out", required=True, help="output directory")
    ev.add_argument("--num", type=int, default=16, help="synthetic heads (default 16)")
    ev.add_argument("--seed", type=int, default=0, help="synthetic PRNG seed")
    ev.add_argument("--yaw", type=float, default=60.0,
                    help="synthetic and rendered heads: yaw uniform in +-YAW degrees (default 60)")
    ev.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0],
                    help="landmark noise levels in px (default 0 1 2 4)")
    ev.add_argument("--distances", type=float, nargs="+", default=[80.0, 90.0, 100.0, 110.0],
                    help="ARMSE crop distances d in mm (default 80 90 100 110)")
    methods = ["landmark-only", "full energy", "mean identity", "eos-py"]
    ev.add_argument("--methods", nargs="+", default=methods, choices=methods, help="synthetic fitting methods")
    ev.add_argument("--texture-photos", nargs="+", default=None,
                    help="rendered suite: face photos for the skin textures (default: the packaged "
                         "tom_cruise.jpg and obama.jpg, copies of examples/)")
    ev.add_argument("--data", default=None,
                    help="landmark suite (and --suite all): a labelled photo folder with manifest.json "
                         "(e.g. tests/data/photos of a checkout)")
    ev.add_argument("--images", nargs="+", default=None, help="landmark suite: only these image stems")
    ev.add_argument("--docs", default=None,
                    help="also write DOCS/results.md and copy the plots to DOCS/results/ (e.g. docs)")
    ev.add_argument("--device", default=None, choices=["cpu", "gpu", "tpu"],
                    help="JAX platform (default: JAX's choice)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from avatar_jax import enable_compilation_cache

    enable_compilation_cache()  # a second run starts warm; the library itself leaves JAX's config alone
    if args.command == "eval":
        return _eval(args)
    if args.command == "animate":
        from avatar_jax.animate import command as animate_command

        return animate_command.run(args)
    if args.command == "train-regressor":
        from avatar_jax.regress import command as regress_command

        return regress_command.run(args)
    if args.command == "make-dataset":
        from avatar_jax.dataset import command as dataset_command

        return dataset_command.run(args)
    if args.command == "fit-batch":
        from avatar_jax.batch import command as batch_command

        return batch_command.run(args)
    if args.texture_size < 16 or args.texture_size > 8192:
        print(f"avatar-jax: --texture-size must be in [16, 8192], got {args.texture_size}", file=sys.stderr)
        return EXIT_USAGE
    import jax

    if args.device:
        jax.config.update("jax_platforms", args.device)
    return _reconstruct(args)


def _reconstruct(args) -> int:
    from tqdm import tqdm

    from avatar_jax.reconstruct import Options, reconstruct
    from avatar_jax.status import Status

    options = Options(texture_size=args.texture_size, formats=tuple(args.formats), backend=args.backend,
                      all_faces=args.all_faces, overlay=not args.no_overlay, hair=not args.no_hair,
                      delight=not args.keep_lighting,
                      blendshape_names=args.blendshape_names, shape_source=args.shape_source,
                      regressor=args.regressor, landmarks_on_head=args.landmarks_on_head)
    progress = (lambda xs: tqdm(xs, desc="avatars", unit="photo")) if len(args.photos) > 1 else None
    try:
        outcomes = reconstruct(args.photos, args.out, options, progress=progress)
    except ValueError as err:  # a bad option (e.g. no or a broken --regressor), before any photo
        print(f"avatar-jax reconstruct: {err}", file=sys.stderr)
        return EXIT_USAGE
    failed = [o for o in outcomes if o.status != Status.OK]
    for o in failed:
        print(f"avatar-jax: {o.status.label}: {o.message}", file=sys.stderr)
    for o in outcomes:
        if o.status == Status.OK:
            print(f"{o.path}: wrote {', '.join(o.files)}")
    return EXIT_PARTIAL if failed else 0


def _eval(args) -> int:
    if args.num < 1:
        print(f"avatar-jax eval: --num must be >= 1, got {args.num}", file=sys.stderr)
        return EXIT_USAGE
    if args.suite in ("landmarks", "all") and args.data is None:
        print(f"avatar-jax eval: --suite {args.suite} runs the landmark suite, which needs --data DIR "
              "(a labelled photo folder with manifest.json, e.g. tests/data/photos)", file=sys.stderr)
        return EXIT_USAGE
    if not 0.0 <= args.yaw <= 90.0:
        print(f"avatar-jax eval: --yaw must be in [0, 90] degrees, got {args.yaw:g}", file=sys.stderr)
        return EXIT_USAGE
    import jax

    if args.device:
        jax.config.update("jax_platforms", args.device)
    from tqdm import tqdm

    from avatar_jax.evaluate.report import write_report

    progress = lambda items, desc: tqdm(items, desc=desc, unit="item")
    synthetic = landmarks = rendered = None
    try:
        if args.suite in ("synthetic", "all"):
            from avatar_jax.evaluate.synthetic import run_synthetic

            synthetic = run_synthetic(num=args.num, seed=args.seed, noise_levels=tuple(args.noise),
                                      distances=tuple(args.distances), methods=tuple(args.methods),
                                      yaw_deg=args.yaw, progress=progress)
        if args.suite in ("rendered", "all"):
            from avatar_jax.evaluate.rendered import run_rendered

            rendered = run_rendered(num=args.num, seed=args.seed, distances=tuple(args.distances),
                                    methods=tuple(args.methods), yaw_deg=args.yaw,
                                    texture_photos=args.texture_photos, progress=progress)
        if args.suite in ("landmarks", "all"):
            from avatar_jax.evaluate.landmark_suite import run_landmark_suite

            landmarks = run_landmark_suite(args.data, names=args.images, progress=progress)
    except ValueError as err:
        print(f"avatar-jax eval: {err}", file=sys.stderr)
        return EXIT_USAGE
    command = (f"avatar-jax eval --suite {args.suite} --num {args.num} --seed {args.seed} "
               f"--noise {' '.join(f'{v:g}' for v in args.noise)}"
               + (f" --yaw {args.yaw:g}" if args.yaw != 60.0 else "")
               + (f" --data {args.data}" if landmarks is not None else ""))
    written = write_report(args.out, synthetic=synthetic, landmarks=landmarks, docs_dir=args.docs,
                           command=command, rendered=rendered)
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
