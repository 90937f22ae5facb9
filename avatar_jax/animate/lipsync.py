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
from avatar_jax.animate.audio import Speech, as_speech, check_rate, load_wav
from avatar_jax.animate.speech import HOP_S, QUIET_DBFS, PhoneSegment, PocketSphinxPhones, features
from avatar_jax.model.arkit import ARKIT_NAMES

Recognizer = Callable[[Speech], "list[PhoneSegment]"]
_DEFAULT_RECOGNIZER: list = []  # one decoder per process, made on first use


@dataclasses.dataclass(frozen=True)
class Animation:
    """``weights [T, 52]`` float32 ARKit blendshape weights (:data:`ARKIT_NAMES` order) and
    ``head_rotation [T, 3]`` axis-angle radians (model frame) at ``fps``; row i is frame
    ``start_frame + i``, at ``(start_frame + i) / fps`` s (a stream's parts start later)."""

    weights: np.ndarray
    head_rotation: np.ndarray
    fps: float
    names: tuple[str, ...] = ARKIT_NAMES
    phones: tuple[PhoneSegment, ...] = ()
    start_frame: int = 0

    @property
    def times(self) -> np.ndarray:
        return (self.start_frame + np.arange(len(self.weights))) / self.fps

    def weight(self, name: str) -> np.ndarray:
        return self.weights[:, self.names.index(name)]


def animate(audio: str | Path | Speech, *, fps: float = 30.0, recognizer: Recognizer | str | None = "pocketsphinx",
            seed: int = 0, blinks: bool = True, head_motion: bool = True) -> Animation:
    """Animate speech: ``audio`` a WAV path or :class:`Speech`; ``recognizer`` ``"pocketsphinx"``,
    any phone recogniser, or None for the energy-driven mouth alone. Deterministic for ``seed``."""
    speech = audio if isinstance(audio, Speech) else load_wav(audio)
    _check_fps(fps)
    count = max(1, int(np.floor(speech.duration * fps)) + 1)
    times = np.arange(count) / fps
    idle = Idle.from_seed(seed, blinks, head_motion)
    weights, loud, phones, _ = _window(speech, _resolve(recognizer), times)
    return _finish(weights, loud, times, idle, fps, phones)


def _check_fps(fps: float) -> None:
    if not 1.0 <= fps <= 240.0:
        raise ValueError(f"animate: fps must be in [1, 240], got {fps}")


def _window(speech: Speech, recognizer, times, min_level: float = QUIET_DBFS):
    """Mouth weights ``[T, 52]``, loudness ``[T]`` at ``times`` (s from the speech's start), the
    phones and the speech level the loudness is relative to (:func:`~.speech.features`)."""
    feats = features(speech, min_level)
    phones = list(recognizer(speech)) if recognizer is not None else []
    t_feat = np.arange(len(feats.loudness)) * HOP_S
    mouth = _mouth(phones, feats, t_feat)
    weights = np.stack([np.interp(times, t_feat, mouth[:, k]) for k in range(mouth.shape[1])], 1)
    return weights, np.interp(times, t_feat, feats.loudness), phones, feats.level


def _finish(weights, loud, times, idle, fps, phones, start_frame: int = 0) -> Animation:
    weights = idle.blink(weights, times)
    rotation = idle.head(times, loud, fps)
    return Animation(np.clip(weights, 0.0, 1.0).astype(np.float32), rotation.astype(np.float32), float(fps),
                     phones=tuple(phones), start_frame=start_frame)


class AnimationStream:
    """Weights for speech that arrives in chunks (a microphone, a TTS stream), with bounded latency.

        stream = AnimationStream(16000)
        for chunk in chunks:                 # any lengths of mono samples
            frames = stream.push(chunk)      # Animation of the frames now final (maybe none)
        frames = stream.close()

    Every ``hop_s`` of new audio the last ``window_s`` are analysed as :func:`animate` does, and the
    frames older than ``lookahead_s`` are emitted: a frame is out at most ``hop_s + lookahead_s``
    after its audio arrived (:attr:`latency_s`), plus the analysis time. Memory stays bounded (the
    window). Blinks and head motion follow the same seeded schedule as :func:`animate`.
    """

    def __init__(self, rate: int, *, fps: float = 30.0, recognizer: Recognizer | str | None = "pocketsphinx",
                 seed: int = 0, window_s: float = 2.0, hop_s: float | None = None, lookahead_s: float | None = None,
                 blinks: bool = True, head_motion: bool = True):
        _check_fps(fps)
        self.rate, self.fps = int(rate), float(fps)
        check_rate(self.rate, "stream")
        self._recognizer = _resolve(recognizer)
        slow = self._recognizer is not None  # a recogniser wants context and costs a decode per hop
        self.hop_s = hop_s if hop_s is not None else (0.25 if slow else 0.05)
        self.lookahead_s = lookahead_s if lookahead_s is not None else (0.25 if slow else 0.1)
        self.window_s = max(window_s, self.hop_s + self.lookahead_s + 0.5)
        self._idle = Idle.from_seed(seed, blinks, head_motion)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._received = 0
        self._analysed = 0
        self._next_frame = 0
        self._level = QUIET_DBFS

    @property
    def latency_s(self) -> float:
        """The longest wait from a sample's arrival to its frame's emission, analysis time aside."""
        return self.hop_s + self.lookahead_s

    def push(self, samples) -> Animation:
        """Add mono samples (float in [-1, 1] or integer PCM); returns the frames now final."""
        samples = np.asarray(samples).reshape(-1)
        if samples.size == 0:
            return self._empty()
        chunk = as_speech(samples, self.rate, "stream").samples
        self._buffer = np.concatenate([self._buffer, chunk])
        self._received += len(chunk)
        if self._received - self._analysed < self.hop_s * self.rate:
            return self._empty()
        return self._emit(self._received / self.rate - self.lookahead_s)

    def close(self) -> Animation:
        """Flush: the remaining frames up to the end of the audio received."""
        return self._emit(self._received / self.rate)

    def _emit(self, until_s: float) -> Animation:
        self._analysed = self._received
        last = int(np.floor(until_s * self.fps + 1e-9))
        frames = np.arange(self._next_frame, max(self._next_frame, last + 1))
        if len(self._buffer) == 0 or len(frames) == 0:
            return self._empty()
        times = frames / self.fps
        t0 = self._buffer_start / self.rate
        window = Speech(self._buffer, self.rate, "stream")
        weights, loud, phones, self._level = _window(window, self._recognizer, times - t0, self._level)
        self._next_frame = int(frames[-1]) + 1
        keep = int(self.window_s * self.rate)
        if len(self._buffer) > keep:
            self._buffer_start += len(self._buffer) - keep
            self._buffer = self._buffer[-keep:]
        shifted = [PhoneSegment(p.phone, p.start + t0, p.end + t0) for p in phones]
        return _finish(weights, loud, times, self._idle, self.fps, shifted, int(frames[0]))

    def _empty(self) -> Animation:
        return Animation(np.zeros((0, len(ARKIT_NAMES)), np.float32), np.zeros((0, 3), np.float32), self.fps,
                         start_frame=self._next_frame)


def _resolve(recognizer):
    """``"pocketsphinx"`` -> the process's shared decoder; a callable or None as given."""
    if recognizer == "pocketsphinx":
        if not _DEFAULT_RECOGNIZER:
            _DEFAULT_RECOGNIZER.append(PocketSphinxPhones())
        return _DEFAULT_RECOGNIZER[0]
    if isinstance(recognizer, str):
        raise ValueError(f"animate: unknown recognizer {recognizer!r}; pass 'pocketsphinx', a callable or None")
    return recognizer


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
HEAD_DEGREES = (2.0, 3.0, 1.0)  # pitch, yaw, roll amplitude of the idle motion
IDLE_HORIZON_S = 4 * 3600.0  # blinks are scheduled this far ahead


@dataclasses.dataclass(frozen=True)
class Idle:
    """The seeded 'alive' motion, a function of absolute time: blink start times, and per head axis
    three slow sinusoids (``frequencies``, ``phases`` ``[3, 3]``) plus a small nod with loudness."""

    blink_starts: np.ndarray
    frequencies: np.ndarray
    phases: np.ndarray
    moves_head: bool = True

    @classmethod
    def from_seed(cls, seed: int, blinks: bool = True, head_motion: bool = True) -> "Idle":
        rng = np.random.default_rng(seed)
        gaps = np.maximum(1.0, rng.exponential(MEAN_BLINK_INTERVAL_S, int(IDLE_HORIZON_S)))
        starts = rng.uniform(0.5, 2.0) + np.concatenate([[0.0], np.cumsum(gaps)])
        return cls(starts[starts < IDLE_HORIZON_S] if blinks else np.zeros(0), rng.uniform(0.1, 0.5, (3, 3)),
                   rng.uniform(0, 2 * np.pi, (3, 3)), head_motion)

    def blink(self, weights, times) -> np.ndarray:
        """``weights`` with both eyes' blinks (a half sine of ``BLINK_S``) at the scheduled times."""
        weights = weights.copy()
        first, last = np.searchsorted(self.blink_starts, [times[0] - BLINK_S, times[-1]]) if len(times) else (0, 0)
        curve = np.zeros(len(times))
        for t in self.blink_starts[first:last]:
            phase = (times - t) / BLINK_S
            curve = np.maximum(curve, np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * np.clip(phase, 0, 1)), 0))
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            k = visemes.ARKIT_INDEX[name]
            weights[:, k] = np.maximum(weights[:, k], curve)
        return weights

    def head(self, times, loudness, fps) -> np.ndarray:
        """``[T, 3]`` axis-angle radians: slow sinusoids per axis plus a nod that follows loudness."""
        from scipy.ndimage import gaussian_filter1d

        if not self.moves_head:
            return np.zeros((len(times), 3))
        amp = np.deg2rad(HEAD_DEGREES)[:, None] / 3
        waves = np.sin(2 * np.pi * self.frequencies[None] * np.asarray(times)[:, None, None] + self.phases[None])
        out = (amp[None] * waves).sum(-1)
        out[:, 0] += np.deg2rad(1.5) * gaussian_filter1d(np.asarray(loudness, np.float64), 0.15 * fps, mode="nearest")
        return out
