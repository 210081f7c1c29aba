"""numba's thread pool for batch jobs (quantize, convert): parallel calls of a few milliseconds, back to back.

Waking a sleeping worker costs about 100 us on these VMs (a futex round trip per call: 140 us a call with
numba's workqueue layer, measured on a 2-row Q4_0 quantize), and quantizing SmolLM2 makes 430 calls, two
per tensor. OpenMP workers that spin a little after each call pick the next one up in 5 us. The spin is
bounded (GOMP_SPINCOUNT) so that on a busy machine they soon sleep instead of taking the cores from
whoever runs: SmolLM2 F16 -> Q4_0 with two other busy processes on the 2 cores took 2.1-2.6 s so bounded,
2.4-2.7 s with workqueue, and up to 4.9 s with libgomp's default spin.
The runtime makes hundreds of tiny regions per token and has its own policy (configure_runtime_threads).
Both policies, the thread count of numba and of BLAS, and the runtime's load-following count live here.
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


def configure_runtime_threads() -> None:
    """The runtime's policy, set when ggufq.runtime.model is imported (before libgomp loads): numba's
    OpenMP workers sleep between parallel regions instead of spinning. A token makes a few hundred short
    regions; spinning workers win ~20% on an idle machine but collapse as soon as anything else runs
    (OpenBLAS threads during a batch, another process: decoding 10x slower, measured on this 2-core box
    with one other busy process). OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment win."""
    if "GOMP_SPINCOUNT" not in os.environ:
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")


class LoadAwareThreads:
    """The runtime's default thread count: every core that another process is not keeping busy.

    The decode step's threads meet at a spinning barrier a few hundred times per token. When another
    process holds one of the cores, the thread sharing a core with it runs only in the scheduler's
    slices, and at every barrier the others wait for its next slice: on 2 cores with one busy, 2 threads
    decoded SmolLM2 at 2.5-16.5 tokens/s against 46-59 with one. So, without an explicit -t, the count
    follows the machine: every `interval` seconds (0.2) the CPU time of other processes is read from
    /proc/stat (all CPUs' busy time less our own), and the threads are the cores it leaves free, at
    least one. On a quiet machine that is every core, as before. llama.cpp's pool has the same trouble
    and answers it by sleeping after a bounded spin; fewer threads is the answer that keeps our barrier.
    """

    def __init__(self, limit: int, interval: float = 0.2):
        self.limit = max(1, limit)
        self.interval = interval
        self.n = self.limit
        self._last = self._sample()

    @staticmethod
    def _sample():
        """(wall seconds, busy CPU seconds of the whole machine, CPU seconds of this process)."""
        import time
        try:
            with open("/proc/stat", "rb") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != b"cpu":
            return None
        ticks = [int(v) for v in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)        # idle + iowait
        busy = sum(ticks[:8]) - idle                                   # guest time is inside user time
        hz = os.sysconf("SC_CLK_TCK")
        t = os.times()
        return time.monotonic(), busy / hz, t.user + t.system

    def pick(self) -> int:
        """The thread count to use now (re-measured at most every `interval` seconds; 20 us a read)."""
        if self.limit == 1 or self._last is None:
            return self.n
        import time
        if time.monotonic() - self._last[0] < self.interval:
            return self.n
        now = self._sample()
        if now is None:
            return self.n
        wall = now[0] - self._last[0]
        others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / wall  # cores' worth
        self._last = now
        # a core counts as taken from 0.6 of one kept busy by others (the tick counts are coarse)
        self.n = max(1, min(self.limit, os.cpu_count() or 1) - int(others + 0.4))
        return self.n


def threads_run_together() -> bool:
    """Whether numba's threading layer runs each prange iteration on its own thread at once (OpenMP and
    workqueue do; TBB may run two on one thread, which would deadlock the decode step's barrier)."""
    import numba

    from ggufq.runtime import ops
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet: run one
        import numpy as np
        ops.attention(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32),
                      0, 1, 1, 1, 0, np.float32(1.0), np.zeros((1, 1), np.float32), np.zeros((1, 35), np.float32), 0)
        layer = numba.threading_layer()
    return layer in ("omp", "workqueue")


def set_threads(n: int) -> None:
    """Threads for numba's kernels and, where it can be reached, the BLAS numpy links."""
    import numba
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    set_blas_threads(n)


_BLAS_SETTERS: list | None = None


def set_blas_threads(n: int) -> None:
    """Threads of the OpenBLAS numpy links (its setters found once in the process's mapped libraries)."""
    global _BLAS_SETTERS
    if _BLAS_SETTERS is None:
        _BLAS_SETTERS = _find_blas_setters()
    import ctypes
    for fn in _BLAS_SETTERS:
        fn(ctypes.c_int(n))


def _find_blas_setters() -> list:
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower() and line.split()[-1].startswith("/")}
    except OSError:
        return []
    found = []
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                found.append(fn)
                break
    return found
