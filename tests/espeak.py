"""Speech with known phoneme times from espeak-ng (Debian's ``espeak-ng``), through its C library.

The command line reports phoneme timing only for MBROLA voices (``--pho``); the library reports
every phoneme as a synthesis event with its audio position, which is what the animation tests
compare against.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import wave
from pathlib import Path

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def library():
    """The espeak-ng shared library, or None when it is not installed."""
    name = ctypes.util.find_library("espeak-ng")
    return ctypes.CDLL(name) if name else None


_STATE: dict = {}


def _initialised():
    """The library, initialised once per process (a second espeak_Initialize loses the events)."""
    if not _STATE:
        lib = library()
        if lib is None:
            raise RuntimeError("libespeak-ng is not installed (apt-get install espeak-ng)")
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 500, None, _INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        _STATE.update(lib=lib, rate=rate)
    return _STATE["lib"], _STATE["rate"]


def synthesise(text: str, path: Path, rate_wpm: int = 150) -> tuple[Path, list[tuple[str, float]]]:
    """Speak ``text`` into the mono int16 WAV ``path``; returns it and ``[(phoneme, start_s)]``."""
    lib, rate = _initialised()
    lib.espeak_SetParameter(1, rate_wpm, 0)  # espeakRATE
    chunks, phonemes = [], []

    def on_audio(wav, count, events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                phonemes.append((events[i].id.decode("ascii", "replace"), events[i].audio_position / 1000.0))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)  # kept alive until synthesis ends
    lib.espeak_SetSynthCallback(callback)
    data = text.encode("utf-8") + b"\0"
    if lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
        raise RuntimeError(f"espeak_Synth failed on {text!r}")
    lib.espeak_Synchronize()
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path, phonemes
