"""A model's weights, read in place from the mapped GGUF: each matrix a view of the file's bytes that the
kernels (ggufq.kernels.dot_*) read as stored; norms and biases copied as float32 (a few KB each)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ggufq.errors import GGUFQError
from ggufq.kernels import gemm_q8
from ggufq.files.gguf_reader import GGUFFile
from ggufq.kernels.registry import GGMLQuantizationType, runtime_format
from ggufq.runtime.config import Config

TILE_FLOATS = 1 << 20       # dequantized weight tile for the BLAS path: 4 MiB



class Linear:
    """A weight matrix y[T, rows] = x[T, k] @ W.T, read in place from the mapped file."""

    def __init__(self, g: GGUFFile, name: str, rows: int | None = None, k: int | None = None):
        ti = g.tensors.get(name)
        if ti is None:
            raise GGUFQError(f"{g.path}: missing tensor {name}")
        fmt = runtime_format(ti.qtype)
        dot = fmt.dot if fmt is not None else None
        if dot is None:
            raise GGUFQError(f"{g.path}: tensor {name} has type {ti.qtype.name}, which the runtime does not support")
        if len(ti.shape) != 2 or (k is not None and ti.shape[0] != k) or (rows is not None and ti.shape[1] != rows):
            raise GGUFQError(f"{g.path}: tensor {name} has shape {list(ti.shape)}, expected {[k, rows]}")
        self.name, self.qtype, self.dot = name, ti.qtype, dot
        self.k, self.rows = int(ti.shape[0]), int(ti.shape[1])
        self.w = dot.weight_view(ti.data)
        self.act = dot.act
        self.tile_rows = max(1, min(self.rows, TILE_FLOATS // self.k))
        # batches multiply through the integer GEMM where the host has a kernel for the format's bytes
        self.gemm = gemm_q8.USE and dot.unpack is not None and gemm_q8.usable(dot.unpack_max)


def _vector(g: GGUFFile, name: str, n: int, required: bool = True) -> np.ndarray | None:
    """A small 1-D tensor (norm weight, bias) as float32 (copied: a few KB)."""
    ti = g.tensors.get(name)
    if ti is None:
        if required:
            raise GGUFQError(f"{g.path}: missing tensor {name}")
        return None
    if ti.n_elements != n:
        raise GGUFQError(f"{g.path}: tensor {name} has {ti.n_elements} values, expected {n}")
    fmt = runtime_format(ti.qtype)
    dot = fmt.dot if fmt is not None else None
    if dot is None or ti.qtype not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
        raise GGUFQError(f"{g.path}: tensor {name} has type {ti.qtype.name}, which the runtime does not support")
    out = np.zeros((1, n), np.float32)
    dot.dequant(dot.weight_view(ti.data).reshape(1, n), 0, 1, out)
    return out[0]


@dataclass
class Layer:
    attn_norm: np.ndarray        # [n_embd]
    wq: Linear                   # [n_head * hd, n_embd]
    wk: Linear                   # [n_kv * hd, n_embd]
    wv: Linear                   # [n_kv * hd, n_embd]
    wo: Linear                   # [n_embd, n_head * hd]
    ffn_norm: np.ndarray         # [n_embd]
    w_gate: Linear               # [n_ff, n_embd]
    w_up: Linear                 # [n_ff, n_embd]
    w_down: Linear               # [n_embd, n_ff]
    bq: np.ndarray | None = None          # qwen2: q/k/v biases
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    q_norm: np.ndarray | None = None      # qwen3, gemma3: RMS norm of each head of q and k  [hd]
    k_norm: np.ndarray | None = None
    post_attn_norm: np.ndarray | None = None  # gemma3: norms after attention and after the FFN
    post_ffn_norm: np.ndarray | None = None

    def matrices(self) -> tuple:
        """The seven matrices, in the order q, k, v, output, gate, up, down (decode.py's WQ..WDOWN)."""
        return (self.wq, self.wk, self.wv, self.wo, self.w_gate, self.w_up, self.w_down)


class Weights:
    def __init__(self, g: GGUFFile, c: Config):
        d, hd = c.n_embd, c.head_dim
        self.token_embd = Linear(g, "token_embd.weight", c.n_vocab, d)     # [n_vocab, n_embd]
        self.output_norm = _vector(g, "output_norm.weight", d)               # [n_embd]
        self.output = (Linear(g, "output.weight", c.n_vocab, d)              # [n_vocab, n_embd], tied
                       if "output.weight" in g.tensors else self.token_embd)
        rf = g.tensors.get("rope_freqs.weight")
        self.rope_freqs = _vector(g, "rope_freqs.weight", c.n_rot // 2) if rf is not None else None
        self.layers = []
        for i in range(c.n_layer):
            p = f"blk.{i}."
            opt = lambda n, size: _vector(g, p + n, size, required=False)  # noqa: E731
            self.layers.append(Layer(
                attn_norm=_vector(g, p + "attn_norm.weight", d),
                wq=Linear(g, p + "attn_q.weight", c.n_head * hd, d),
                wk=Linear(g, p + "attn_k.weight", c.n_kv * hd, d),
                wv=Linear(g, p + "attn_v.weight", c.n_kv * hd, d),
                wo=Linear(g, p + "attn_output.weight", d, c.n_head * hd),
                ffn_norm=_vector(g, p + "ffn_norm.weight", d),
                w_gate=Linear(g, p + "ffn_gate.weight", c.n_ff, d),
                w_up=Linear(g, p + "ffn_up.weight", c.n_ff, d),
                w_down=Linear(g, p + "ffn_down.weight", d, c.n_ff),
                bq=opt("attn_q.bias", c.n_head * hd), bk=opt("attn_k.bias", c.n_kv * hd),
                bv=opt("attn_v.bias", c.n_kv * hd),
                q_norm=opt("attn_q_norm.weight", hd), k_norm=opt("attn_k_norm.weight", hd),
                post_attn_norm=opt("post_attention_norm.weight", d), post_ffn_norm=opt("post_ffw_norm.weight", d),
            ))
        if c.post_norms:
            for i, L in enumerate(self.layers):
                if L.q_norm is None or L.k_norm is None or L.post_attn_norm is None or L.post_ffn_norm is None:
                    raise GGUFQError(f"{g.path}: {c.arch} layer {i} lacks its q/k or post norms")

    def linears(self):
        yield self.token_embd
        yield self.output
        for L in self.layers:
            yield from L.matrices()
