"""Several photos of one person fitted to one identity, after the per-image run.

``fit-batch --group-by person|folder`` first fits every image on its own (items/, as without
grouping); then every group's usable photos (record ok, landmarks in its npz) are fitted
jointly by :func:`avatar_jax.fit.fit_joint`: one shared identity, per-photo camera, expression
and corrective. Per group, ``groups/<group id>.npz`` and then, as the commit marker,
``groups/<group id>.json``; ``groups.jsonl`` lists every group's record. A rerun skips a group
whose record lists the same usable members; a group gains a member, it is refitted.

Shapes are fixed per call so nothing recompiles per group: ``groups_per_call`` groups of V
photos, V the group size rounded up to a power of two (at most :data:`MAX_VIEWS`; a larger group
uses its first MAX_VIEWS usable photos and its record says which were left out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Sequence

import numpy as np

from avatar_jax import pipeline
from avatar_jax.batch import store as st
from avatar_jax.batch.inputs import Item, safe_id
from avatar_jax.fit import FitConfig, fit_joint
from avatar_jax.model import HeadModel
from avatar_jax.status import Status

MAX_VIEWS = 32
GROUPS_PER_CALL = 8


@dataclasses.dataclass(frozen=True)
class _Member:
    item: Item
    landmarks: np.ndarray  # [68, 2]
    image_size: np.ndarray  # [2]


def group_members(items: Sequence[Item]) -> dict[str, list[Item]]:
    """``{group: items}`` in order of first appearance (items without a group are left out)."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        if it.group is not None:
            groups.setdefault(it.group, []).append(it)
    return groups


def fit_groups(items: Sequence[Item], store: st.Store, model: HeadModel, config: FitConfig = FitConfig(), *,
               all_items: Sequence[Item] | None = None, groups_per_call: int = GROUPS_PER_CALL,
               landmarks_on_head: str = "calibrated") -> dict:
    """Fit every group of ``items`` not yet committed under ``store.root / "groups"``; rewrite
    groups.jsonl with every committed group of ``all_items`` (default ``items``; a shard passes
    the full input). Returns ``{"groups", "fitted", "skipped", "counts", "wall_s"}``."""
    t0 = time.perf_counter()
    folder = store.root / "groups"
    folder.mkdir(exist_ok=True)
    todo, skipped = [], 0
    for name, members in group_members(items).items():
        usable = [m for m in map(lambda it: _usable(store, it), members) if m is not None]
        if _committed(folder, name, usable):
            skipped += 1
        else:
            todo.append((name, members, usable))
    by_views: dict[int, list] = {}
    for group in todo:
        by_views.setdefault(_views_bucket(len(group[2])), []).append(group)
    for views, groups in sorted(by_views.items()):
        for start in range(0, len(groups), groups_per_call):
            _fit_call(folder, groups[start:start + groups_per_call], views, groups_per_call, model, config,
                      pipeline.head_landmark_set(model, landmarks_on_head))
    with st.folder_lock(store):
        names = group_members(all_items if all_items is not None else items)
        records = [r for r in (_read_group(folder, name) for name in names) if r is not None]
        st.write_atomic(store.root / "groups.jsonl",
                        "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
    return {"groups": len(records), "fitted": len(todo), "skipped": skipped, "counts": st.count_statuses(records),
            "wall_s": time.perf_counter() - t0}


def _usable(store: st.Store, item: Item) -> _Member | None:
    record = st.read_record(store, item.id)
    if record is None or record["status"] != Status.OK.label:
        return None
    try:
        with np.load(store.npz_path(item.id)) as z:
            return _Member(item, z["landmarks_input"].astype(np.float32), z["image_size"].astype(np.float32))
    except (OSError, KeyError, ValueError):
        return None


def _views_bucket(n: int) -> int:
    return min(MAX_VIEWS, 1 << max(1, int(np.ceil(np.log2(max(n, 1))))))


def _stem(name: str) -> str:
    """The group's file stem: its safe id, plus a hash when that changed the name (no two
    groups share a file)."""
    safe = safe_id(name)
    return safe if safe == name else f"{safe}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _record_path(folder, name):
    return folder / f"{_stem(name)}.json"


def _read_group(folder, name) -> dict | None:
    return st.read_json_record(_record_path(folder, name), "group", name)


def _committed(folder, name, usable: list[_Member]) -> bool:
    record = _read_group(folder, name)
    return record is not None and record["usable"] == [m.item.id for m in usable]


def _fit_call(folder, groups, views: int, groups_per_call: int, model, config, landmark_set) -> None:
    """One :func:`fit_joint` call on ``groups_per_call`` x ``views`` padded slots; commit each group."""
    lms = np.full((groups_per_call, views, 68, 2), np.nan, np.float32)
    sizes = np.ones((groups_per_call, views, 2), np.float32)
    for g, (_, _, usable) in enumerate(groups):
        for v, m in enumerate(usable[:views]):
            lms[g, v], sizes[g, v] = m.landmarks, m.image_size
    t0 = time.perf_counter()
    result = fit_joint(lms, sizes, config, model=model, landmark_set=landmark_set)
    seconds = (time.perf_counter() - t0) / max(len(groups), 1)
    for g, (name, members, usable) in enumerate(groups):
        _commit_group(folder, name, members, usable, views, result, g, seconds)


def _commit_group(folder, name, members, usable, views, result, g, seconds) -> None:
    fitted = usable[:views]
    n = len(fitted)
    used = np.asarray(result.view_used[g, :n])
    v = result.views
    pick = lambda a: np.asarray(a[g, :n], np.float32)  # noqa: E731
    status = Status(int(result.status[g])) if n else Status.DEGENERATE_INPUT
    arrays = {
        "identity": np.asarray(result.identity[g], np.float32), "member_ids": np.asarray([m.item.id for m in fitted]),
        "view_used": used, "camera_rotvec": pick(v.camera.rotvec), "camera_translation": pick(v.camera.translation),
        "camera_log_focal_scale": pick(v.camera.log_fs), "expression": pick(v.expression),
        "corrective": pick(v.corrective), "landmarks2d": pick(v.landmarks2d),
        "reprojection_error": pick(v.reprojection_error), "view_status": np.asarray(v.status[g, :n], np.int32),
        "energy": np.float32(result.energy[g]), "status": np.int32(status),
    }
    npz = st.write_atomic(folder / f"{_stem(name)}.npz", st.npz_bytes(arrays))
    reproj = np.asarray(v.reprojection_error[g, :n])[used]
    record = {
        "group": name, "status": status.label, "members": [it.id for it in members],
        "usable": [m.item.id for m in usable], "used": [m.item.id for m, u in zip(fitted, used) if u],
        "left_out": [m.item.id for m in usable[views:]], "energy": float(result.energy[g]),
        "reprojection_error_px_mean": float(reproj.mean()) if reproj.size else None,
        "fit_s": seconds, "outputs": [npz.relative_to(folder.parent).as_posix()],
        "message": _message(status, members, usable, used),
    }
    st.write_atomic(_record_path(folder, name), (json.dumps(record, sort_keys=True) + "\n").encode())


def _message(status: Status, members, usable, used) -> str:
    if status == Status.DEGENERATE_INPUT:
        return f"no usable photo: none of the group's {len(members)} images was fitted on its own"
    return (f"{int(np.sum(used))} of {len(members)} photos share the identity "
            f"({len(members) - len(usable)} not fitted on their own)")
