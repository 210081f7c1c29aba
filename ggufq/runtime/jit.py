"""Say when numba is about to compile, instead of letting a command look hung or slow.

Every kernel is compiled with cache=True, so a machine compiles each one once (`make` does it for all of
them through `python -m ggufq.runtime.warmup`); the cache lives beside the sources and is keyed by the CPU. When
a command is about to use kernels that have no cache entry for this CPU (a new CPU type, a cleared cache,
an edited module), `announce(...)` prints one line on stderr before the compile starts, and callers keep
that time out of the speeds they report (Model.warm_up).

The check reads numba's cache index files (numba.core.caching, stable since 0.49): a function counts as
compiled for this CPU when its index has an entry for the current code generator's magic tuple (CPU name
and features) and its source stamp is fresh. Where numba's internals differ, the check says nothing.
"""
from __future__ import annotations

import sys

_announced: set[str] = set()


def uncompiled(modules) -> list[str]:
    """Names of the cached numba functions in `modules` that will be compiled when used: every function of
    a module none of whose functions has a fresh entry for this CPU (a fresh install, a cleared cache, a
    new CPU, an edited, moved or new module). In a module with fresh entries, a function without one
    (no index, or one left stale by an edit) is one no command has called here since (some paths are
    rare: the warm-up runs the common ones), not counted. Functions that are always inlined are never
    compiled on their own and not counted either."""
    import os
    try:
        from numba.core.caching import Cache
        from numba.core.registry import CPUDispatcher
    except ImportError:
        return []
    missing, magic = [], None
    for mod in modules:
        names, fresh = [], 0
        for name, obj in vars(mod).items():
            if not isinstance(obj, CPUDispatcher) or obj.__module__ != mod.__name__:
                continue
            cache = getattr(obj, "_cache", None)
            if not isinstance(cache, Cache) or obj.targetoptions.get("inline") == "always":
                continue
            names.append(f"{mod.__name__}.{name}")
            try:
                if magic is None:
                    magic = obj.targetctx.codegen().magic_tuple()
                cf = cache._cache_file
                if not os.path.exists(cf._index_path):
                    continue
                index = cf._load_index()
            except Exception:  # numba's internals moved: say nothing rather than something wrong
                return []
            fresh += any(key[1] == magic for key in index)
        if not fresh:
            missing += names
    return missing


def announce(what: str, modules) -> bool:
    """One line on stderr if kernels of `modules` will be compiled now (once per `what` and process)."""
    if what in _announced:
        return False
    _announced.add(what)
    missing = uncompiled(modules)
    if not missing:
        return False
    print(f"ggufq: compiling {len(missing)} {what} kernels for this CPU (first use after an install, an "
          f"update or on a new CPU; cached afterwards; `make compile` does them all at once)...",
          file=sys.stderr, flush=True)
    return True


def silence() -> None:
    """No notices in this process (the warm-up itself compiles, and says so per group)."""
    _announced.update({"runtime", "quantizer", "converter"})


def runtime_modules():
    from ggufq.runtime import batch, decode, flash, ops
    from ggufq.quantize import imatrix
    from ggufq.kernels import (dot_common, dot_rows, dot_simd, floats, gemm_q8, gguf_strings, kquants,
                               kquants_runtime, legacy, legacy_runtime, numerics)
    return [ops, decode, batch, flash, imatrix, dot_common, floats, gemm_q8, kquants, kquants_runtime, legacy,
            legacy_runtime, dot_rows, dot_simd, numerics, gguf_strings]


def quantizer_modules():
    from ggufq.kernels import floats, kquants, legacy, numerics
    return [numerics, legacy, kquants, floats]
