"""numba's thread pool for batch jobs (quantize, convert): parallel calls of a few milliseconds, back to back.

Waking a sleeping worker costs about 100 us on these VMs (a futex round trip per call: 140 us a call with
numba's workqueue layer, measured on a 2-row Q4_0 quantize), and quantizing SmolLM2 makes 430 calls, two
per tensor. OpenMP workers that spin a little after each call pick the next one up in 5 us. The spin is
bounded (GOMP_SPINCOUNT) so that on a busy machine they soon sleep instead of taking the cores from
whoever runs: SmolLM2 F16 -> Q4_0 with two other busy processes on the 2 cores took 2.1-2.6 s so bounded,
2.4-2.7 s with workqueue, and up to 4.9 s with libgomp's default spin.
The runtime (ggufq.model) makes hundreds of tiny regions per token and sets its own policy.
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
        # OpenMP where numba has it, else workqueue (numba's own default order puts TBB first)
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
    if n_threads > 0:
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
