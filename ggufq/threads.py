"""numba's thread pool for batch jobs (quantize, convert): one parallel call per tensor slab, back to back.

Waking a sleeping worker costs about 100 us on this kind of VM (a futex round trip), and a quantize run
makes two parallel calls per tensor: 430 calls on SmolLM2, 0.06-0.15 s of its ~1.2 s. OpenMP workers that
spin for a short while after each call pick the next one up in a few microseconds (measured: 5 us against
workqueue's 140 us per call, tests/.. none: tools/bench_quantize.py shows it whole). The spin is bounded
(GOMP_SPINCOUNT) so that on a busy machine the workers go to sleep soon instead of stealing the cores
(unbounded spinning was 40% slower with five other busy processes on 2 cores; bounded, as fast as
workqueue). The runtime (ggufq.model) makes hundreds of tiny regions per token and sets its own policy.
"""
from __future__ import annotations

import os

BATCH_SPINCOUNT = "30000"


def configure_batch_threads(n_threads: int = 0) -> None:
    """Call before the first parallel kernel runs: libgomp reads its environment once, when it loads.
    What the user set (NUMBA_THREADING_LAYER, OMP_WAIT_POLICY, GOMP_SPINCOUNT) wins."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", BATCH_SPINCOUNT)
    import numba
    if "NUMBA_THREADING_LAYER" not in os.environ:
        # OpenMP where numba has it, else workqueue; TBB (which numba prefers by default) spins unbounded
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
    if n_threads > 0:
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
