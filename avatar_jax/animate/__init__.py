"""animate stage: speech -> ARKit blendshape weights over time (lip sync, blinks, head motion),
written as a glTF morph-weight animation and an MP4 preview.

    from avatar_jax.animate import animate, AnimationStream
    anim = animate("speech.wav")        # Animation: weights [T, 52], head_rotation [T, 3], fps

:mod:`.audio` reads any WAV, :mod:`.speech` recognises phones and measures loudness,
:mod:`.visemes` blends mouth poses with coarticulation, :mod:`.lipsync` makes the curves (whole
clips and streams), :mod:`.preview` renders the MP4, :mod:`.command` is ``avatar-jax animate``.
Names are imported lazily, so that the CLI's parser (which imports :mod:`.command`) starts no JAX.
"""

from __future__ import annotations

from avatar_jax._lazy import lazy_exports

_EXPORTS = {"AudioError": "audio", "Speech": "audio", "as_speech": "audio", "load_wav": "audio",
            "Animation": "lipsync", "AnimationStream": "lipsync", "animate": "lipsync",
            "PhoneSegment": "speech", "PocketSphinxPhones": "speech", "features": "speech"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, {k: f"{__name__}.{v}" for k, v in _EXPORTS.items()}, globals())
