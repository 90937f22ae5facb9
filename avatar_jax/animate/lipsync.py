"""Audio -> per-frame ARKit blendshape weights and head rotation: :func:`animate`.

    anim = animate("speech.wav")         # Animation: weights [T, 52] (ARKIT_NAMES), 30 fps
    anim.weight("jawOpen")               # [T]

Mouth: recognised phones -> coarticulated visemes (:mod:`avatar_jax.animate.visemes`), the jaw
scaled by loudness; where recognition has nothing (noise, other languages, singing) or with
``recognizer=None``, an energy/spectrum-driven mouth: loudness opens the jaw, a dark spectrum
rounds the lips, a bright one spreads them. Silence closes the mouth. Alive: blinks at random
intervals and a slow, small head motion that nods a little with the speech's loudness.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from avatar_jax.animate import visemes
from avatar_jax.animate.audio import Speech, load_wav
from avatar_jax.animate.speech import HOP_S, PhoneSegment, PocketSphinxPhones, features
from avatar_jax.model.arkit import ARKIT_NAMES

Recognizer = Callable[[Speech], "list[PhoneSegment]"]
_DEFAULT_RECOGNIZER: list = []  # one decoder per process, made on first use


@dataclasses.dataclass(frozen=True)
class Animation:
    """``weights [T, 52]`` float32 ARKit blendshape weights (:data:`ARKIT_NAMES` order) and
    ``head_rotation [T, 3]`` axis-angle radians (model frame) at ``fps``; frame i is at i / fps s."""

    weights: np.ndarray
    head_rotation: np.ndarray
    fps: float
    names: tuple[str, ...] = ARKIT_NAMES
    phones: tuple[PhoneSegment, ...] = ()

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.weights)) / self.fps

    def weight(self, name: str) -> np.ndarray:
        return self.weights[:, self.names.index(name)]


def animate(audio: str | Path | Speech, *, fps: float = 30.0, recognizer: Recognizer | str | None = "pocketsphinx",
            seed: int = 0, blinks: bool = True, head_motion: bool = True) -> Animation:
    """Animate speech: ``audio`` a WAV path or :class:`Speech`; ``recognizer`` ``"pocketsphinx"``,
    any phone recogniser, or None for the energy-driven mouth alone. Deterministic for ``seed``."""
    speech = audio if isinstance(audio, Speech) else load_wav(audio)
    if not 1.0 <= fps <= 240.0:
        raise ValueError(f"animate: fps must be in [1, 240], got {fps}")
    feats = features(speech)
    phones = _recognise(speech, recognizer)
    t_feat = np.arange(len(feats.loudness)) * HOP_S
    mouth = _mouth(phones, feats, t_feat)
    count = max(1, int(np.floor(speech.duration * fps)) + 1)
    times = np.arange(count) / fps
    weights = np.stack([np.interp(times, t_feat, mouth[:, k]) for k in range(mouth.shape[1])], 1)
    rng = np.random.default_rng(seed)
    if blinks:
        weights = _add_blinks(weights, times, rng)
    loud = np.interp(times, t_feat, feats.loudness)
    rotation = _head_motion(times, loud, rng) if head_motion else np.zeros((count, 3))
    return Animation(np.clip(weights, 0.0, 1.0).astype(np.float32), rotation.astype(np.float32), float(fps),
                     phones=tuple(phones))


def _recognise(speech, recognizer) -> list[PhoneSegment]:
    if recognizer is None:
        return []
    if recognizer == "pocketsphinx":
        if not _DEFAULT_RECOGNIZER:
            _DEFAULT_RECOGNIZER.append(PocketSphinxPhones())
        recognizer = _DEFAULT_RECOGNIZER[0]
    elif isinstance(recognizer, str):
        raise ValueError(f"animate: unknown recognizer {recognizer!r}; pass 'pocketsphinx', a callable or None")
    return list(recognizer(speech))


def _mouth(phones, feats, t) -> np.ndarray:
    """``[T, 52]`` mouth weights at the feature frames ``t``."""
    loud = _smooth(feats.loudness, 0.012)
    bright = _smooth(feats.brightness, 0.03)
    pose, coverage = visemes.coarticulated(phones, t)
    jaw = visemes.ARKIT_INDEX["jawOpen"]
    # recognised: the viseme's shape, its jaw opened more by loud speech and closed by silence
    pose[:, jaw] *= 0.2 + 0.9 * loud
    speaking = _smooth((loud > 0.05).astype(np.float32), 0.03)
    pose *= speaking[:, None]
    # unrecognised but loud (fillers, other languages, singing): the acoustic mouth
    silent_phone = _silent_share(phones, t)
    fallback = np.clip(1.0 - coverage + silent_phone, 0.0, 1.0) * speaking
    fallback = _smooth(fallback, 0.04)[:, None]
    return (1.0 - fallback) * pose + fallback * _acoustic_pose(loud, bright)


def _acoustic_pose(loud, bright) -> np.ndarray:
    """The energy-driven mouth ``[T, 52]``: jaw with loudness, rounding vs spreading with spectral tilt."""
    out = np.zeros((len(loud), len(ARKIT_NAMES)), np.float32)
    idx = visemes.ARKIT_INDEX
    out[:, idx["jawOpen"]] = 0.6 * loud ** 1.5  # a half-loud murmur (nasal, voiced closure) barely opens
    dark = np.clip((0.35 - bright) / 0.35, 0.0, 1.0)
    light = np.clip((bright - 0.35) / 0.4, 0.0, 1.0)
    for name, gain, source in (("mouthFunnel", 0.4, dark), ("mouthPucker", 0.25, dark),
                               ("mouthStretchLeft", 0.3, light), ("mouthStretchRight", 0.3, light)):
        out[:, idx[name]] = gain * source * loud
    return out


def _silent_share(phones, t) -> np.ndarray:
    """``[T]`` 1 inside segments the recogniser called silence or noise (the audio may still be speech)."""
    out = np.zeros(len(t), np.float32)
    for seg in phones:
        if seg.phone in ("SIL", "NOISE"):
            out[(t >= seg.start) & (t < seg.end)] = 1.0
    return out


def _smooth(x, sigma_s: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.asarray(x, np.float32), sigma_s / HOP_S, mode="nearest")


BLINK_S = 0.2  # close and open
MEAN_BLINK_INTERVAL_S = 3.5


def _add_blinks(weights, times, rng) -> np.ndarray:
    weights = weights.copy()
    t, end = rng.uniform(0.5, 2.0), times[-1] if len(times) else 0.0
    curve = np.zeros(len(times))
    while t < end:
        phase = (times - t) / BLINK_S
        curve = np.maximum(curve, np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * np.clip(phase, 0, 1)), 0.0))
        t += max(1.0, rng.exponential(MEAN_BLINK_INTERVAL_S))
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        weights[:, visemes.ARKIT_INDEX[name]] = np.maximum(weights[:, visemes.ARKIT_INDEX[name]], curve)
    return weights


HEAD_DEGREES = (2.0, 3.0, 1.0)  # pitch, yaw, roll amplitude of the idle motion


def _head_motion(times, loudness, rng) -> np.ndarray:
    """``[T, 3]`` axis-angle: a sum of slow sinusoids per axis plus a small nod with loudness."""
    out = np.zeros((len(times), 3))
    for axis, amp in enumerate(np.deg2rad(HEAD_DEGREES)):
        freqs = rng.uniform(0.1, 0.5, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        out[:, axis] = amp / 3 * np.sin(2 * np.pi * freqs[None] * times[:, None] + phases[None]).sum(1)
    from scipy.ndimage import gaussian_filter1d

    fps = 1.0 / (times[1] - times[0]) if len(times) > 1 else 30.0
    out[:, 0] += np.deg2rad(1.5) * gaussian_filter1d(np.asarray(loudness, np.float64), 0.15 * fps)
    return out
