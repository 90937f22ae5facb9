"""Photo -> .glb speed of ``avatar-jax reconstruct`` at a 2048² texture, warm and cold.

    python benchmarks/reconstruct_speed.py [--photo examples/obama.jpg] [--size 2048] [--repeats 5]

Warm: the pipeline is run once to compile, then ``--repeats`` times in the same process; it
prints the median per-stage times (detect, fit, texture projection, texture completion, export)
and the median total wall time of ``reconstruct()`` for one photo (the .glb only, no overlay; the
JSON report is written). Cold: two fresh subprocesses run the same photo -> .glb with the
persistent caches on (JAX compilation cache, UV raster and mirror tables on disk), timing from
interpreter start, imports included. The first may fill empty caches; the second is what a user
sees on every later start. Absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("detect_s", "fit_s", "texture_project_s", "texture_complete_s", "export_s")


def run_once(photo: str, size: int, out: Path, model=None):
    from avatar_jax.reconstruct import Options, reconstruct

    t = time.perf_counter()
    outcome = reconstruct([photo], out, Options(texture_size=size, formats=("glb",), overlay=False),
                          model=model)[0]
    total = time.perf_counter() - t
    if outcome.status != 0:  # Status.OK
        raise SystemExit(f"{photo}: {outcome.status.label} {outcome.message}")
    report = json.loads((out / f"{Path(photo).stem}.json").read_text())
    return total, report["timings_s"]


def cold_child(photo: str, size: int, start: float) -> None:
    from avatar_jax import enable_compilation_cache

    enable_compilation_cache()  # as the CLI does
    with tempfile.TemporaryDirectory() as tmp:
        run_once(photo, size, Path(tmp))
    print(json.dumps({"cold_s": time.time() - start}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", default=str(REPO / "examples" / "obama.jpg"))
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold-child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cold_child is not None:
        return cold_child(args.photo, args.size, args.cold_child)

    from avatar_jax import enable_compilation_cache
    from avatar_jax.model import load_head_model

    enable_compilation_cache()  # as the CLI does

    model = load_head_model()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run_once(args.photo, args.size, Path(tmp), model)
        first = time.perf_counter() - t
        runs = [run_once(args.photo, args.size, Path(tmp), model) for _ in range(args.repeats)]
    print(f"photo {Path(args.photo).name}, texture {args.size}², {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"first call in this process (compile or cache reads): {first:.2f} s")
    print(f"warm, median of {args.repeats}:")
    for stage in STAGES:
        print(f"  {stage:20s} {statistics.median(r[1][stage] for r in runs):7.3f} s")
    print(f"  {'total (photo->.glb)':20s} {statistics.median(r[0] for r in runs):7.3f} s")

    for k in (1, 2):
        cmd = [sys.executable, __file__, "--photo", args.photo, "--size", str(args.size),
               "--cold-child", repr(time.time())]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if res.returncode != 0:
            raise SystemExit(f"cold run failed:\n{res.stderr[-2000:]}")
        cold = json.loads(res.stdout.strip().splitlines()[-1])["cold_s"]
        print(f"cold process #{k} (persistent caches on, imports included): {cold:.2f} s")


if __name__ == "__main__":
    main()
