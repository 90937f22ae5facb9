"""Batch fitting at scale: thousands of photos, streamed, resumable, sharded over processes.

    from avatar_jax.batch import BatchConfig, fit_batch, list_items
    report = fit_batch(list_items("photos/"), "out/", BatchConfig(batch_size=64))

:mod:`.inputs` lists the items (folder, glob, CSV/JSONL manifest with optional landmark files),
:mod:`.store` owns the output folder (atomic per-item files, resume, results.jsonl, summary.json),
:mod:`.run` the streaming pipeline, :mod:`.command` the ``avatar-jax fit-batch`` command line.
Usage, output format and sharding: docs/batch.md.

Names are imported lazily, so that ``avatar-jax --help`` (which imports :mod:`.command`) does
not load JAX.
"""

from __future__ import annotations

from avatar_jax._lazy import lazy_exports

_EXPORTS = {"Item": "inputs", "list_items": "inputs", "read_landmarks": "inputs", "shard": "inputs",
            "BatchConfig": "run", "BatchReport": "run", "fit_batch": "run", "SettingsMismatch": "store"}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"avatar_jax.batch.{module}" for name, module in _EXPORTS.items()}, globals())
