"""The output folder of a batch run, written so that no kill loses or corrupts work.

    DIR/run.json              the settings the results depend on (a resume must match them)
    DIR/items/<id>.npz        the item's fitted parameters (see :func:`item_arrays`)
    DIR/items/<id>.json       the item's record: the commit marker, written last
    DIR/items/<id>.glb ...    optional exports
    DIR/results.jsonl         every record, in input order (rebuilt from the records)
    DIR/summary.json          counts per status, images/s per stage, wall time, settings

Every file is written to a temp file in its final folder and renamed over the final name
(``os.replace`` is atomic), so a reader sees the old file or the new one, never part of one. An
item is done iff its record exists and parses: its npz and exports are renamed into place and
made durable before the record is written, so a kill (or a power cut) between the two leaves a
complete but uncommitted npz that the next run rewrites. One item (:func:`write_item`) fsyncs
each of its files; a batch without exports (:func:`write_items`) is committed as a group, with
one filesystem sync after all its npz files and one after all its records, which costs less
than two fsyncs per item. Temp files are named ``.<name>~<host>~<pid>~<n>.tmp``; a new run removes
those of dead processes on its host (and any older than a day), never a live process's, so
several shards may share one folder. results.jsonl and summary.json are rebuilt from the records
under an exclusive ``flock`` on ``DIR/.lock``, so two shards finishing at once cannot leave a
listing that misses either's items.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import fcntl
import io
import itertools
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from avatar_jax.batch.inputs import Item

FORMAT_VERSION = 1
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\.(?P<name>.+)~(?P<host>[A-Za-z0-9-]+)~(?P<pid>\d+)~\d+\.tmp(dir)?$")
_STALE_FOREIGN_S = 24 * 3600.0  # another host's temp files: its process is surely gone by then
_counter = itertools.count()
_live_temps: set[str] = set()  # this process's temp files being written (other threads' runs)
_live_lock = threading.Lock()


class SettingsMismatch(ValueError):
    """The output folder was started with settings that give different results."""


@dataclasses.dataclass(frozen=True)
class Store:
    """The output folder ``root``; records under ``root/items``."""

    root: Path

    @property
    def items_dir(self) -> Path:
        return self.root / "items"

    def record_path(self, item_id: str) -> Path:
        return self.items_dir / f"{item_id}.json"

    def npz_path(self, item_id: str) -> Path:
        return self.items_dir / f"{item_id}.npz"


def open_store(root: str | os.PathLike, settings: dict) -> Store:
    """Create (or reopen) the output folder, remove stale temp files and check that ``settings``
    equal those the folder was started with (else :class:`SettingsMismatch`)."""
    store = Store(Path(root))
    store.items_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(store)
    _claim_settings(store, settings)
    return store


def remove_stale_temps(store: Store) -> list[Path]:
    """Delete temp files / folders left by dead processes; returns what was removed."""
    removed = []
    now = time.time()
    for folder in (store.root, store.items_dir):
        for entry in os.scandir(folder):
            match = _TEMP.match(entry.name)
            if not match or not _is_stale(match, entry, now):
                continue
            path = Path(entry.path)
            with contextlib.suppress(FileNotFoundError):  # its owner may finish it meanwhile
                shutil.rmtree(path) if entry.is_dir(follow_symlinks=False) else path.unlink()
                removed.append(path)
    return removed


def _is_stale(match, entry, now: float) -> bool:
    if match["host"] != _HOST:
        try:
            return now - entry.stat(follow_symlinks=False).st_mtime > _STALE_FOREIGN_S
        except FileNotFoundError:
            return False
    pid = int(match["pid"])
    if pid == os.getpid():
        with _live_lock:  # else left by an earlier run in this process, which raised
            return entry.name not in _live_temps
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _claim_settings(store: Store, settings: dict) -> None:
    path = store.root / "run.json"
    text = json.dumps({"format": FORMAT_VERSION, "settings": settings}, indent=1, sort_keys=True)
    with _temp_path(path) as temp:
        _write_bytes(temp, text.encode())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)  # exclusive create: of two shards starting at once, one claims
    stored = json.loads(path.read_text())
    if stored.get("format") != FORMAT_VERSION:
        raise SettingsMismatch(f"{store.root}: written by output format {stored.get('format')}, this "
                               f"version writes {FORMAT_VERSION}; use a new --out folder")
    old = stored.get("settings", {})
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        changes = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff)
        raise SettingsMismatch(f"{store.root} was started with other settings ({changes}). Resume with "
                               f"the same settings, or write to a new --out folder")


# ----------------------------------------------------------------------------- atomic writes

@contextlib.contextmanager
def _temp_path(path: Path, suffix: str = ".tmp"):
    """A fresh temp name next to ``path``, known as live while the block runs; removed after
    unless renamed away."""
    temp = path.parent / f".{path.name}~{_HOST}~{os.getpid()}~{next(_counter)}{suffix}"
    with _live_lock:
        _live_temps.add(temp.name)
    try:
        yield temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(temp) if temp.is_dir() else temp.unlink()
        with _live_lock:
            _live_temps.discard(temp.name)


def _write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes) -> Path:
    """``path`` gets ``data`` whole or keeps its old content (temp file, fsync, rename)."""
    with _temp_path(path) as temp:
        _write_bytes(temp, data)
        os.replace(temp, path)
    return path


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_item(store: Store, item_id: str, arrays: dict, record: Callable[[], dict],
               export: Callable[[Path], Sequence[Path]] | None = None) -> dict:
    """Commit one item: its npz, then its exports (``export(stem)`` writes files named
    ``<id>.<format suffix>`` (``stem.with_suffix(...)``) into a temp folder; they are fsynced and renamed into ``items/``), then its record
    ``record()`` (called after the exports, so it can include their timings; ``outputs`` is
    filled in) -- the record last, as the commit marker. Returns the record.

    An exception from ``export`` propagates after the temp folder is removed; nothing is
    committed then (the caller decides what to record instead).
    """
    outputs = [write_atomic(store.npz_path(item_id), npz_bytes(arrays))]
    if export is not None:
        outputs += _export_atomic(store, item_id, export)
    record = {**record(), "outputs": [p.relative_to(store.root).as_posix() for p in outputs]}
    write_atomic(store.record_path(item_id), (json.dumps(record, sort_keys=True) + "\n").encode())
    return record


def write_items(store: Store, items: Sequence[tuple[str, dict, dict]]) -> list[dict]:
    """Commit several items ``(item_id, arrays, record)`` as one group: every npz, then every
    record, each set by :func:`_replace_group` (one sync per set). A kill or a power cut part-way
    leaves each item committed or not, never a record without its npz. Returns the records as
    written (``outputs`` filled in)."""
    npz = [store.npz_path(item_id) for item_id, _, _ in items]
    _replace_group(npz, [npz_bytes(arrays) for _, arrays, _ in items])
    records = [{**record, "outputs": [path.relative_to(store.root).as_posix()]}
               for path, (_, _, record) in zip(npz, items)]
    _replace_group([store.record_path(item_id) for item_id, _, _ in items],
                   [(json.dumps(record, sort_keys=True) + "\n").encode() for record in records])
    return records


def _replace_group(paths: Sequence[Path], contents: Sequence[bytes]) -> None:
    """Each of ``paths`` gets its ``contents`` whole, or (on an error) none of them is touched:
    all written to temp files, one :func:`sync_files`, then all renamed into place."""
    with contextlib.ExitStack() as temps:
        staged = [temps.enter_context(_temp_path(path)) for path in paths]
        for temp, data in zip(staged, contents):
            _write_bytes(temp, data, sync=False)
        sync_files(staged)
        for temp, path in zip(staged, paths):
            os.replace(temp, path)


def _syncfs():
    """Linux's ``syncfs(fd)`` (all of one filesystem's dirty data in one call), or None."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None


_SYNCFS = _syncfs()


def sync_files(paths: Sequence[Path]) -> None:
    """Make ``paths``' data durable: one ``syncfs`` of their filesystem when all of them lie in
    one folder on Linux, else an fsync of each."""
    if not paths:
        return
    folders = {p.parent for p in paths}
    if _SYNCFS is not None and len(folders) == 1:
        fd = os.open(next(iter(folders)), os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        _fsync_file(path)


def npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _export_atomic(store: Store, item_id: str, export) -> list[Path]:
    with _temp_path(store.items_dir / item_id, ".tmpdir") as temp_dir:
        temp_dir.mkdir()
        # a placeholder suffix: export_avatar swaps the stem's suffix, which would eat an id's ".v2"
        written = [Path(p) for p in export(temp_dir / f"{item_id}.stem")]
        final = []
        for path in written:
            _fsync_file(path)
            target = store.items_dir / path.name
            os.replace(path, target)
            final.append(target)
        return final


# ----------------------------------------------------------------------------- reading back

def read_record(store: Store, item_id: str) -> dict | None:
    """The item's record, or None when it has none (or an unreadable one: the item is not done)."""
    return read_json_record(store.record_path(item_id), "id", item_id)


def read_json_record(path: Path, key: str, value: str) -> dict | None:
    """The JSON object at ``path`` if it parses and its ``key`` is ``value``, else None (a
    missing, partial or foreign record counts as not written)."""
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get(key) == value else None


def count_statuses(records: Iterable[dict]) -> dict[str, int]:
    """``{status label: count}`` of ``records``, sorted by label."""
    return dict(sorted(collections.Counter(r["status"] for r in records).items()))


def done_ids(store: Store, items: Iterable[Item]) -> set[str]:
    """Ids of ``items`` whose record exists and parses."""
    present = {e.name[:-5] for e in os.scandir(store.items_dir) if e.name.endswith(".json")}
    return {it.id for it in items if it.id in present and read_record(store, it.id) is not None}


@contextlib.contextmanager
def folder_lock(store: Store):
    with open(store.root / ".lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def rebuild_results(store: Store, items: Sequence[Item], this_run: dict, settings: dict) -> dict:
    """Rewrite results.jsonl (every record of ``items``, in input order) and summary.json from
    the records on disk; returns the summary."""
    with folder_lock(store):
        records = [r for r in (read_record(store, it.id) for it in items) if r is not None]
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        write_atomic(store.root / "results.jsonl", lines.encode())
        summary = summarize(records, len(items), this_run, settings)
        write_atomic(store.root / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    return summary


def summarize(records: Sequence[dict], num_items: int, this_run: dict, settings: dict) -> dict:
    """Counts per status label, per-stage seconds and images/s, and this run's wall time.

    A stage's images/s is items / summed seconds of that stage, i.e. one worker's rate (decoding
    and detection run on several workers at once; the fit's seconds are its batch's time shared
    among the batch's items); ``this_run.images_per_s`` is the end-to-end rate.
    """
    stages: dict[str, list[float]] = {}
    for r in records:
        for stage, seconds in r.get("timings_s", {}).items():
            stages.setdefault(stage.removesuffix("_s"), []).append(float(seconds))
    per_stage = {name: {"items": len(v), "seconds": sum(v), "images_per_s": len(v) / sum(v) if sum(v) > 0 else None}
                 for name, v in sorted(stages.items())}
    return {"items": num_items, "done": len(records), "pending": num_items - len(records),
            "counts": count_statuses(records), "stages": per_stage, "this_run": this_run,
            "settings": settings}
