"""The batch store's group commit (``store.write_items``): what a failure part-way leaves."""

from __future__ import annotations

import json
import numpy as np
import pytest

from avatar_jax.batch import store as st
from avatar_jax.batch.inputs import Item


def _entries(n: int) -> list[tuple[str, dict, dict]]:
    return [(f"it{i}", {"corrective": np.full((5, 3), i, np.float32), "status": np.int32(0)},
             {"id": f"it{i}", "status": "ok"}) for i in range(n)]


def _items(n: int) -> list[Item]:
    return [Item(index=i, id=f"it{i}", image=f"{i}.png") for i in range(n)]


def _leftovers(store: st.Store) -> list[str]:
    return sorted(p.name for p in store.items_dir.iterdir() if p.name.startswith("."))


def test_group_commit_writes_every_npz_and_record(tmp_path):
    store = st.open_store(tmp_path / "out", {"a": 1})
    records = st.write_items(store, _entries(3))
    assert [r["outputs"] for r in records] == [[f"items/it{i}.npz"] for i in range(3)]
    assert st.done_ids(store, _items(3)) == {"it0", "it1", "it2"}
    for i in range(3):
        assert json.loads(store.record_path(f"it{i}").read_text()) == records[i]
        assert np.array_equal(np.load(store.npz_path(f"it{i}"))["corrective"], np.full((5, 3), i))
    assert _leftovers(store) == []


def test_a_failure_before_the_records_commits_nothing(tmp_path, monkeypatch):
    store = st.open_store(tmp_path / "out", {"a": 1})
    calls = []

    def sync_then_fail(paths):
        calls.append(len(paths))
        if len(calls) == 2:  # the records' sync: the npz files are already in place
            raise OSError("disk gone")

    monkeypatch.setattr(st, "sync_files", sync_then_fail)
    with pytest.raises(OSError, match="disk gone"):
        st.write_items(store, _entries(3))
    assert calls == [3, 3]
    assert st.done_ids(store, _items(3)) == set()  # npz files without records: not done, redone
    assert sorted(p.name for p in store.items_dir.glob("*.npz")) == ["it0.npz", "it1.npz", "it2.npz"]
    assert _leftovers(store) == []


def test_an_unwritable_item_leaves_no_npz_of_the_group(tmp_path):
    store = st.open_store(tmp_path / "out", {"a": 1})
    entries = _entries(3)
    entries[1] = ("gone/it1",) + entries[1][1:]  # its folder does not exist
    with pytest.raises(FileNotFoundError):
        st.write_items(store, entries)
    assert list(store.items_dir.iterdir()) == []


def test_sync_files_fsyncs_files_in_several_folders(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(st, "_fsync_file", lambda p: synced.append(p))
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "f.bin")
        paths[-1].write_bytes(b"x")
    st.sync_files(paths)
    assert synced == paths
    synced.clear()
    st.sync_files(paths[:1])  # one folder: one syncfs where Linux has it, else an fsync
    assert synced == ([] if st._SYNCFS is not None else paths[:1])
    st.sync_files([])
    assert synced == ([] if st._SYNCFS is not None else paths[:1])
