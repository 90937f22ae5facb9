"""animate stage: speech -> ARKit blendshape weights over time (lip sync, blinks, head motion),
written as a glTF morph-weight animation and an MP4 preview."""

from .audio import AudioError, Speech, as_speech, load_wav
from .lipsync import Animation, AnimationStream, animate
from .speech import PhoneSegment, PocketSphinxPhones, features

__all__ = ["Animation", "AnimationStream", "AudioError", "PhoneSegment", "PocketSphinxPhones", "Speech", "animate",
           "as_speech", "features", "load_wav"]
