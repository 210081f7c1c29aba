"""CPU inference over a GGUF: the run-state and the forward pass of each family (config.py reads the
hyper-parameters, weights.py the matrices).

    m = Model.load("model.gguf", n_ctx=None, n_threads=None, kv_type="f16")
    m.logits(tokens) -> float32[len(tokens), n_vocab]   a fresh sequence, every position
    m.eval(tokens)   -> float32[n_vocab]                appends to the KV cache, last token's logits
    m.reset(); m.truncate(n); m.n_past; m.n_ctx; m.n_vocab; m.gguf; m.tokenizer

The file is read into memory when it fits (fits_in_memory: huge pages), else mapped; each matrix is a
view of its bytes and the kernels (ggufq.kernels.dot_*) read its blocks in place. A batch of one to a
few tokens goes through the integer-dot kernels with activations quantized as llama.cpp does; a larger
batch (prompt, perplexity) through the integer GEMM (kernels/gemm_q8.py) a tile of unpacked rows at a
time, or BLAS on dequantized tiles for formats without an unpacker, the activations rounded the same
way. In the fast arithmetic a batch runs as one compiled call (batch.py), a token as another (decode.py);
the Python loop over layers below (_forward, _block) is the same forward for the other cases (exact mode,
llama.cpp's arithmetic, float weights in a large batch, an importance matrix being collected) and the
reference the compiled steps are tested against. Every buffer (activations, scratch, KV cache) is
allocated once, in RunState, in lazily mapped pages.
"""
from __future__ import annotations

import gc
import os

from ggufq.runtime.threads import configure_runtime_threads

configure_runtime_threads()  # before libgomp loads: the runtime's workers sleep between regions

# Importing numba and loading its registry (below, through ops) makes some 300k objects that live as long
# as the process. The collector's passes over them were 0.07 s of this import and 0.06 s of the first
# prompt (SmolLM2, an EPYC VM): a seventh of a first token. So no collection while importing, and what
# the import made is then frozen out of later passes (gc.freeze: it is never freed anyway).
_collecting = gc.isenabled()
gc.disable()

import numba  # noqa: E402
import numpy as np  # noqa: E402

from ggufq.errors import GGUFQError  # noqa: E402
from ggufq.files.gguf_reader import GGUFFile  # noqa: E402
from ggufq.kernels import gemm_q8  # noqa: E402
from ggufq.kernels.dot_common import FAKE_QUANT, Activations, lazy_zeros  # noqa: E402
from ggufq.runtime import ops  # noqa: E402
from ggufq.runtime.config import Config  # noqa: E402
from ggufq.runtime.threads import set_threads, threads_run_together  # noqa: E402
from ggufq.runtime.weights import Linear, Weights  # noqa: E402

gc.freeze()
if _collecting:
    gc.enable()

# From this many tokens on, matrix products go through the integer GEMM (or BLAS on dequantized tiles).
# Below it they run the integer kernels with llama.cpp's numbers: 64 is where llama.cpp's own attention
# switches to its tiled kernel, so a prompt under 64 tokens gives llama.cpp's logits bit for bit (at 32-63
# tokens that cost up to a quarter of the prompt speed on Gemma 3 against BLAS; measured 150 vs 200 t/s).
BLAS_MIN_TOKENS = 64
DEFAULT_N_CTX = 4096
# How the numbers are computed (Model.load(arithmetic=...), or GGUFQ_ARITHMETIC):
#   fast            the default: the GEMM for batches of BLAS_MIN_TOKENS or more, whatever the host does best
#   llama.cpp-avx2  llama.cpp's AVX2 build operation for operation, on any x86-64 host: every batch in
#                   sub-batches under BLAS_MIN_TOKENS (integer kernels, per-row flash attention), float
#                   weights through tinyBLAS's lanes. Its logits do not depend on the host's instructions
#                   or BLAS, so the golden tests compare through it.
ARITHMETICS = ("fast", "llama.cpp-avx2")
# Batches under this many tokens attend with the numbers of ggml's flash attention for one query row at
# a time (ops.attend_head), as llama.cpp does below its tile of 64 query rows (GGML_FA_TILE_Q); larger
# batches take BLAS products (their numbers differ from llama.cpp's tiled kernel anyway).
FA_MAX_TOKENS = 64
# GGUFQ_DECODE_STEP=0: decode one token through the batch path (a Python loop over layers) instead of
# the compiled step of decode.py; for comparisons, the numbers are the same.
DECODE_STEP = os.environ.get('GGUFQ_DECODE_STEP', '1') != '0'
# GGUFQ_BATCH_STEP=0: batches through the Python loop over layers (Model._block) instead of the compiled
# batch step of batch.py; for comparisons (the same numbers but for the attention of long batches)
BATCH_STEP = os.environ.get('GGUFQ_BATCH_STEP', '1') != '0'


def fits_in_memory(path) -> bool:
    """Whether Model.load reads the file into memory: it is at most half of MemAvailable, and GGUFQ_MMAP
    is not 1."""
    if os.environ.get("GGUFQ_MMAP") == "1":
        return False
    try:
        size = os.path.getsize(path)
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return False
    return size <= avail // 2


# ==================================================================================================
# Run state: every buffer, allocated once
# ==================================================================================================


class RunState:
    def __init__(self, c: Config, w: Weights, n_ctx: int, n_batch: int, kv_type: str, exact: bool = False,
                 llama_cpp: bool = False):
        B, d, hd = n_batch, c.n_embd, c.head_dim
        self.llama_cpp = llama_cpp   # the llama.cpp-avx2 arithmetic: float weights through their lanes
        self.collector = None        # an imatrix.ImatrixCollector while one is collecting
        # exact: float32 activations everywhere (every product through the dequantized-tile path), a
        # reference for the tests; the default rounds activations to 8 bits as llama.cpp does.
        self.exact = exact
        self.blas_min = 1 if exact else BLAS_MIN_TOKENS
        self.x = lazy_zeros((B, d), np.float32)               # residual stream
        self.xb = lazy_zeros((B, d), np.float32)              # normed input of a sub-layer
        self.xb2 = lazy_zeros((B, d), np.float32)             # a sub-layer's output
        self.q = lazy_zeros((B, c.n_head * hd), np.float32)
        self.k = lazy_zeros((B, c.n_kv * hd), np.float32)
        self.v = lazy_zeros((B, c.n_kv * hd), np.float32)
        self.att_out = lazy_zeros((B, c.n_head * hd), np.float32)
        self.hg = lazy_zeros((B, c.n_ff), np.float32)         # FFN gate, then gate * up
        self.hu = lazy_zeros((B, c.n_ff), np.float32)         # FFN up
        self.att = lazy_zeros((FA_MAX_TOKENS * c.n_head, 3 * hd + 32), np.float32)  # attention scratch
        self.logits = lazy_zeros((1, c.n_vocab), np.float32)
        kv_dtype = {"f16": np.float16, "f32": np.float32}[kv_type]
        self.kc = lazy_zeros((c.n_layer, n_ctx, c.n_kv * hd), kv_dtype)  # KV cache
        self.vc = lazy_zeros((c.n_layer, n_ctx, c.n_kv * hd), kv_dtype)
        # the kernels read fp16 as its bits
        self.kc_k = self.kc.view(np.uint16) if kv_type == "f16" else self.kc
        self.vc_k = self.vc.view(np.uint16) if kv_type == "f16" else self.vc
        # quantized activations, one buffer per (kind, width)
        self.acts = {}
        self.fq = {}
        self.gemm_acts = {}     # batches for the integer GEMM, one per width
        tile, tile_rows = 1, 1
        gemm_rows = {}          # (width, block) -> the most rows a matrix of it has
        big = B >= self.blas_min
        for lin in w.linears():
            key = (lin.act, lin.k)
            if key not in self.acts:
                self.acts[key] = Activations(lin.act, min(B, BLAS_MIN_TOKENS), lin.k)
            if not big:
                continue
            if lin.gemm and not exact:
                if key not in self.gemm_acts:
                    self.gemm_acts[key] = gemm_q8.GemmActs(B, lin.k, 256 if lin.act == "q8_k" else 32)
                tk = (lin.k, lin.dot.unpack_block)
                gemm_rows[tk] = max(lin.rows, gemm_rows.get(tk, 0))
                continue
            if key not in self.fq and not exact and lin.act != "f32":
                self.fq[key] = lazy_zeros((B, lin.k), np.float32)
            tile = max(tile, lin.tile_rows * lin.k)
            tile_rows = max(tile_rows, lin.tile_rows)
        # the GEMM's unpacked weight tiles, one per (width, block)
        self.gemm_tiles = {tk: gemm_q8.Tile(*tk, rows) for tk, rows in gemm_rows.items()}
        self.tile = lazy_zeros(tile, np.float32)              # dequantized weight rows (BLAS path)
        self.tile_out = lazy_zeros(B * tile_rows, np.float32)


class Input:
    """One activation matrix x[T, k] prepared lazily for each kind of kernel that reads it."""

    __slots__ = ("x", "rs", "forms")

    def __init__(self, x: np.ndarray, rs: RunState):
        self.x, self.rs, self.forms = x, rs, {}

    def gemm(self, kind: str) -> gemm_q8.GemmActs:
        """x quantized for the integer GEMM as the kernels of activation form `kind` round it."""
        f = self.forms.get(("gemm", kind))
        if f is None:
            f = self.forms[("gemm", kind)] = self.rs.gemm_acts[(kind, self.x.shape[1])].set(self.x)
        return f

    def get(self, kind: str):
        f = self.forms.get(kind)
        if f is None:
            T, k = self.x.shape
            if T < self.rs.blas_min:
                f = self.rs.acts[(kind, k)].set(self.x)
            elif kind == "f32" or self.rs.exact:
                f = self.x
            else:
                f = self.rs.fq[(kind, k)][:T]
                FAKE_QUANT[kind](self.x, f)
            self.forms[kind] = f
        return f


def matmul(lin: Linear, inp: Input, out: np.ndarray) -> None:
    """out[T, rows] = inp[T, k] @ W.T"""
    T = inp.x.shape[0]
    col = inp.rs.collector
    if col is not None and col.wants(lin.name):  # ggufq imatrix: the float activations entering W
        col.add(lin.name, inp.x)
    if T >= inp.rs.blas_min and lin.gemm and not inp.rs.exact:
        tile = inp.rs.gemm_tiles[(lin.k, lin.dot.unpack_block)]
        tile.multiply(lin.dot.unpack, lin.w, inp.gemm(lin.act), T, out)
        return
    a = inp.get(lin.act)
    if T < inp.rs.blas_min:
        mm = lin.dot.matmul_llama_cpp if inp.rs.llama_cpp and lin.dot.matmul_llama_cpp else lin.dot.matmul
        mm(lin.w, a.xf, a.xq, a.xd, a.xs, out)
        return
    rs = inp.rs
    for r0 in range(0, lin.rows, lin.tile_rows):
        r1 = min(lin.rows, r0 + lin.tile_rows)
        n = r1 - r0
        tile = rs.tile[:n * lin.k].reshape(n, lin.k)
        lin.dot.dequant(lin.w, r0, r1, tile)
        if n == lin.rows:
            np.matmul(a, tile.T, out=out)
        else:
            tmp = rs.tile_out[:T * n].reshape(T, n)
            np.matmul(a, tile.T, out=tmp)
            out[:, r0:r1] = tmp


# ==================================================================================================
# The model
# ==================================================================================================


class Model:
    def __init__(self, g: GGUFFile, n_ctx: int | None = None, n_threads: int | None = None,
                 kv_type: str = "f16", n_batch: int = 512, exact: bool = False, decode_step: bool = True,
                 arithmetic: str | None = None):
        if kv_type not in ("f16", "f32"):
            raise GGUFQError(f"kv_type must be f16 or f32, not {kv_type!r}")
        self.arithmetic = arithmetic or os.environ.get("GGUFQ_ARITHMETIC") or "fast"
        if self.arithmetic not in ARITHMETICS:
            raise GGUFQError(f"arithmetic must be one of {', '.join(ARITHMETICS)}, not {self.arithmetic!r}")
        llama_cpp = self.arithmetic == "llama.cpp-avx2"
        self.gguf = g
        self.config = c = Config.from_gguf(g)
        if n_ctx is None or n_ctx <= 0:
            n_ctx = min(c.n_ctx_train, DEFAULT_N_CTX)
        if n_ctx > c.n_ctx_train:
            raise GGUFQError(f"context {n_ctx} exceeds the model's training context of {c.n_ctx_train}")
        # without an explicit count, the threads follow the machine's load (threads.LoadAwareThreads), up
        # to every core (numba's count is per process: an earlier model may have lowered it); llama.cpp's
        # arithmetic keeps the count fixed, every core by default: its split attention depends on it
        from ggufq.runtime.threads import LoadAwareThreads
        all_cores = numba.config.NUMBA_NUM_THREADS
        if n_threads or llama_cpp:
            set_threads(n_threads or all_cores)
        self._threads = None if (n_threads or llama_cpp) else LoadAwareThreads(all_cores)
        self.n_ctx = n_ctx
        self.n_batch = max(1, min(n_batch, n_ctx, BLAS_MIN_TOKENS - 1 if llama_cpp else n_batch))
        self.weights = Weights(g, c)
        self.rs = RunState(c, self.weights, n_ctx, self.n_batch, kv_type, exact, llama_cpp)
        self.n_past = 0
        self._tokenizer = None
        # RoPE tables per distinct (base, scale): [n_ctx, n_rot / 2]
        ff = self.weights.rope_freqs
        self.rope_global = ops.rope_table(n_ctx, c.n_rot, c.rope_base, c.rope_freq_scale, ff)
        self.rope_local = (ops.rope_table(n_ctx, c.n_rot, c.rope_base_swa, 1.0, ff)
                           if c.swa_layers else self.rope_global)
        self._step = None      # the compiled one-token forward (decode.py), made on first use
        self._batch = None     # the compiled batch forward (batch.py), made on first use
        self._batch_rows = False
        # the decode step's float rows are fastmath loops: in llama.cpp-avx2 arithmetic, float weights
        # take the batch path's lane kernels instead
        floats = llama_cpp and any(lin.dot.act == "f32" and lin.dot.matmul_llama_cpp
                                   for lin in self.weights.linears())
        self._step_ok = None if (decode_step and DECODE_STEP and not exact and not floats) else False

    @classmethod
    def load(cls, path, n_ctx: int | None = None, n_threads: int | None = None, kv_type: str = "f16",
             n_batch: int = 512, exact: bool = False, decode_step: bool = True,
             arithmetic: str | None = None, in_memory: bool | None = None) -> "Model":
        """Open a GGUF file. exact=True keeps activations in float32 (slower; a reference for tests);
        decode_step=False runs one-token evals through the batch path (same numbers, slower);
        arithmetic: "fast" (default) or "llama.cpp-avx2" (see ARITHMETICS; default $GGUFQ_ARITHMETIC);
        in_memory: read the file into memory rather than map it (GGUFFile), by default when it takes at
        most half of the memory available (a larger one stays mapped: the kernel can page it) and
        GGUFQ_MMAP is not 1."""
        if in_memory is None:
            in_memory = fits_in_memory(path)
        return cls(GGUFFile(path, in_memory=in_memory), n_ctx=n_ctx, n_threads=n_threads, kv_type=kv_type,
                   n_batch=n_batch, exact=exact, decode_step=decode_step, arithmetic=arithmetic)

    # ---- public API ------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run the kernels a chat or a completion will use (a short prompt, one decode step) and forget
        them: compiling or loading them from numba's cache then happens here, not inside a timed prompt.
        Says on stderr when kernels are compiled for this CPU (ggufq.jit)."""
        from ggufq.runtime.jit import announce, runtime_modules
        announce("runtime", runtime_modules())
        self.eval([0, 1])
        self.eval([2])
        self.reset()

    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from ggufq.text.tokenizer import Tokenizer
            self._tokenizer = Tokenizer.from_gguf(self.gguf)
        return self._tokenizer

    def reset(self) -> None:
        self.n_past = 0

    def truncate(self, n: int) -> None:
        """Forget the KV entries past position n (keep a shared prefix)."""
        if not 0 <= n <= self.n_past:
            raise ValueError(f"cannot truncate to {n}: the cache holds {self.n_past} positions")
        self.n_past = n

    def eval(self, tokens) -> np.ndarray:
        """Append tokens to the sequence; the last one's logits, float32[n_vocab] (a fresh array)."""
        tokens = self._check(tokens)
        self._follow_load()
        if len(tokens) == 1 and self._use_step():
            return self._decode_one(tokens)
        h = None
        for s in range(0, len(tokens), self.n_batch):
            h = self._forward(tokens[s:s + self.n_batch])
        out = np.zeros((1, self.n_vocab), np.float32)
        self._project(h[-1:], out)
        return out[0]

    def logits(self, tokens) -> np.ndarray:
        """A fresh sequence; float32[len(tokens), n_vocab], the logits after every position."""
        tokens = self._check(tokens, fresh=True)
        self._follow_load()
        self.reset()
        out = np.zeros((len(tokens), self.n_vocab), np.float32)
        for s in range(0, len(tokens), self.n_batch):
            h = self._forward(tokens[s:s + self.n_batch])
            self._project(h, out[s:s + len(h)])
        return out

    def generate(self, prompt: str, max_tokens: int = 128, **sampling):
        """Text pieces of a continuation, as they are decoded (ggufq.generate.generate)."""
        from ggufq.text.generate import generate
        return generate(self, prompt, max_tokens, **sampling)

    def chat(self, messages: list[dict], max_tokens: int = -1, **sampling):
        """Text pieces of the assistant's answer to `messages` under the model's chat template."""
        from ggufq.text.generate import chat
        return chat(self, messages, max_tokens, **sampling)

    def nll(self, tokens, first: int, rows_per_pass: int = BLAS_MIN_TOKENS, on_logits=None) -> np.ndarray:
        """A fresh sequence; -log p(tokens[i+1] | tokens[..i]) for i = first .. len-2 (float64).
        `on_logits(logits[m, n_vocab])`, if given, sees every scored row on the way (a KL-divergence base)."""
        tokens = self._check(tokens, fresh=True)
        out = np.zeros(max(0, len(tokens) - 1 - first), np.float64)
        lp = np.zeros(rows_per_pass, np.float64)
        for i0, logits in self.scored_logits(tokens, first, rows_per_pass):
            m = len(logits)
            ops.log_softmax_at(logits, tokens[i0 + 1:i0 + 1 + m], lp[:m])
            out[i0 - first:i0 - first + m] = -lp[:m]
            if on_logits is not None:
                on_logits(logits)
        return out

    def scored_logits(self, tokens, first: int, rows_per_pass: int = BLAS_MIN_TOKENS):
        """A fresh sequence; yields (i, logits[m, n_vocab]) for positions i .. i+m-1, from `first` to len-2
        (the positions whose next token is scored), a few rows at a time: never the whole [n, n_vocab]
        matrix (Gemma's 262k vocabulary makes that 0.5 GB at 512 tokens). The buffer is reused. Passes
        of BLAS_MIN_TOKENS rows take the BLAS path (the output matrix is a model's largest)."""
        tokens = self._check(tokens, fresh=True)
        self._follow_load()
        self.reset()
        n = len(tokens)
        logits = np.zeros((rows_per_pass, self.n_vocab), np.float32)
        for s in range(0, n, self.n_batch):
            h = self._forward(tokens[s:s + self.n_batch])
            for i0 in range(max(s, first), min(s + len(h), n - 1), rows_per_pass):
                i1 = min(i0 + rows_per_pass, s + len(h), n - 1)
                self._project(h[i0 - s:i1 - s], logits[:i1 - i0])
                yield i0, logits[:i1 - i0]

    # ---- internals -------------------------------------------------------------------------------
    def _check(self, tokens, fresh: bool = False) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(tokens) == 0:
            raise ValueError("no tokens")
        start = 0 if fresh else self.n_past
        if start + len(tokens) > self.n_ctx:
            raise GGUFQError(f"context full: {start} + {len(tokens)} tokens exceed n_ctx {self.n_ctx}")
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError(f"token id out of range 0..{self.n_vocab - 1}")
        return tokens

    def _follow_load(self) -> None:
        if self._threads is not None:
            n = self._threads.pick()
            if n != numba.get_num_threads():
                set_threads(n)

    def _use_step(self) -> bool:
        if self._step_ok is None:
            from ggufq.runtime.decode import DecodeStep
            self._step_ok = DecodeStep.supported(self) and threads_run_together()
            if self._step_ok:
                self._step = DecodeStep(self)
        return bool(self._step_ok)

    def _use_batch_step(self, small: bool) -> bool:
        """Whether a batch runs as one compiled call (batch.BatchStep): the fast arithmetic, no imatrix
        collecting (it reads each product's input in Python), every product through a row kernel (small
        batches) or the GEMM, and threads that run together (the step's barrier)."""
        if not BATCH_STEP or self.rs.exact or self.rs.llama_cpp or self.rs.collector is not None:
            return False
        if self._batch is None:
            from ggufq.runtime.batch import BatchStep
            from ggufq.runtime.decode import DecodeStep
            self._batch = BatchStep(self)
            self._batch_rows = DecodeStep.supported(self)
        if small and not self._batch_rows:
            return False
        return self._batch.supported(small) and threads_run_together()

    def _decode_one(self, tokens: np.ndarray) -> np.ndarray:
        """One token through decode.DecodeStep: the same numbers as _forward + _project."""
        self._embed(tokens, self.rs.x[:1])
        out = self._step.run(self.n_past, numba.get_num_threads()).copy()
        self.n_past += 1
        self._softcap(out)
        return out[0]

    def _project(self, h: np.ndarray, out: np.ndarray) -> None:
        """logits = output(h) (h already normed), with gemma's soft-capping."""
        matmul(self.weights.output, Input(np.ascontiguousarray(h), self.rs), out)
        self._softcap(out)

    def _softcap(self, logits: np.ndarray) -> None:
        cap = self.config.logit_softcap
        if cap:
            np.tanh(logits / cap, out=logits)
            logits *= cap

    def _embed(self, tokens: np.ndarray, x: np.ndarray) -> None:
        e = self.weights.token_embd
        if len(tokens) == 1:
            e.dot.dequant(e.w, int(tokens[0]), int(tokens[0]) + 1, x)
        else:  # the tokens' rows gathered, then one parallel call (a call per token cost ~50 us each)
            e.dot.dequant(np.take(e.w, np.asarray(tokens, np.int64), axis=0), 0, len(tokens), x)
        if self.config.embd_scale != 1.0:
            ops.scale_rows(x, np.float32(self.config.embd_scale))

    def _forward(self, tokens: np.ndarray) -> np.ndarray:
        """Run tokens (at most n_batch) at positions n_past..; the final-normed hidden states [T, d]."""
        c, w, rs = self.config, self.weights, self.rs
        T = len(tokens)
        x = rs.x[:T]
        self._embed(tokens, x)
        small = T < rs.blas_min
        if self._use_batch_step(small):
            self._batch.run(self.n_past, T, small, numba.get_num_threads())
        else:
            for il in range(c.n_layer):
                self._block(il, T)
            ops.for_tokens(T).rmsnorm(x, w.output_norm, np.float32(c.eps), rs.xb[:T])
        self.n_past += T
        return rs.xb[:T]

    def _attention(self, il: int, T: int, q, k, v, out) -> None:
        """Rotate q and k, store k and v in the cache, attend over the cache."""
        c, rs, p0, op = self.config, self.rs, self.n_past, ops.for_tokens(T)
        swa = c.is_swa(il)
        cos, sin = self.rope_local if swa else self.rope_global
        op.rope(q, c.n_head, c.head_dim, c.n_rot, p0, cos, sin, c.neox)
        op.rope(k, c.n_kv, c.head_dim, c.n_rot, p0, cos, sin, c.neox)
        rs.kc[il, p0:p0 + T] = k
        rs.vc[il, p0:p0 + T] = v
        scale = c.attn_scale
        if c.scale_q:
            op.scale_rows(q, np.float32(scale))
            scale = 1.0
        window = c.sliding_window if swa else 0
        if T < FA_MAX_TOKENS:
            # llama.cpp splits a single token's attention over its threads past 256 cells
            chunk = ops.fa_chunk(rs.kc.shape[1], window, p0, T, numba.get_num_threads())
            ops.attention(q, rs.kc_k[il], rs.vc_k[il], p0, c.n_head, c.n_kv, c.head_dim, window,
                          np.float32(scale), out, rs.att, chunk)
        else:
            ops.attention_blas(q, rs.kc[il], rs.vc[il], p0, c.n_head, c.n_kv, c.head_dim, window,
                               scale, out)

    # ---- one block: llama, qwen2, qwen3, gemma3 --------------------------------------------------
    def _block(self, il: int, T: int) -> None:
        """x = x + [PostNorm](Attention(RMSNorm(x))); x = x + [PostNorm](FFN(RMSNorm(x))), where the FFN is
        SwiGLU (llama) or GeGLU (gemma3). qwen2 adds biases to q, k, v; qwen3 and gemma3 RMS-normalize each
        head of q and k before RoPE; gemma3 norms each sub-layer's output too (Config.post_norms) and
        alternates local (sliding window) and global layers (in _attention)."""
        c, L, rs = self.config, self.weights.layers[il], self.rs
        op = ops.for_tokens(T)  # the element-wise ops, their rows in parallel for a batch
        eps = np.float32(c.eps)
        x, xb, xb2 = rs.x[:T], rs.xb[:T], rs.xb2[:T]
        q, k, v, att = rs.q[:T], rs.k[:T], rs.v[:T], rs.att_out[:T]

        op.rmsnorm(x, L.attn_norm, eps, xb)
        inp = Input(xb, rs)
        matmul(L.wq, inp, q)
        matmul(L.wk, inp, k)
        matmul(L.wv, inp, v)
        if L.bq is not None:
            op.add_bias(q, L.bq)
            op.add_bias(k, L.bk)
            op.add_bias(v, L.bv)
        if L.q_norm is not None:
            hd = c.head_dim
            op.rmsnorm(q.reshape(T * c.n_head, hd), L.q_norm, eps, q.reshape(T * c.n_head, hd))
            op.rmsnorm(k.reshape(T * c.n_kv, hd), L.k_norm, eps, k.reshape(T * c.n_kv, hd))
        self._attention(il, T, q, k, v, att)
        matmul(L.wo, Input(att, rs), xb2)
        if c.post_norms:
            op.rmsnorm(xb2, L.post_attn_norm, eps, xb2)

        op.add_rmsnorm(x, xb2, L.ffn_norm, eps, xb)
        inp = Input(xb, rs)
        hg, hu = rs.hg[:T], rs.hu[:T]
        matmul(L.w_gate, inp, hg)
        matmul(L.w_up, inp, hu)
        if c.gelu:
            op.gelu_mul(hg, hu)
        else:
            op.silu_mul(hg, hu)
        matmul(L.w_down, Input(hg, rs), xb2)
        if c.post_norms:
            op.rmsnorm(xb2, L.post_ffn_norm, eps, xb2)
        x += xb2
