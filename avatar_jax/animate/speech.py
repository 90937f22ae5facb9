"""What the mouth should do, heard from the audio: phone segments (pocketsphinx's bundled English
acoustic model in phone mode, as Rhubarb Lip Sync uses it) and per-frame acoustic features (loudness,
spectral tilt) for the energy-driven fallback where recognition fails.

A recogniser is any ``Callable[[Speech], list[PhoneSegment]]``: swap in another model by passing one
to :func:`avatar_jax.animate.animate`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from avatar_jax.animate.audio import ANALYSIS_RATE, Speech, resample

HOP_S = 0.01  # feature frame step (the recogniser's too)
WINDOW_S = 0.025
QUIET_DBFS = -35.0  # a clip whose loudest speech is quieter than this is treated as near-silent
LOUDNESS_RANGE_DB = 30.0  # loudness 0..1 spans this far below the clip's speech level
ORAL_BAND_HZ = (400.0, 4000.0)


@dataclasses.dataclass(frozen=True)
class PhoneSegment:
    """One recognised phone (CMU/ARPAbet symbol, ``SIL`` for silence) from ``start`` to ``end`` s."""

    phone: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class Features:
    """Per-frame acoustic features at ``HOP_S`` steps: ``loudness [T]`` in [0, 1] of the oral band
    (0 = silence or closed lips, relative to ``level``, the speech level in dBFS it was measured
    against), ``brightness [T]`` in [0, 1] (share of energy above 1 kHz: low for rounded vowels
    and nasals, high for spread vowels and fricatives)."""

    loudness: np.ndarray
    brightness: np.ndarray
    level: float


class PocketSphinxPhones:
    """Phone recognition with pocketsphinx's packaged US-English model and phone language model."""

    def __init__(self, language_weight: float = 2.0):
        from pocketsphinx import get_model_path

        root = get_model_path()
        self._config = dict(hmm=os.path.join(root, "en-us", "en-us"),
                            allphone=os.path.join(root, "en-us", "en-us-phone.lm.bin"),
                            lw=language_weight, beam=1e-20, pbeam=1e-20, samprate=ANALYSIS_RATE,
                            loglevel="FATAL")
        self._decoder = None

    def __call__(self, speech: Speech) -> list[PhoneSegment]:
        from pocketsphinx import Decoder

        if self._decoder is None:
            self._decoder = Decoder(**self._config)
        pcm = (resample(speech).samples * 32767.0).astype("<i2")
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm.tobytes(), full_utt=True)
        d.end_utt()
        segs = [PhoneSegment(_phone_symbol(s.word), s.start_frame * HOP_S, (s.end_frame + 1) * HOP_S)
                for s in d.seg()]
        return segs


def _phone_symbol(word: str) -> str:
    """pocketsphinx's fillers (``+SPN+``, ``+NSN+``, ``<sil>``) -> ``SIL`` or ``NOISE``."""
    if word in ("SIL", "<sil>", "<s>", "</s>"):
        return "SIL"
    if word.startswith("+"):
        return "NOISE"
    return word.upper()


def features(speech: Speech, min_level: float = QUIET_DBFS) -> Features:
    """Loudness and brightness per ``HOP_S`` frame of the speech. Loudness is relative to the
    clip's speech level (95th percentile of its frames' oral-band level), taken as at least
    ``min_level`` dBFS: silence stays silent, and a stream passes the loudest level heard so far."""
    db, high = _frame_levels(speech)
    level = max(float(np.percentile(db, 95)), min_level)
    loudness = np.clip((db - (level - LOUDNESS_RANGE_DB)) / LOUDNESS_RANGE_DB, 0.0, 1.0)
    return Features(loudness.astype(np.float32), np.clip(high, 0.0, 1.0).astype(np.float32), level)


def _frame_levels(speech: Speech):
    """Per frame: oral-band level (dBFS) and share of energy above 1 kHz."""
    x = resample(speech).samples.astype(np.float64)
    hop, win = int(HOP_S * ANALYSIS_RATE), int(WINDOW_S * ANALYSIS_RATE)
    count = max(1, int(np.ceil(len(x) / hop)))
    padded = np.pad(x, (win // 2, win + count * hop))
    window = np.hanning(win)
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][:count] * window
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1.0 / ANALYSIS_RATE)
    # Oral band only: closed lips (/b m/, stop closures) keep a low voicing or nasal murmur that
    # the full band would hear as loud. Parseval: band power -> RMS of the windowed frame.
    band = spectrum[:, (freqs >= ORAL_BAND_HZ[0]) & (freqs <= ORAL_BAND_HZ[1])].sum(1)
    rms = np.sqrt(2.0 * band / (win * win * (window ** 2).mean()))
    db = 20.0 * np.log10(rms + 1e-9)  # dB full scale
    high = spectrum[:, freqs > 1000].sum(1) / (spectrum[:, freqs > 60].sum(1) + 1e-20)
    return db, high
