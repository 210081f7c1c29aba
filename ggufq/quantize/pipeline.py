"""Quantize a GGUF the way llama-quantize does, byte for byte: the pipeline behind `ggufq quantize` and
`ggufq convert --outtype ud-q4_k_xl`.

Same tensor order (by layer, then name), same types (ggufq/quantize/recipes.py), same metadata (every key
copied with its value type, then general.quantization_version, general.file_type and the quantize.imatrix.*
keys appended as llama-quantize appends them), same alignment. Tensors are streamed one slab of rows at a
time into a temporary file in the output folder, renamed into place when complete.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from ggufq.files.text import read_text


@dataclass
class QuantizeJob:
    """What to quantize and how: the `ggufq quantize` options, by the same names."""
    input: str
    output: str
    type: str
    imatrix: str | None = None
    tensor_type: list = field(default_factory=list)     # ["REGEX=TYPE", ...]
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    pure: bool = False
    allow_requantize: bool = False
    dry_run: bool = False
    json: bool = False
    recipe: str | None = None
    calib: str | None = None
    calib_ctx: int = 512
    target_bpw: float | None = None
    target_size: str | None = None
    save_recipe: str | None = None
    threads: int | None = None
    imatrix_name: str | None = None  # what quantize.imatrix.file records (default: the --imatrix path)

    @classmethod
    def from_args(cls, args) -> "QuantizeJob":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


UD = "UD-Q4_K_XL"


def _dynamic_plan(g, job, opts, imatrix):
    """UD-Q4_K_XL: imatrix Q4_K_M's plan with the searched (or --recipe) types; (choices, report lines)."""
    from ggufq.errors import GGUFQError
    from ggufq.quantize.recipes import apply_recipe, load_recipe

    base = build_plan(g, opts)
    if job.recipe:
        return apply_recipe(base, load_recipe(job.recipe)), []
    if imatrix is None:
        raise GGUFQError(f"{UD} needs --imatrix FILE (ggufq imatrix -m F16.gguf -f TEXT makes one)")
    text = read_text(job.calib or calibration_text_of(imatrix))
    from ggufq.quantize.dynamic import parse_size, search
    from ggufq.text.tokenizer import Tokenizer
    n_el = sum(g.tensors[c.name].n_elements for c in base)
    target = None
    if job.target_bpw is not None:
        target = int(job.target_bpw * n_el / 8)
    elif job.target_size:
        overhead = g.size - sum(t.nbytes for t in g.tensors.values())  # metadata: the vocabulary, mostly
        target = parse_size(job.target_size) - overhead
    tokens = Tokenizer.from_gguf(g).encode(text, add_special=True, parse_special=False)
    result = search(g, job.input, imatrix, job.imatrix, tokens, base, target, probe_ctx=job.calib_ctx)
    return apply_recipe(base, result.recipe), result.lines()


def calibration_text_of(imatrix) -> str:
    """The probes' text when --calib is not given: the imatrix's own calibration file, when it is still there
    (imatrix.datasets records the path it was collected from)."""
    from ggufq.errors import GGUFQError
    for path in imatrix.datasets:
        if path and os.path.isfile(path):
            return path
    recorded = f" (the imatrix records {', '.join(map(repr, imatrix.datasets))}, not a readable file)" \
        if imatrix.datasets else ""
    raise GGUFQError(f"{UD} needs --calib TEXT, the calibration text of its probes{recorded}")


def _options(job, has_imatrix: bool):
    from ggufq.errors import GGUFQError
    from ggufq.quantize.recipes import Options, parse_tensor_type

    overrides = []
    for spec in job.tensor_type:
        pat, sep, tname = spec.partition("=")
        if not sep or not pat or not tname:
            raise GGUFQError(f"--tensor-type {spec!r}: expected REGEX=TYPE")
        try:
            re.compile(pat.lower())
        except re.error as e:
            raise GGUFQError(f"--tensor-type {spec!r}: {pat!r} is not a regular expression ({e})") from None
        overrides.append((pat.lower(), parse_tensor_type(tname)))
    return Options(
        ftype_name="Q4_K_M" if job.type.upper() == UD else job.type,
        output_tensor_type=parse_tensor_type(job.output_tensor_type) if job.output_tensor_type else None,
        token_embedding_type=parse_tensor_type(job.token_embedding_type) if job.token_embedding_type else None,
        tensor_types=overrides, pure=job.pure, quantize_output=not job.leave_output_tensor,
        has_imatrix=has_imatrix)


def build_plan(g, opts, recipe_path: str | None = None):
    from ggufq.quantize.recipes import ModelFacts, apply_recipe, load_recipe, plan, tensor_order

    names = tensor_order(list(g.tensors))
    tensors = [(n, g.tensors[n].shape, g.tensors[n].qtype) for n in names]
    choices = plan(tensors, ModelFacts.from_gguf(g), opts)
    if recipe_path:
        choices = apply_recipe(choices, load_recipe(recipe_path))
    return choices


def _nbytes(qtype, shape) -> int:
    from ggufq.quantize.recipes import tensor_nbytes
    return tensor_nbytes(qtype, shape)


def _to_f32(t, rows, name, scratch):
    """Rows of tensor t (2-D [n_rows, ne0] elements, or [n_rows, row_bytes] for block formats) as float32,
    F16 ones converted into `scratch` (a reused buffer: fresh pages would cost a fault each).
    Returns (array, checked): checked means NaN/Inf were already looked for."""
    import numpy as np
    from gguf import GGMLQuantizationType as GT

    from ggufq.errors import GGUFQError
    from ggufq.kernels import get_format
    from ggufq.kernels.numerics import f16_to_f32_rows

    if t.qtype == GT.F32:
        return rows.view(np.float32), False
    if t.qtype == GT.F16:
        bits = rows.view(np.uint16)
        out = scratch[:bits.size].reshape(bits.shape)
        if f16_to_f32_rows(bits, out):
            raise GGUFQError(f"tensor {name} contains NaN or Inf values")
        return out, True
    return get_format(t.qtype).dequantize(rows), False


class RawValue(bytes):
    """A metadata value already in GGUF form (type field and value), written as it is."""


def _writer(path, arch: str):
    """A gguf GGUFWriter that writes RawValue values verbatim: metadata copied from the input is not
    decoded and packed again (a 262k-token vocabulary takes a tenth of a second to pack). gguf is imported
    lazily, so the class is made here."""
    from gguf import GGUFWriter

    class Writer(GGUFWriter):
        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if isinstance(val, RawValue) and add_vtype:
                return bytes(val)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer(path, arch)


def quantize_file(job: QuantizeJob, say=print) -> dict:
    """Quantize job.input into job.output (or, with dry_run, say the plan); returns the summary
    {"output", "bytes", "bits_per_weight", "type", "seconds", "input_bytes"}."""

    from ggufq.errors import GGUFQError
    from ggufq.files.gguf_reader import GGUFFile
    from ggufq.files.gguf_writer import check_output_file
    from ggufq.quantize.recipes import is_quantized, quantize_tensor
    from ggufq.runtime.threads import configure_batch_threads

    t_start = time.time()
    configure_batch_threads(job.threads or 0)

    imatrix = None
    if job.imatrix:
        from ggufq.files.imatrix_file import load_imatrix
        imatrix = load_imatrix(job.imatrix)

    opts = _options(job, imatrix is not None)
    if not job.dry_run:
        check_output_file(job.output, job.input)
    g = GGUFFile(job.input)
    try:
        dynamic = job.type.upper() == UD
        report = []
        if dynamic:
            choices, report = _dynamic_plan(g, job, opts, imatrix)
        else:
            choices = build_plan(g, opts, job.recipe)
        if job.save_recipe:
            from ggufq.quantize.recipes import recipe_json
            from ggufq.files.atomic import atomic_output
            with atomic_output(job.save_recipe) as tmp:
                Path(tmp).write_text(recipe_json(choices, opts, UD if dynamic else None) + "\n")
        n_elements = sum(g.tensors[c.name].n_elements for c in choices)
        size_in = sum(g.tensors[c.name].nbytes for c in choices)
        size_out = sum(_nbytes(c.dst_type, c.shape) for c in choices)
        if job.dry_run:
            from ggufq.quantize.recipes import format_plan, recipe_json
            if job.json:
                say(recipe_json(choices, opts))
                return {"output": None}
            say(format_plan(choices))
            for line in report:
                say(line)
            say(f"{job.input}: {size_in / 2**20:.2f} MiB -> {size_out / 2**20:.2f} MiB as {opts.ftype_name} "
                f"({8 * size_out / max(n_elements, 1):.2f} bits per weight)")
            return {"output": None}
        for c in choices:
            if c.quantize and is_quantized(c.src_type) and not job.allow_requantize:
                raise GGUFQError(f"tensor {c.name} is already {c.src_type.name}: requantizing is disabled "
                                 f"(use --allow-requantize)")
        out_path = Path(job.output)
        from ggufq.runtime.jit import announce, quantizer_modules
        announce("quantizer", quantizer_modules())

        from ggufq.files.atomic import atomic_output
        with atomic_output(out_path, make_folders=False) as tmp:
            w = _header(tmp, g, choices, opts, imatrix, job, dynamic)
            try:
                try:
                    w.open_output_file()
                except OSError as e:
                    raise GGUFQError(f"cannot write {out_path}: {e.strerror}") from None
                w.write_header_to_file()
                w.write_kv_data_to_file()
                w.write_ti_data_to_file()
                fout = w.fout[0]
                w.write_padding(fout, fout.tell())
                _write_tensors(g, choices, imatrix, fout, w, quantize_tensor)
            finally:
                w.close()
    finally:
        g.close()

    return {"output": job.output, "bytes": os.path.getsize(job.output), "input_bytes": g.size,
            "bits_per_weight": 8 * size_out / max(n_elements, 1), "type": UD if dynamic else opts.ftype_name,
            "seconds": time.time() - t_start}


def _header(tmp, g, choices, opts, imatrix, job: QuantizeJob, dynamic: bool):
    """A GGUF writer holding the output's metadata and tensor table: every key of the input with its value
    type, then the keys llama-quantize (re)sets, in its order."""
    import numpy as np

    arch = g.get("general.architecture", "")
    w = _writer(tmp, arch)
    w.kv_data[0].clear()
    moved = ("general.quantization_version", "general.file_type", "split.no", "split.count",
             "split.tensors.count")
    for key, kv in g.kv.items():
        if key in moved:
            continue
        w.add_key_value(key, RawValue(g.raw_value(key)), kv.vtype, sub_type=kv.subtype)
    w.add_uint32("general.quantization_version", 2)  # GGML_QNT_VERSION
    w.add_uint32("general.file_type", int(opts.ftype))
    if dynamic:  # the chosen types, for review and reuse (llama.cpp ignores keys it does not know)
        from ggufq.quantize.recipes import recipe_json
        w.add_string("ggufq.recipe", recipe_json(choices, opts, UD))
    if imatrix is not None:
        w.add_string("quantize.imatrix.file", _c127(job.imatrix_name or job.imatrix))  # strncpy(..., 127) as llama-quantize
        if imatrix.datasets:
            w.add_string("quantize.imatrix.dataset", _c127(imatrix.datasets[0]))
        w.add_uint32("quantize.imatrix.entries_count", len(imatrix.entries))
        if imatrix.chunk_count > 0:
            w.add_uint32("quantize.imatrix.chunks_count", imatrix.chunk_count)
    alignment = g.get("general.alignment")
    if isinstance(alignment, int) and alignment > 0:
        w.data_alignment = alignment
    for c in choices:
        w.add_tensor_info(c.name, tuple(reversed(c.shape)), np.float32, _nbytes(c.dst_type, c.shape),
                          raw_dtype=c.dst_type)
    return w


def _c127(text: str) -> str:
    return text.encode("utf-8")[:127].decode("utf-8", "ignore")


SLAB_ELEMENTS = 1 << 22  # rows converted to float32 at a time (16 MiB)


def _write_tensors(g, choices, imatrix, fout, w, quantize_tensor):
    """Stream every tensor into fout. The input is read through a private mapping whose pages are
    released after each tensor (madvise DONTNEED), so the resident set stays at one slab of work."""
    import mmap

    import numpy as np
    from gguf import GGMLQuantizationType as GT
    from tqdm import tqdm

    from ggufq.errors import GGUFQError

    total = sum(g.tensors[c.name].n_elements for c in choices)
    bar = tqdm(total=total, unit="w", unit_scale=True, desc="quantizing", file=sys.stderr,
               disable=None, leave=False)
    f = open(g.path, "rb")
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    page = mmap.PAGESIZE

    def release(start, nbytes):
        lo = start // page * page
        hi = -(-(start + nbytes) // page) * page
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(mm)) - lo)

    # one float32 slab and one output slab, reused: fresh pages would cost a fault each
    scratch = np.empty(0, dtype=np.float32)
    qbuf = np.empty(0, dtype=np.uint8)
    try:
        for c in choices:
            t = g.tensors[c.name]
            raw = np.frombuffer(mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)
            if not c.quantize:
                raw.tofile(fout)
                w.write_padding(fout, t.nbytes)
                del raw
                release(t.offset, t.nbytes)
                bar.update(t.n_elements)
                continue
            ne0 = t.shape[0]
            raw = raw.reshape(t.n_rows, -1)  # [rows, bytes per row]
            n_expert = t.shape[2] if len(t.shape) >= 3 else 1
            rows_per_expert = t.n_rows // n_expert
            qw = imatrix.get(c.name) if imatrix is not None else None
            if qw is not None and qw.size != ne0 * n_expert:
                if c.name not in ("token_embd.weight", "per_layer_token_embd.weight"):
                    raise GGUFQError(f"imatrix size {qw.size} is different from tensor size {ne0 * n_expert} "
                                     f"for {c.name}")
                qw = None
            step = max(1, SLAB_ELEMENTS // ne0)
            if t.qtype == GT.F16 and scratch.size < step * ne0:
                scratch = np.empty(step * ne0, dtype=np.float32)
            out_bytes = step * _nbytes(c.dst_type, (ne0,))
            if qbuf.size < out_bytes:
                qbuf = np.empty(out_bytes, dtype=np.uint8)
            written = 0
            x = None
            for e in range(n_expert):
                qe = None if qw is None else qw[e * ne0:(e + 1) * ne0]
                base = e * rows_per_expert
                for r0 in range(0, rows_per_expert, step):
                    r1 = min(rows_per_expert, r0 + step)
                    x, checked = _to_f32(t, raw[base + r0:base + r1], c.name, scratch)
                    q = quantize_tensor(c.name, x, c.dst_type, qe, check_finite=not checked, out=qbuf)
                    q = np.ascontiguousarray(q).reshape(-1).view(np.uint8)
                    q.tofile(fout)
                    written += q.nbytes
                    bar.update((r1 - r0) * ne0)
                    x = q = None
                    release(t.offset + (base + r0) * raw.shape[1], (r1 - r0) * raw.shape[1])
            del raw, x
            if written != _nbytes_of(c):
                raise RuntimeError(f"{c.name}: wrote {written} bytes, expected {_nbytes_of(c)}")
            w.write_padding(fout, written)
    finally:
        bar.close()
        try:
            mm.close()
        except BufferError:
            pass
        f.close()


def _nbytes_of(c):
    return _nbytes(c.dst_type, c.shape)
