"""One BLAS/LAPACK thread while batched fits run.

jaxlib runs its CPU LAPACK kernels (the fit's batched 136 x 136 Cholesky factorisations and
triangular solves) through SciPy's OpenBLAS, which splits every one of these small calls over all
cores. Measured on the 2-core CI machine: the whole fit at B = 256 took 1.33 ms per image with
OpenBLAS's default two threads and 0.93 ms with one, on an idle machine; with another process
busy on the second core the two-thread build spun on it and the batched solves got up to ~500x
slower. A batch of small problems gains nothing from splitting each one, and batch users run one
process per core.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def _controller():
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, which jaxlib's LAPACK calls into)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_blas_thread():
    """Context manager: every loaded BLAS library runs on one thread inside it (restored after).
    Work dispatched to JAX inside must also finish inside (``jax.block_until_ready``)."""
    return _controller().limit(limits=1, user_api="blas")
