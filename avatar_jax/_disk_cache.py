"""On-disk cache of per-model tables in the user cache dir: texture tables (UV raster, mirror
map) and the fit's precomputed prior operators.

They depend only on the model and their parameters and take seconds to build, so a new
process reads them instead (``<cache>/avatar-jax/<kind>/<name>-<key>.npz``). The key is a
SHA-1 of the arrays and parameters they are built from, so a changed model never reads a
stale table. ``AVATAR_JAX_NO_CACHE=1`` disables it (like the compilation cache); a
read-only or missing home directory just means no caching.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from avatar_jax._cache import default_cache_dir

VERSION = 1  # bump when a cached table's definition changes


def cache_key(*parts) -> str:
    """SHA-1 hex of arrays (bytes, shape and dtype) and plain values."""
    digest = hashlib.sha1(f"v{VERSION}".encode())
    for p in parts:
        if isinstance(p, (np.ndarray,)) or hasattr(p, "__array__"):
            a = np.ascontiguousarray(np.asarray(p))
            digest.update(f"{a.shape}{a.dtype}".encode())
            digest.update(a.tobytes())
        else:
            digest.update(repr(p).encode())
    return digest.hexdigest()


def cache_dir(kind: str) -> Path:
    return default_cache_dir().parent / kind


def cached_arrays(name: str, key: str, compute: Callable[[], dict[str, np.ndarray]],
                  kind: str = "texture"):
    """``compute()`` (a dict of arrays), read from / written to the disk cache."""
    if os.environ.get("AVATAR_JAX_NO_CACHE"):
        return compute()
    path = cache_dir(kind) / f"{name}-{key}.npz"
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        pass  # missing or truncated: rebuild
    arrays = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass
    return arrays
