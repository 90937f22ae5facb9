"""``avatar-jax`` command line.

    avatar-jax reconstruct PHOTO... --out DIR [--texture-size 2048] [--formats glb obj]
                           [--backend mediapipe|dlib] [--all-faces] [--no-overlay] [--device cpu|gpu]

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
    rec.add_argument("--backend", default="mediapipe", choices=["mediapipe", "dlib"],
                     help="landmark detector")
    rec.add_argument("--all-faces", action="store_true", help="one avatar per face (default: largest)")
    rec.add_argument("--no-overlay", action="store_true", help="skip the landmark/wireframe overlay PNG")
    rec.add_argument("--device", default=None, choices=["cpu", "gpu", "tpu"],
                     help="JAX platform (default: JAX's choice)")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
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

    options = Options(texture_size=args.texture_size, formats=tuple(args.formats), backend=args.backend,
                      all_faces=args.all_faces, overlay=not args.no_overlay)
    progress = (lambda xs: tqdm(xs, desc="avatars", unit="photo")) if len(args.photos) > 1 else None
    outcomes = reconstruct(args.photos, args.out, options, progress=progress)
    failed = [o for o in outcomes if o.status != "ok"]
    for o in failed:
        print(f"avatar-jax: {o.status}: {o.message}", file=sys.stderr)
    for o in outcomes:
        if o.status == "ok":
            print(f"{o.path}: wrote {', '.join(o.files)}")
    return EXIT_PARTIAL if failed else 0


if __name__ == "__main__":
    sys.exit(main())
