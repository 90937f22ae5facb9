"""``avatar-jax animate AVATAR.glb SPEECH.wav --out DIR``: the avatar lip-syncs to the speech."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

EXIT_FAILED = 1
EXIT_USAGE = 2


def add_parser(subparsers) -> None:
    """Add the ``animate`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "animate", help="make an avatar .glb speak a WAV file: animated .glb, MP4 preview, weight curves",
        description="Per-frame ARKit blendshape weights from speech (phone recognition with coarticulation, an "
                    "energy-driven fallback, blinks and head motion), written as DIR/<avatar>_animated.glb (a "
                    "morph-weight animation), DIR/<avatar>.mp4 (a preview with the audio), "
                    "DIR/<avatar>_weights.csv and DIR/<avatar>_animation.json. See docs/animate.md.")
    p.add_argument("avatar", help="an ARKit-named avatar .glb from avatar-jax reconstruct")
    p.add_argument("speech", help="a WAV file: mono or stereo, 8-48 kHz, integer or float samples")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--recognizer", default="pocketsphinx", choices=["pocketsphinx", "energy"],
                   help="mouth shapes from recognised English phones (default) or from loudness and "
                        "spectrum alone (any language, singing)")
    p.add_argument("--size", type=int, default=320, help="MP4 preview side in pixels (default 320)")
    p.add_argument("--no-video", action="store_true", help="skip the MP4 preview")
    p.add_argument("--seed", type=int, default=0, help="seed of the blinks and head motion")


def run(args) -> int:
    """Run ``animate`` from parsed arguments; returns the exit status."""
    from avatar_jax.animate.audio import AudioError, load_wav

    if not 64 <= args.size <= 2048:
        print(f"avatar-jax animate: --size must be in [64, 2048], got {args.size}", file=sys.stderr)
        return EXIT_USAGE
    try:
        speech = load_wav(args.speech)
        files, report = animate_files(args.avatar, speech, Path(args.out), fps=args.fps, video=not args.no_video,
                                      recognizer=None if args.recognizer == "energy" else args.recognizer,
                                      size=args.size, seed=args.seed)
    except (AudioError, ValueError) as err:
        print(f"avatar-jax animate: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.avatar}: {report['frames']} frames, weights {report['realtime_factor']:.1f}x faster than real "
          f"time; wrote {', '.join(map(str, files))}")
    return 0


def animate_files(avatar: str | Path, speech, out: Path, *, fps: float = 30.0, video: bool = True,
                  recognizer="pocketsphinx", size: int = 320, seed: int = 0):
    """Animate ``avatar`` (.glb) with ``speech``; returns the files written and the JSON report."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    from avatar_jax.animate.lipsync import animate
    from avatar_jax.animate.preview import render_frames, target_columns, write_mp4
    from avatar_jax.io.export import add_animation, read_glb_rig
    from avatar_jax.model.arkit import ARKIT_NAMES

    rig = read_glb_rig(avatar)
    columns = target_columns(rig, ARKIT_NAMES)
    t0 = time.perf_counter()
    anim = animate(speech, fps=fps, recognizer=recognizer, seed=seed)
    timings = {"weights_s": time.perf_counter() - t0}
    stem = out / Path(avatar).stem
    out.mkdir(parents=True, exist_ok=True)
    weights = np.zeros((len(anim.weights), len(rig["target_names"])), np.float32)
    weights[:, columns] = anim.weights
    files = [add_animation(avatar, f"{stem}_animated.glb", anim.times, weights,
                           Rotation.from_rotvec(anim.head_rotation).as_quat())]
    files.append(_write_csv(f"{stem}_weights.csv", anim))
    if video:
        t = time.perf_counter()
        frames = render_frames(rig, anim, size)
        timings["render_s"] = time.perf_counter() - t
        audio = _wav_copy(speech, f"{stem}_speech.wav")
        try:
            files.append(write_mp4(f"{stem}.mp4", frames, fps, audio))
        finally:
            audio.unlink()
    report = {"avatar": str(avatar), "speech": speech.source, "duration_s": speech.duration, "fps": fps,
              "frames": len(anim.weights), "recognizer": recognizer or "energy", "timings_s": timings,
              "realtime_factor": speech.duration / max(timings["weights_s"], 1e-9),
              "phones": [[p.phone, round(p.start, 3), round(p.end, 3)] for p in anim.phones]}
    path = Path(f"{stem}_animation.json")
    path.write_text(json.dumps(report, indent=1))
    return files + [path], report


def _write_csv(path, anim) -> Path:
    rows = ["time_s," + ",".join(anim.names)]
    rows += [f"{t:.4f}," + ",".join(f"{w:.4f}" for w in frame) for t, frame in zip(anim.times, anim.weights)]
    Path(path).write_text("\n".join(rows) + "\n")
    return Path(path)


def _wav_copy(speech, path) -> Path:
    """The speech as a 16-bit WAV for ffmpeg (the input may be float or 8-bit)."""
    import numpy as np
    from scipy.io import wavfile

    wavfile.write(path, speech.rate, (np.clip(speech.samples, -1, 1) * 32767).astype(np.int16))
    return Path(path)
