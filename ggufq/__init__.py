"""ggufq: GGUF converter, quantizer and numba CPU inference runtime, checked against llama.cpp."""
import os

__version__ = "0.1.0"

# OpenBLAS's threads spin after each product (by default for 2^28 cycles, ~0.1 s) and take the cores from
# the numba kernels that run between the batch path's matrix products: a prompt of 512 tokens on SmolLM2
# Q4_0, 2 threads, 524 t/s with the default, 552 with 2^4 cycles. OpenBLAS reads this when it loads (with
# numpy), so it is set here, before numpy; the user's value wins (ggufq/runtime/threads.py has the rest).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

# before any kernel's cache is loaded: drop them all if a source they inline has changed (see there)
from ggufq.jit_cache import drop_stale_caches  # noqa: E402

drop_stale_caches()


def __getattr__(name):
    # The runtime pulls in numba; load it only when asked for.
    if name == "Model":
        from ggufq.runtime.model import Model
        return Model
    raise AttributeError(name)
