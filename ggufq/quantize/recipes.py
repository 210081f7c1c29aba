"""Recipes: which type each tensor gets, as llama-quantize decides it (`src/llama-quant.cpp`).

A recipe maps (tensor name, shape, layer counters, model facts, options) to a GGML type. The llama.cpp
mixes (Q4_K_M, Q5_K_M, ...) are stateful in one way only: attn_v and ffn_down count their occurrences in
the order the tensors are processed, which `plan()` replays, so the same function answers for the whole
file. `--tensor-type REGEX=TYPE`, `--output-tensor-type`, `--token-embedding-type` and `--pure` behave as
llama-quantize's options of the same names.

`quantize_tensor(name, array, qtype, imatrix)` is the one quantizing entry point shared with the
converter, so `ggufq convert --outtype q8_0` and `ggufq quantize` produce the same bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from gguf import GGMLQuantizationType as GT, LlamaFileType as FT

from ggufq.errors import GGUFQError
from ggufq.files.ggml_types import block_geometry

# llama-quantize's type names -> (file type written to general.file_type, default tensor type)
FILE_TYPES: dict[str, tuple[FT, GT]] = {
    "Q4_0": (FT.MOSTLY_Q4_0, GT.Q4_0),
    "Q4_1": (FT.MOSTLY_Q4_1, GT.Q4_1),
    "Q5_0": (FT.MOSTLY_Q5_0, GT.Q5_0),
    "Q5_1": (FT.MOSTLY_Q5_1, GT.Q5_1),
    "Q8_0": (FT.MOSTLY_Q8_0, GT.Q8_0),
    "Q2_K": (FT.MOSTLY_Q2_K, GT.Q2_K),
    "Q3_K": (FT.MOSTLY_Q3_K_M, GT.Q3_K),  # alias, as in llama-quantize
    "Q3_K_S": (FT.MOSTLY_Q3_K_S, GT.Q3_K),
    "Q3_K_M": (FT.MOSTLY_Q3_K_M, GT.Q3_K),
    "Q3_K_L": (FT.MOSTLY_Q3_K_L, GT.Q3_K),
    "Q4_K": (FT.MOSTLY_Q4_K_M, GT.Q4_K),  # alias, as in llama-quantize
    "Q4_K_S": (FT.MOSTLY_Q4_K_S, GT.Q4_K),
    "Q4_K_M": (FT.MOSTLY_Q4_K_M, GT.Q4_K),
    "Q5_K": (FT.MOSTLY_Q5_K_M, GT.Q5_K),  # alias
    "Q5_K_S": (FT.MOSTLY_Q5_K_S, GT.Q5_K),
    "Q5_K_M": (FT.MOSTLY_Q5_K_M, GT.Q5_K),
    "Q6_K": (FT.MOSTLY_Q6_K, GT.Q6_K),
    "IQ4_NL": (FT.MOSTLY_IQ4_NL, GT.IQ4_NL),
    "IQ4_XS": (FT.MOSTLY_IQ4_XS, GT.IQ4_XS),
    "F16": (FT.MOSTLY_F16, GT.F16),
    "BF16": (FT.MOSTLY_BF16, GT.BF16),
    "F32": (FT.ALL_F32, GT.F32),
}

UNQUANTIZED = (GT.F32, GT.F16, GT.BF16)


def parse_file_type(name: str) -> tuple[str, FT, GT]:
    key = name.upper()
    if key not in FILE_TYPES:
        raise GGUFQError(f"unknown quantization type {name!r}; choose one of {', '.join(FILE_TYPES)}")
    ft, gt = FILE_TYPES[key]
    return key, ft, gt


def parse_tensor_type(name: str) -> GT:
    """A ggml type name that ggufq can quantize to, case-insensitive (llama-quantize's parse_ggml_type).
    Checked here, when the plan is made, so that --dry-run refuses what the real run could not write."""
    from ggufq.kernels.registry import quantizable_types
    try:
        t = GT[name.upper()]
    except KeyError:
        t = None
    ok = quantizable_types()
    if t not in ok:
        known = ", ".join(x.name for x in sorted(ok))
        what = "has no quantizer in ggufq" if t is not None else "is not a tensor type"
        raise GGUFQError(f"tensor type {name!r} {what} (choose one of {known})")
    return t


def is_quantized(t: GT) -> bool:
    return t not in (GT.F32, GT.F16, GT.BF16, GT.F64, GT.I8, GT.I16, GT.I32, GT.I64)


def block_size(t: GT) -> int:
    return block_geometry(t)[0]


def tensor_nbytes(qtype, shape) -> int:
    """Bytes of a tensor of `shape` (any order) stored as `qtype`."""
    block, tsize = block_geometry(qtype)
    n = 1
    for d in shape:
        n *= d
    return n // block * tsize


# ---- tensor categories (tensor_get_category) -------------------------------------------------------
OUTPUT, TOKEN_EMBD, ATTN_QKV, ATTN_KV_B, ATTN_V, ATTN_K, ATTN_Q, ATTN_OUTPUT, FFN_UP, FFN_GATE, FFN_DOWN, OTHER = (
    "output", "token_embd", "attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output",
    "ffn_up", "ffn_gate", "ffn_down", "other")


def category(name: str) -> str:
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for needle, cat in (("attn_qkv.weight", ATTN_QKV), ("attn_kv_b.weight", ATTN_KV_B),
                        ("attn_v.weight", ATTN_V), ("attn_k.weight", ATTN_K), ("attn_q.weight", ATTN_Q),
                        ("attn_output.weight", ATTN_OUTPUT), ("ffn_up", FFN_UP), ("ffn_gate", FFN_GATE),
                        ("ffn_down", FFN_DOWN)):
        if needle in name:
            return cat
    return OTHER


def is_attn_v_like(cat: str) -> bool:
    return cat in (ATTN_V, ATTN_QKV, ATTN_KV_B)


_NOT_QUANTIZED_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")


def allows_quantization(name: str, n_dims: int, quantize_output: bool = True) -> bool:
    """tensor_allows_quantization: 2-D+ weights, not norms, not the small special tensors."""
    if n_dims < 2 or not name.endswith("weight"):
        return False
    if not quantize_output and name == "output.weight":
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    return not any(s in name for s in _NOT_QUANTIZED_SUBSTRINGS)


# ---- model facts and options ------------------------------------------------------------------------
@dataclass
class ModelFacts:
    arch: str
    n_layer: int
    n_expert: int = 0
    n_head: int = 0
    n_head_kv: int = 0

    @property
    def n_gqa(self) -> int:  # llama_hparams::n_gqa
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:  # llm_type 70B: llama with 80 layers and grouped-query attention
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv

    @classmethod
    def from_gguf(cls, g) -> "ModelFacts":
        arch = g.get("general.architecture", "")

        def first(v):
            if v is None:
                return 0
            if hasattr(v, "__len__"):
                return int(v[0]) if len(v) else 0
            return int(v)
        return cls(arch=arch, n_layer=first(g.get(f"{arch}.block_count")),
                   n_expert=first(g.get(f"{arch}.expert_count")),
                   n_head=first(g.get(f"{arch}.attention.head_count")),
                   n_head_kv=first(g.get(f"{arch}.attention.head_count_kv")))


@dataclass
class Options:
    ftype_name: str = "Q8_0"
    output_tensor_type: GT | None = None
    token_embedding_type: GT | None = None
    tensor_types: list[tuple[str, GT]] = field(default_factory=list)  # (regex, type), first match wins
    pure: bool = False
    quantize_output: bool = True
    has_imatrix: bool = False

    def __post_init__(self):
        self.ftype_name, self.ftype, self.default_type = parse_file_type(self.ftype_name)
        self._patterns = [(re.compile(p), t) for p, t in self.tensor_types]


@dataclass
class TensorChoice:
    name: str
    shape: tuple[int, ...]   # GGML order, shape[0] is the row
    src_type: GT
    dst_type: GT
    reason: str = ""

    @property
    def quantize(self) -> bool:
        return self.src_type != self.dst_type


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


class _State:
    def __init__(self, names: list[str], facts: ModelFacts):
        cats = [category(n) for n in names]
        self.n_attention_wv = sum(is_attn_v_like(c) for c in cats)
        self.has_tied_embeddings = OUTPUT not in cats
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = facts.n_layer
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_fallback = 0


_BLK = re.compile(r"blk\.\s*([+-]?\d+)")  # sscanf(name, "blk.%d.", &layer)


def _layer_info(i_counter: int, n_layer: int, name: str, facts: ModelFacts) -> tuple[int, int]:
    if max(1, facts.n_expert) > 1:
        m = _BLK.match(name)
        if not m:
            raise GGUFQError(f"failed to determine layer for tensor {name}")
        return int(m.group(1)), n_layer
    return i_counter, n_layer


def _mix_type(st: _State, new_type: GT, name: str, shape, opts: Options, facts: ModelFacts, cat: str) -> GT:
    """llama_tensor_get_type_impl for the file types ggufq supports."""
    ft = opts.ftype
    if cat == OUTPUT or (st.has_tied_embeddings and cat == TOKEN_EMBD):
        if opts.output_tensor_type is not None:
            return opts.output_tensor_type
        nx = shape[0]
        if facts.arch == "falcon" or nx % block_size(new_type) != 0:
            return GT.Q8_0
        return GT.Q6_K if new_type != GT.Q8_0 else new_type
    if cat == TOKEN_EMBD:
        return opts.token_embedding_type if opts.token_embedding_type is not None else new_type
    iq4 = ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS)
    if is_attn_v_like(cat):
        if ft == FT.MOSTLY_Q2_K:
            new_type = GT.Q4_K if facts.n_gqa >= 4 else GT.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            new_type = GT.Q5_K if st.i_attention_wv < 2 else GT.Q4_K
        elif ft == FT.MOSTLY_Q3_K_L:
            new_type = GT.Q5_K
        elif iq4 and facts.n_gqa >= 4:
            new_type = GT.Q5_K
        elif ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and use_more_bits(st.i_attention_wv, st.n_attention_wv):
            new_type = GT.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and st.i_attention_wv < 4:
            new_type = GT.Q5_K
        if facts.is_70b and new_type in (GT.Q3_K, GT.Q4_K):
            new_type = GT.Q5_K
        if facts.n_expert == 8:
            new_type = GT.Q8_0
        st.i_attention_wv += 1
        return new_type
    if cat == ATTN_K:
        return GT.Q8_0 if facts.n_expert == 8 else new_type
    if cat == FFN_DOWN:
        i_layer, n_layer = _layer_info(st.i_ffn_down, st.n_ffn_down, name, facts)
        if ft == FT.MOSTLY_Q2_K:
            new_type = GT.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            new_type = (GT.Q5_K if i_layer < n_layer // 16 else
                        GT.Q4_K if facts.arch != "falcon" or use_more_bits(i_layer, n_layer) else GT.Q3_K)
        elif ft == FT.MOSTLY_Q3_K_L:
            new_type = GT.Q4_K if facts.arch == "falcon" else GT.Q5_K
        elif ft == FT.MOSTLY_Q4_K_M:
            if facts.arch == "falcon":
                new_type = (GT.Q6_K if i_layer < n_layer // 16 else
                            GT.Q5_K if use_more_bits(i_layer, n_layer) else GT.Q4_K)
            elif use_more_bits(i_layer, n_layer):
                new_type = GT.Q6_K
        elif iq4 and i_layer < n_layer // 8 and not opts.has_imatrix:
            new_type = GT.Q5_K
        elif ft == FT.MOSTLY_Q5_K_M and use_more_bits(i_layer, n_layer):
            new_type = GT.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and facts.arch != "falcon" and i_layer < n_layer // 8:
            new_type = GT.Q5_K
        elif ft in (FT.MOSTLY_Q4_0, FT.MOSTLY_Q5_0) and opts.has_imatrix and i_layer < n_layer // 8:
            new_type = GT.Q4_1 if ft == FT.MOSTLY_Q4_0 else GT.Q5_1
        st.i_ffn_down += 1
        return new_type
    if cat == ATTN_OUTPUT:
        if facts.arch == "falcon":
            return GT.Q4_K if ft == FT.MOSTLY_Q3_K_L else new_type
        if facts.n_expert == 8:
            moe_q5 = (FT.MOSTLY_Q2_K, FT.MOSTLY_Q3_K_S, FT.MOSTLY_Q3_K_M, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M)
            return GT.Q5_K if iq4 or ft in moe_q5 else new_type
        return {FT.MOSTLY_Q2_K: GT.Q3_K, FT.MOSTLY_Q3_K_M: GT.Q4_K, FT.MOSTLY_Q3_K_L: GT.Q5_K}.get(ft, new_type)
    if cat == FFN_GATE:
        st.i_ffn_gate += 1
    elif cat == FFN_UP:
        st.i_ffn_up += 1
    return new_type


_FALLBACK = {GT.Q2_K: GT.Q4_0, GT.Q3_K: GT.Q4_0, GT.TQ1_0: GT.Q4_0, GT.TQ2_0: GT.Q4_0,
             GT.Q4_K: GT.Q5_0, GT.Q5_K: GT.Q5_1, GT.Q6_K: GT.Q8_0,
             GT.IQ1_S: GT.IQ4_NL, GT.IQ1_M: GT.IQ4_NL, GT.IQ2_XXS: GT.IQ4_NL, GT.IQ2_XS: GT.IQ4_NL,
             GT.IQ2_S: GT.IQ4_NL, GT.IQ3_XXS: GT.IQ4_NL, GT.IQ3_S: GT.IQ4_NL, GT.IQ4_XS: GT.IQ4_NL}


def fallback_type(st: _State | None, name: str, ncols: int, target: GT) -> tuple[GT, str]:
    """tensor_type_fallback: a type whose blocks divide the row (Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0...)."""
    qk = block_size(target)
    if ncols % qk == 0:
        return target, ""
    if st is not None:
        st.n_fallback += 1
    if target in _FALLBACK:
        ret = _FALLBACK[target]
    elif qk <= 32:
        ret = target
    else:
        raise GGUFQError(f"no tensor type fallback is defined for type {target.name}")
    if ncols % block_size(ret) != 0:
        ret = GT.F16
    return ret, f"row {ncols} not divisible by {qk}: {target.name} -> {ret.name}"


def _tensor_type(st: _State, name: str, shape, src: GT, opts: Options, facts: ModelFacts) -> tuple[GT, str]:
    """llama_tensor_get_type."""
    if not allows_quantization(name, len(shape), opts.quantize_output):
        return src, "kept"
    cat = category(name)
    if opts.token_embedding_type is not None and cat == TOKEN_EMBD:
        named = name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in opts._patterns)
        if not named:
            return opts.token_embedding_type, "--token-embedding-type"
    if opts.output_tensor_type is not None and cat == OUTPUT:
        return opts.output_tensor_type, "--output-tensor-type"
    new_type = opts.default_type
    reason = "default"
    if is_quantized(new_type):
        manual = False
        for pat, qt in opts._patterns:
            if pat.search(name):
                new_type, manual, reason = qt, True, f"--tensor-type {pat.pattern}"
                break
        if not manual and not opts.pure:
            before = new_type
            new_type = _mix_type(st, new_type, name, shape, opts, facts, cat)
            if new_type != before:
                reason = f"{opts.ftype_name} mix"
        new_type, why = fallback_type(st, name, shape[0], new_type)
        reason = why or reason
    return new_type, reason


def plan(tensors: list[tuple[str, tuple[int, ...], GT]], facts: ModelFacts, opts: Options) -> list[TensorChoice]:
    """The type of every tensor, in the given order (llama-quantize's order: see `tensor_order`)."""
    st = _State([n for n, _, _ in tensors], facts)
    out = []
    for name, shape, src in tensors:
        dst, reason = _tensor_type(st, name, tuple(shape), GT(src), opts, facts)
        out.append(TensorChoice(name, tuple(shape), GT(src), dst, reason))
    return out


def tensor_order(names: list[str]) -> list[str]:
    """llama-quantize writes tensors sorted by layer (non-layer tensors first), then by name."""
    def key(n: str):
        m = _BLK.match(n)
        return (int(m.group(1)) if m else -1, n.encode())
    return sorted(names, key=key)


def format_plan(choices: list[TensorChoice]) -> str:
    lines = [f"{'tensor':<40} {'shape':>16}  {'type':<14}  why"]
    for c in choices:
        shape = "x".join(str(d) for d in c.shape)
        arrow = f"{c.src_type.name:>5} -> {c.dst_type.name:<5}" if c.quantize else f"{c.src_type.name:>5}    {'':<5}"
        lines.append(f"{c.name:<40} {shape:>16}  {arrow}  {c.reason}")
    return "\n".join(lines)


def recipe_json(choices: list[TensorChoice], opts: Options, name: str | None = None) -> str:
    """The plan as a reviewable JSON recipe: {"file_type": ..., "tensors": {name: type}} in file order."""
    import json
    return json.dumps({"file_type": name or opts.ftype_name,
                       "tensors": {c.name: c.dst_type.name for c in choices}}, indent=1)


def load_recipe(path: str) -> dict[str, GT]:
    import json
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise GGUFQError(f"{path}: cannot read recipe: {e}") from None
    tensors = doc.get("tensors") if isinstance(doc, dict) else None
    if not isinstance(tensors, dict):
        raise GGUFQError(f'{path}: a recipe is {{"tensors": {{NAME: TYPE, ...}}}}')
    return {str(k): parse_tensor_type(str(v)) for k, v in tensors.items()}


def apply_recipe(choices: list[TensorChoice], recipe: dict[str, GT]) -> list[TensorChoice]:
    names = {c.name for c in choices}
    unknown = sorted(set(recipe) - names)
    if unknown:
        raise GGUFQError(f"recipe names tensors not in the model: {', '.join(unknown[:5])}")
    out = []
    for c in choices:
        t = recipe.get(c.name)
        if t is not None and t != c.dst_type:
            if c.shape[0] % block_size(t):
                raise GGUFQError(f"recipe: {c.name} has rows of {c.shape[0]}, not a multiple of {t.name}'s "
                                 f"block of {block_size(t)}")
            c = TensorChoice(c.name, c.shape, c.src_type, t, "recipe")
        out.append(c)
    return out


# ---- the shared quantizing entry point ----------------------------------------------------------------
def quantize_tensor(name: str, array: np.ndarray, qtype, imatrix: np.ndarray | None = None,
                    check_finite: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """Quantize a float tensor (numpy order, last axis = rows of ne0) to `qtype`; returns uint8 bytes of
    shape [..., row_bytes] (or the F32/F16/BF16 array for unquantized types). NaN/Inf raise GGUFQError.

    `imatrix` (ne0 values, or ne0 * n_expert for 3-D expert tensors) selects llama.cpp's weighted paths.
    `out`, a flat uint8 buffer, receives the bytes of a quantized type when given (QuantFormat.output_rows)."""
    from ggufq.kernels import get_format
    from ggufq.kernels.numerics import count_nonfinite

    qtype = GT(qtype)
    fmt = get_format(qtype)
    a = np.ascontiguousarray(array, dtype=np.float32)
    k = a.shape[-1]
    rows = a.reshape(-1, k)
    if check_finite and rows.size and count_nonfinite(rows):
        raise GGUFQError(f"tensor {name} contains NaN or Inf values")
    if qtype in UNQUANTIZED:
        return fmt.quantize(rows).reshape(*a.shape[:-1], -1)
    if k % fmt.block_size:
        raise GGUFQError(f"tensor {name}: row of {k} is not a multiple of {qtype.name}'s block of {fmt.block_size}")
    if imatrix is not None and getattr(fmt, "uses_imatrix", True):
        imatrix = np.asarray(imatrix, dtype=np.float32).reshape(-1)
        n_expert = a.shape[0] if a.ndim == 3 else 1
        if imatrix.size == k * n_expert and n_expert > 1:
            per = a.reshape(n_expert, -1, k)
            out = [fmt.quantize(per[e], imatrix[e * k:(e + 1) * k]) for e in range(n_expert)]
            return np.stack(out).reshape(*a.shape[:-1], -1)
        if imatrix.size != k:
            raise GGUFQError(f"imatrix size {imatrix.size} is different from tensor size {k} for {name}")
    else:
        imatrix = None
    return fmt.quantize(rows, imatrix, out).reshape(*a.shape[:-1], -1)
