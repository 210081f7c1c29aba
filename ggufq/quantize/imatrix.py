"""The importance matrix: llama-imatrix's collector on our runtime.

For every matrix product of a `blk.*` weight (and of `output.weight` with process_output), per input
column j: the sum over the tokens of x_j^2 of the activations entering the product, and the number of
tokens, accumulated over chunks of n_ctx tokens of a calibration text, the way llama-imatrix does
(tools/imatrix/imatrix.cpp: chunks as llama-perplexity cuts them, BOS first when the model adds it,
float32 sums row after row). quantize --imatrix then weights each column's rounding error by
in_sum2 / count. The file is llama-imatrix's GGUF: general.type = imatrix, imatrix.datasets,
imatrix.chunk_count, imatrix.chunk_size, and per tensor `<name>.in_sum2` (F32 [n_mat, k]) and
`<name>.counts` (F32 [n_mat, 1]), tensors in name order.

    col = ImatrixCollector(n_ctx); model.rs.collector = col; ... ; col.write(path, datasets)
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from ggufq.errors import GGUFQError
from ggufq.kernels.dot_common import fma32


@nb.njit(cache=True, parallel=True)
def add_squares(x, acc):
    """acc[j] += x[t, j]^2 for t = 0, 1, ... in order, in float32 (llama-imatrix's loop, which its
    -march=native build contracts to one fused multiply-add per value)."""
    T, k = x.shape
    for j in nb.prange(k):
        a = acc[j]
        for t in range(T):
            a = fma32(x[t, j], x[t, j], a)
        acc[j] = a


class ImatrixCollector:
    """Sums of squared activations per weight matrix, filled by the runtime's matmul (Model.rs.collector)."""

    def __init__(self, chunk_size: int, process_output: bool = False):
        self.chunk_size = chunk_size
        self.process_output = process_output
        self.sums: dict[str, np.ndarray] = {}     # name -> float32[k] (one matrix: no experts here)
        self.counts: dict[str, int] = {}
        self.datasets: list[str] = []

    def wants(self, name: str) -> bool:
        return name.startswith("blk.") or (self.process_output and name == "output.weight")

    def add(self, name: str, x: np.ndarray) -> None:
        acc = self.sums.get(name)
        if acc is None:
            acc = self.sums[name] = np.zeros(x.shape[1], np.float32)
            self.counts[name] = 0
        elif acc.shape[0] != x.shape[1]:
            raise GGUFQError(f"imatrix: inconsistent size for {name} ({acc.shape[0]} vs {x.shape[1]})")
        add_squares(x, acc)
        self.counts[name] += x.shape[0]

    @property
    def chunk_count(self) -> int:
        return max(self.counts.values(), default=0) // self.chunk_size

    def merge(self, data) -> None:
        """Add an imatrix file's numbers (imatrix_file.ImatrixData), as llama-imatrix --in-file does: a
        GGUF file's raw sums and counts, a legacy file's averages times the chunk size."""
        for name, (sums, counts) in data.raw.items():
            if counts.size != 1:
                raise GGUFQError(f"{data.path}: {name} holds {counts.size} experts; ggufq's models have none")
            if data.is_legacy:
                sums = (sums * np.float32(self.chunk_size)).astype(np.float32)
                counts = counts * self.chunk_size
            acc = self.sums.get(name)
            if acc is None:
                self.sums[name] = sums.astype(np.float32).copy()
                self.counts[name] = 0
            elif acc.shape != sums.shape:
                raise GGUFQError(f"{data.path}: mismatched sums size for {name}: {sums.size} != {acc.size}")
            else:
                acc += sums
            self.counts[name] += int(counts[0])
        self.datasets.extend(data.datasets)

    def write(self, path) -> int:
        """The GGUF file, atomically; returns the number of entries."""
        import gguf

        from ggufq.files.atomic import atomic_output
        if not self.sums:
            raise GGUFQError("imatrix: no activations were collected")
        with atomic_output(path) as tmp:
            w = gguf.GGUFWriter(tmp, arch=None)
            try:
                w.add_type("imatrix")
                w.add_array("imatrix.datasets", list(self.datasets))
                w.add_uint32("imatrix.chunk_count", self.chunk_count)
                w.add_uint32("imatrix.chunk_size", self.chunk_size)
                for name in sorted(self.sums):
                    w.add_tensor(f"{name}.in_sum2", self.sums[name].reshape(1, -1))
                    w.add_tensor(f"{name}.counts", np.array([[self.counts[name]]], np.float32))
                w.write_header_to_file()
                w.write_kv_data_to_file()
                w.write_tensors_to_file()
            finally:
                w.close()
        return len(self.sums)


def collect(model, tokens: list[int], n_ctx: int, n_chunks: int, add_bos: bool, bos_id: int | None,
            collector: ImatrixCollector, progress=None) -> list[float]:
    """Run the chunks through the model with the collector attached; the running perplexity after each
    chunk (llama-imatrix prints it as llama-perplexity does: the second half of each chunk scored)."""
    from ggufq.runtime import ops
    from ggufq.evaluate.perplexity import chunk_tokens, count_chunks

    n_chunk = count_chunks(len(tokens), n_ctx, n_chunks)
    first = n_ctx // 2
    # every position's logits with process_output (llama-imatrix asks for all of them, so output.weight
    # sees the whole chunk); otherwise only the scored half is projected
    start = 0 if collector.process_output else first
    nll, count, running = 0.0, 0, []
    lp = np.zeros(0, np.float64)
    model.rs.collector = collector
    try:
        for i in range(n_chunk):
            chunk = np.asarray(chunk_tokens(tokens, i, n_ctx, add_bos, bos_id), np.int64)
            for i0, logits in model.scored_logits(chunk, start):
                m = len(logits)
                lo = max(i0, first)
                if lo >= i0 + m:
                    continue
                if lp.size < m:
                    lp = np.zeros(m, np.float64)
                ops.log_softmax_at(logits[lo - i0:], chunk[lo + 1:i0 + m + 1], lp[:i0 + m - lo])
                nll -= float(lp[:i0 + m - lo].sum())
                count += i0 + m - lo
            running.append(math.exp(nll / count))
            if progress:
                progress(i, running[-1])
    finally:
        model.rs.collector = None
    return running


def compute_imatrix(model_path, text: str | None, output, n_ctx: int = 512, n_chunks: int = -1,
                    n_batch: int | None = None, n_threads: int | None = None, process_output: bool = False,
                    in_files=(), dataset: str | None = None, log=None) -> dict:
    """llama-imatrix end to end: the earlier files in `in_files` added in, then `text` (when given) run
    chunk by chunk with the collector attached, then the file written to `output` (atomically).
    Returns {"entries", "chunks", "tokens", "seconds", "ppl", "running"}.

    Progress: on a terminal a bar over the chunks with the running perplexity; otherwise (and always at the
    end) the running estimates as llama-imatrix prints them, `[1]x,[2]y,...` on stdout."""
    import sys
    import time

    import numba
    from tqdm import tqdm

    from ggufq.files.imatrix_file import load_imatrix
    from ggufq.runtime.model import Model

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    col = ImatrixCollector(n_ctx, process_output)
    for path in in_files:
        col.merge(load_imatrix(path))
        log(f"imatrix: added {path}")
    result = {"tokens": 0, "running": [], "ppl": None}
    t0 = time.perf_counter()
    if text is not None:
        n_batch = min(n_batch or n_ctx, n_ctx)
        # a fixed thread count: the same text gives the same file (BLAS splits its work by threads)
        model = Model.load(model_path, n_ctx=n_ctx, n_threads=n_threads or numba.config.NUMBA_NUM_THREADS,
                           n_batch=n_batch)
        tok = model.tokenizer
        tokens = tok.encode(text, add_special=True, parse_special=False)
        log(f"imatrix: {len(tokens)} tokens, n_ctx={n_ctx}, batch={n_batch}")
        from ggufq.evaluate.perplexity import count_chunks
        bar = tqdm(total=count_chunks(len(tokens), n_ctx, n_chunks), unit="chunk", desc="imatrix",
                   file=sys.stderr, disable=None, leave=False)
        stream = bar.disable  # no terminal: the running estimates as they come, as llama-imatrix prints them

        def progress(i, ppl):
            bar.update(1)
            bar.set_postfix_str(f"PPL {ppl:.4f}")
            if stream:
                print(f"[{i + 1}]{ppl:.4f},", end="", flush=True)

        try:
            running = collect(model, tokens, n_ctx, n_chunks, bool(tok.add_bos), tok.bos_id, col, progress)
        finally:
            bar.close()
        if not stream:
            print("".join(f"[{i + 1}]{p:.4f}," for i, p in enumerate(running)), end="")
        print()
        print(f"Final estimate: PPL = {running[-1]:.4f}")
        col.datasets.append(dataset if dataset is not None else "")
        result.update(tokens=len(running) * n_ctx, running=running, ppl=running[-1])
    result["seconds"] = time.perf_counter() - t0
    result["entries"] = col.write(output)
    result["chunks"] = col.chunk_count
    return result
