"""A spinning barrier for the threads of one numba parallel region (the compiled decode step).

A parallel region costs a wake-up of every worker (~20 us here: the workers sleep between regions, see
model.py), and a token takes a few hundred matrix products. So the decode step opens one region per
token, `for tid in prange(n_threads)`, and its threads meet at this barrier between the stages of the
forward pass, the way ggml's thread pool does (ggml_barrier: an atomic counter and a spin).

The counter only grows: the k-th barrier a thread reaches (k = 1, 2, ...) is passed when the counter
reaches k * n_threads. Each thread keeps its own k. It is only safe when every prange iteration runs on
its own thread at the same time, which holds for the OpenMP and workqueue layers when the iteration
count equals numba's thread count (the caller checks both).
"""
from __future__ import annotations

import platform

import numba as nb
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _slot(context, builder, aryty, ary, idx):
    a = context.make_array(aryty)(context, builder, ary)
    return builder.gep(a.data, [idx])


@intrinsic
def atomic_add(typingctx, counter, idx, val):
    """counter[idx] += val atomically (sequentially consistent); returns the old value."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _slot(context, builder, sig.args[0], args[0], args[1]), v, "seq_cst")

    return types.int64(counter, idx, val), codegen


@intrinsic
def atomic_load(typingctx, counter, idx):
    """counter[idx], read with acquire ordering (sees every write made before the matching add)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig.args[0], args[0], args[1]), "acquire", 8)

    return types.int64(counter, idx), codegen


@intrinsic
def cpu_relax(typingctx):
    """x86 `pause` in a spin loop (a no-op elsewhere): kinder to the sibling hyper-thread."""
    def codegen(context, builder, sig, args):
        if X86:
            mod = builder.module
            try:
                fn = mod.get_global("llvm.x86.sse2.pause")
            except KeyError:
                fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (rdtsc on x86; llvm.readcyclecounter, 0 where there is none): ~20 cycles a
    read, for the batch step's per-stage profile."""
    def codegen(context, builder, sig, args):
        mod = builder.module
        try:
            fn = mod.get_global("llvm.readcyclecounter")
        except KeyError:
            fn = ir.Function(mod, ir.FunctionType(ir.IntType(64), []), name="llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@nb.njit(inline="always")
def barrier(counter, n_threads, k):
    """Wait until all n_threads threads have arrived at their k-th barrier; returns k + 1 (the caller's
    count of barriers passed). counter: int64[1], zero when the region starts."""
    atomic_add(counter, 0, 1)
    target = (k + 1) * n_threads
    while atomic_load(counter, 0) < target:
        cpu_relax()
    return k + 1
