"""Local devices for a sharded batch, and the CPU thread-pool guard that sharding needs there.

jaxlib's CPU LAPACK kernels (the fit's batched Cholesky factorisations, EPnP's eigh) split a
batch into tasks on XLA's intra-op thread pool and block until those finish. With several CPU
devices, each device's program runs on a worker of that same pool; when every worker is blocked
in such a call, nothing is left to run the tasks and the process hangs for good (found with gdb:
all workers in ``ParallelBatchMap`` -> ``BlockingCounter::Wait``; docs/batch.md). The pool has
one thread per core unless ``NPROC`` says otherwise, so sharding over more CPU devices than that
needs a larger pool: :func:`use_host_devices` sets both before JAX starts, and
:func:`check_devices` refuses (``ValueError``) a CPU mesh the pool cannot serve instead of hanging.
"""

from __future__ import annotations

import os
from typing import Sequence

# The pool must outnumber the devices; twice as many leaves each device's program a spare worker.
_POOL_PER_DEVICE = 2


def use_host_devices(count: int) -> None:
    """Split the CPU into ``count`` JAX devices (``jax_num_cpu_devices``) and size XLA's thread
    pool for them. Call before anything starts JAX's backend (JAX raises otherwise)."""
    import jax

    if not isinstance(count, int) or count < 1:
        raise ValueError(f"host device count must be a positive int, got {count!r}")
    jax.config.update("jax_num_cpu_devices", count)
    if count > 1 and _pool_size() < _POOL_PER_DEVICE * count:
        os.environ["NPROC"] = str(_POOL_PER_DEVICE * count)


def _pool_size() -> int:
    """Threads of XLA's CPU intra-op pool: ``PORTABLE_NPROC`` or ``NPROC`` (read by XLA when the
    CPU client starts), else the cores this process may run on."""
    for name in ("PORTABLE_NPROC", "NPROC"):
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_devices(devices: Sequence) -> tuple:
    """``devices`` as a tuple after checking they can run one sharded program: distinct, one
    platform, and for several CPU devices a thread pool larger than their number."""
    devices = tuple(devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices: each device once, got {devices}")
    platforms = {d.platform for d in devices}
    if len(platforms) != 1:
        raise ValueError(f"devices: one platform per mesh, got {sorted(platforms)}")
    if platforms == {"cpu"} and len(devices) > 1 and _pool_size() <= len(devices):
        raise ValueError(  # a setting to change, like any other bad argument
            f"sharding over {len(devices)} CPU devices needs XLA's CPU thread pool to have more than "
            f"{len(devices)} threads (it has {_pool_size()}), or LAPACK calls deadlock: set NPROC="
            f"{_POOL_PER_DEVICE * len(devices)} before JAX starts, or call "
            "avatar_jax.use_host_devices(n) first (docs/batch.md)")
    return devices
