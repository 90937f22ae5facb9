"""Speech input: any WAV file (mono or stereo, 8-48 kHz, 8/16/32-bit integer or float) -> mono
float samples at one analysis rate, with errors that name the problem."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

ANALYSIS_RATE = 16000  # the acoustic model's rate
MIN_RATE, MAX_RATE = 8000, 48000


class AudioError(ValueError):
    """The audio could not be used (missing, corrupt, empty, unsupported); the message says why."""


@dataclasses.dataclass(frozen=True)
class Speech:
    """Mono speech ``samples [N]`` float32 in [-1, 1] at ``rate`` Hz (``source``: where from)."""

    samples: np.ndarray
    rate: int
    source: str = ""

    @property
    def duration(self) -> float:
        return len(self.samples) / self.rate


def load_wav(path: str | Path) -> Speech:
    """Read a WAV file as mono float32 at its own rate (channels averaged)."""
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks are fine
            rate, data = wavfile.read(path)
    except Exception as err:  # scipy's reader raises assorted errors on malformed files (even UnboundLocalError)
        raise AudioError(f"{path}: not a readable WAV file ({err})") from None
    return as_speech(data, rate, str(path))


def as_speech(data, rate: int, source: str = "audio") -> Speech:
    """``[N]`` or ``[N, C]`` samples (int8/uint8/int16/int32 PCM or float in [-1, 1]) -> :class:`Speech`."""
    data = np.asarray(data)
    check_rate(rate, source)
    if data.ndim not in (1, 2) or data.shape[0] == 0 or data.size == 0:
        raise AudioError(f"{source}: no audio samples (shape {data.shape})")
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    elif np.issubdtype(data.dtype, np.floating):
        x = data.astype(np.float32)
    else:
        raise AudioError(f"{source}: unsupported sample type {data.dtype}")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{source}: audio contains NaN or infinite samples")
    mono = x.mean(axis=1) if x.ndim == 2 else x
    return Speech(np.clip(mono, -1.0, 1.0).astype(np.float32), int(rate), source)


def check_rate(rate: int, source: str = "audio") -> None:
    """AudioError unless ``rate`` is within the supported 8-48 kHz."""
    if not MIN_RATE <= int(rate) <= MAX_RATE:
        raise AudioError(f"{source}: sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")


def resample(speech: Speech, rate: int = ANALYSIS_RATE) -> Speech:
    """The same speech at ``rate`` Hz (polyphase filter)."""
    from math import gcd

    from scipy.signal import resample_poly

    if speech.rate == rate:
        return speech
    g = gcd(rate, speech.rate)
    out = resample_poly(speech.samples.astype(np.float64), rate // g, speech.rate // g)
    return Speech(np.clip(out, -1.0, 1.0).astype(np.float32), rate, speech.source)
