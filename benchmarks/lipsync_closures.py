"""Lip closures of ``animate`` against the phoneme times espeak-ng reports, per sentence.

    python benchmarks/lipsync_closures.py [SENTENCE ...]

For each sentence (default: the three held out when the curves were tuned, then the two tuning
sentences), espeak-ng's library speaks it and reports every phoneme's start (``tests/espeak.py``).
Printed per sentence: the number of /p b m/, the jaw's minimum within +-80 ms of each as a share of
the sentence's median vowel peak (worst and mean: the lips meet when it is small; the test's bar
is 0.35), the median vowel peak of jawOpen, and the smallest vowel peak. Needs Debian's espeak-ng.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import espeak  # noqa: E402  (tests/espeak.py)

from avatar_jax.animate import animate  # noqa: E402

HELD_OUT = ("Peter picked a map from my bag", "We met by the bus and bought some plums",
            "Maybe Paul will bring both umbrellas")
TUNING = ("papa bought my map", "Bob and Emma made a big apple pie")
VOWEL_START = "aeiouAEIOU@"


def closures(text: str, folder: Path) -> dict:
    path, phonemes = espeak.synthesise(text, folder / "speech.wav")
    anim = animate(path)
    jaw = anim.weight("jawOpen")
    starts = [t for _, t in phonemes] + [anim.times[-1]]
    vowels = [(t, starts[i + 1]) for i, (p, t) in enumerate(phonemes)
              if p[0] in VOWEL_START and starts[i + 1] - t > 0.05]
    peaks = np.array([jaw[(anim.times >= a) & (anim.times <= b + 0.03)].max() for a, b in vowels])
    median = float(np.median(peaks))
    shares = np.array([jaw[np.abs(anim.times - t) <= 0.08].min() / median for p, t in phonemes if p in "pbm"])
    return {"n": len(shares), "worst": shares.max(), "mean": shares.mean(), "median_peak": median,
            "min_peak": peaks.min()}


def main() -> None:
    sentences = sys.argv[1:] or [*HELD_OUT, *TUNING]
    print("| sentence | set | /p b m/ | worst closure (share of vowel peak) | mean | median vowel peak "
          "| smallest vowel peak |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for text in sentences:
            r = closures(text, Path(tmp))
            kind = "held out" if text in HELD_OUT else "tuning" if text in TUNING else "given"
            print(f"| {text} | {kind} | {r['n']} | {r['worst']:.2f} | {r['mean']:.2f} | {r['median_peak']:.2f} | "
                  f"{r['min_peak']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
