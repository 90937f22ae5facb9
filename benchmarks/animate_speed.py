"""Speed of ``avatar-jax animate`` against real time, measured in one run.

    python benchmarks/animate_speed.py [--seconds 30] [--avatar out/tom_cruise.glb]

Speech: ``--seconds`` of English sentences synthesised with espeak-ng (Debian's ``espeak-ng``).
Measured: the weights (audio -> 52 ARKit curves at 30 fps) offline, cold (first call: the
pocketsphinx decoder loads) and warm, with the recogniser and with the energy mouth alone; the
streaming mode in 20 ms chunks (compute per second of audio, and the latency bound); and, with
``--avatar``, the MP4 preview's rendering and encoding. Each is printed as "x real time" (audio
seconds per compute second; > 1 = faster than real time). No peer runs here: Rhubarb Lip Sync,
the reference for this recogniser, is a C++ binary we cannot fetch. Absolute numbers drift on
shared machines.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

SENTENCES = ("The quick brown fox jumps over the lazy dog. Peter picked a peck of pickled peppers. "
             "We met by the bus and bought some plums. Maybe Paul will bring both umbrellas. ")


def speech_file(seconds: float, folder: Path) -> Path:
    words = SENTENCES * max(1, int(np.ceil(seconds / 9.0)))
    path = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), words], check=True)
    return path


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--avatar", default=None, help="an ARKit-named .glb: also time the MP4 preview")
    args = ap.parse_args()
    from avatar_jax.animate import AnimationStream, animate, load_wav

    with tempfile.TemporaryDirectory() as tmp:
        speech = load_wav(speech_file(args.seconds, Path(tmp)))
        d = speech.duration
        print(f"speech: {d:.1f} s of espeak-ng English at {speech.rate} Hz")
        _, cold = timed(lambda: animate(speech))
        anim, warm = timed(lambda: animate(speech))
        _, energy = timed(lambda: animate(speech, recognizer=None))
        print(f"weights, pocketsphinx, cold  : {cold:6.2f} s  {d / cold:6.1f}x real time")
        print(f"weights, pocketsphinx, warm  : {warm:6.2f} s  {d / warm:6.1f}x real time")
        print(f"weights, energy mouth        : {energy:6.2f} s  {d / energy:6.1f}x real time")
        for rec in ("pocketsphinx", None):
            stream = AnimationStream(speech.rate, recognizer=rec)
            chunk = int(0.02 * speech.rate)

            def run():
                for i in range(0, len(speech.samples), chunk):
                    stream.push(speech.samples[i:i + chunk])
                stream.close()
            _, t = timed(run)
            print(f"stream, {rec or 'energy':12s}        : {t:6.2f} s  {d / t:6.1f}x real time, "
                  f"latency <= {stream.latency_s * 1000:.0f} ms + analysis")
        if args.avatar:
            from avatar_jax.animate.preview import render_frames, write_mp4
            from avatar_jax.io.export import read_glb_rig

            rig = read_glb_rig(args.avatar)
            render_frames(rig, _first(anim, 4))  # compile
            frames, t = timed(lambda: render_frames(rig, anim))
            print(f"preview render, {len(frames)} frames 320^2: {t:6.2f} s  {len(frames) / t:6.1f} frames/s "
                  f"({d / t:.2f}x real time)")
            _, t = timed(lambda: write_mp4(Path(tmp) / "p.mp4", frames, anim.fps, None))
            print(f"MP4 encode                   : {t:6.2f} s  {d / t:6.1f}x real time")


def _first(anim, n):
    import dataclasses

    return dataclasses.replace(anim, weights=anim.weights[:n], head_rotation=anim.head_rotation[:n])


if __name__ == "__main__":
    main()
