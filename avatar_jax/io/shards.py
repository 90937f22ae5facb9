"""Dataset shards on disk: ``DIR/manifest.json`` + ``DIR/shard-00000.npz`` ... (make-dataset's format).

A shard is one compressed ``.npz`` of arrays with a common leading dim; the manifest lists the
shards in order with the config that made them. Writers go through :func:`write_shard` (temp
file + rename: a reader never sees half a shard).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def shard_path(out_dir, k: int) -> Path:
    return Path(out_dir) / f"shard-{k:05d}.npz"


def write_shard(path: Path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{out_dir} is not a dataset folder (no manifest.json)")
    return json.loads(path.read_text())


def iter_shards(out_dir, fields=None):
    """Yield each finished shard in ``out_dir`` as a dict of arrays (only ``fields`` if given), in order."""
    out_dir = Path(out_dir)
    for name in read_manifest(out_dir)["shards"]:
        path = out_dir / name
        if path.is_file():
            with np.load(path) as data:
                yield {k: data[k] for k in (fields or data.files)}
