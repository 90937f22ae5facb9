"""JAX persistent compilation cache in a user cache directory.

Compiling the fitting and texture kernels takes seconds; with the cache a second process
starts warm. Set ``AVATAR_JAX_NO_CACHE=1`` to disable, or ``AVATAR_JAX_CACHE_DIR`` to move it.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(os.environ.get("AVATAR_JAX_CACHE_DIR", os.path.join(base, "avatar-jax", "jax")))


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (default: user cache dir)."""
    if os.environ.get("AVATAR_JAX_NO_CACHE"):
        return None
    import jax

    cache = Path(path) if path is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # read-only home: run uncached rather than fail
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache
