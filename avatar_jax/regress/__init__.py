"""regress stage of avatar-jax: learned regressors on aligned face chips.

- ``dlib_resnet``: dlib's ResNet face descriptor (128-D identity embedding) ported to Flax,
  with its 5-point chip alignment; no dlib needed at run time.

Names are imported lazily so that ``import avatar_jax.regress`` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["DlibResNet", "align_chip", "count_params", "face_chip_details", "face_descriptor",
           "load_dlib_resnet", "normalise_chip", "points5_from_ibug68", "read_dlib_resnet",
           "unflatten_params"]
_EXPORTS = dict.fromkeys(__all__, "avatar_jax.regress.dlib_resnet")


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
