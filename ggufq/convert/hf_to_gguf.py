"""Hugging Face folder -> GGUF, as llama.cpp's convert_hf_to_gguf.py writes it, streaming.

The plan (names, types, shapes) is made from the safetensors headers alone; the header, metadata and
tensor table are written first, then one tensor at a time is read from the mapping, transformed,
quantized and appended. Peak memory is one tensor (plus its converted copy), not the model.

The order of the metadata keys and tensors is llama.cpp's, so the files can be compared byte for byte:
general.architecture, general.type, the model card (gguf.Metadata), the hyper-parameters
(TextModel.set_gguf_parameters, then the family's own), general.quantization_version, then the vocabulary.
Tensors: the generated ones (llama3 rope_freqs), then the checkpoint's, shard by shard, by name.
"""
from __future__ import annotations

import json
import logging
import mmap
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from ggufq.arch import arch_for_hf
from ggufq.errors import GGUFQError
from ggufq.files.atomic import atomic_output
from ggufq.files.gguf_writer import TensorStream
from ggufq.convert.vocab_from_hf import HFVocab, load_json
from ggufq.kernels import get_format
from ggufq.files.safetensors import INDEX_NAME, open_safetensors

# gguf warns on every key a family sets twice (llama.cpp's converter does that on purpose)
logging.getLogger("gguf.gguf_writer").setLevel(logging.ERROR)

OUTTYPES = {  # --outtype -> (general.file_type, tensor type for the weights)
    "f32": (FT.ALL_F32, T.F32),
    "f16": (FT.MOSTLY_F16, T.F16),
    "bf16": (FT.MOSTLY_BF16, T.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, T.Q8_0),
}


@dataclass
class PlannedTensor:
    gguf_name: str
    hf_name: str | None        # None for generated tensors
    shape: tuple[int, ...]     # numpy order
    qtype: T                   # type written
    generated: np.ndarray | None = None
    via: T | None = None       # for a quantized outtype: the tensor's type in the F16 file it stands for

    @property
    def nbytes(self) -> int:
        fmt = get_format(self.qtype)
        n = int(np.prod(self.shape, dtype=np.int64))
        return n // fmt.block_size * fmt.type_size


def load_hparams(folder: Path) -> dict:
    path = folder / "config.json"
    if not folder.is_dir():
        raise GGUFQError(f"{folder}: not a folder")
    if not path.is_file():
        raise GGUFQError(f"{folder}: missing config.json")
    try:
        hp = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GGUFQError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hp, dict):
        raise GGUFQError(f"{path}: not a JSON object")
    return hp


def checkpoint_order(folder: Path, names) -> list[str]:
    """llama.cpp's order: shard files sorted by name, tensors in each sorted by name."""
    index = folder / INDEX_NAME
    if index.is_file():
        wm = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted(names, key=lambda n: (wm[n], n))
    return sorted(names)


def _weight_type(gguf_name: str, shape, wanted: T) -> T:
    # llama.cpp: 1-D tensors and norms stay F32, so does anything that is not a ".weight"
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return T.F32
    fmt = get_format(wanted)
    if shape[-1] % fmt.block_size:
        return T.F16  # llama.cpp falls back to F16 when rows are not whole blocks
    return wanted


def plan(folder: Path, outtype: str):
    hp = load_hparams(folder)
    arch = arch_for_hf(hp)(hp)
    tensors = open_safetensors(folder)
    vocab = HFVocab(folder, arch.hp)
    arch.n_vocab_real = len(vocab.tokens)
    file_type, wanted = OUTTYPES[outtype if outtype in OUTTYPES else "f16"]
    planned: list[PlannedTensor] = []
    for name, data in arch.extra_tensors():
        planned.append(PlannedTensor(name, None, data.shape, _weight_type(name, data.shape, wanted), data))
    for hf_name in checkpoint_order(folder, tensors):
        st = tensors[hf_name]
        if st.dtype not in ("F32", "F16", "BF16"):
            raise GGUFQError(f"{hf_name}: safetensors dtype {st.dtype} is not supported")
        g_name = arch.gguf_name(hf_name)
        if g_name is None:
            continue
        shape = arch.gguf_shape(hf_name, st.shape)
        planned.append(PlannedTensor(g_name, hf_name, tuple(shape), _weight_type(g_name, shape, wanted)))
    if outtype not in OUTTYPES:
        planned = _quantized_plan(arch, planned, outtype)
    return arch, tensors, vocab, file_type, planned


def _quantized_plan(arch, planned: list[PlannedTensor], outtype: str) -> list[PlannedTensor]:
    """convert-to-F16 then llama-quantize, in one pass: the F16 file's tensors, in llama-quantize's order,
    each with the type llama-quantize's rules give it (ggufq/quantize/recipes.py)."""
    from ggufq.quantize.recipes import ModelFacts, Options, plan as recipe_plan, tensor_order
    by_name = {p.gguf_name: p for p in planned}
    order = tensor_order(list(by_name))
    facts = ModelFacts(arch=arch.gguf_arch, n_layer=arch.block_count,
                       n_head=arch.hp.get("num_attention_heads", 0),
                       n_head_kv=arch.hp.get("num_key_value_heads", 0))
    choices = recipe_plan([(n, tuple(reversed(by_name[n].shape)), by_name[n].qtype) for n in order],
                          facts, Options(ftype_name=outtype))
    out = []
    for c in choices:
        p = by_name[c.name]
        p.via, p.qtype = p.qtype, c.dst_type
        out.append(p)
    return out


SLAB_BYTES = 16 << 20  # float32 bytes converted at a time for large row-local tensors


def _as_float(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Rows as llama.cpp's converter sees them: F16 and F32 kept, BF16 (anything else) made F32."""
    if dtype == "BF16":
        bits = raw.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    return np.array(raw)


def _slabs(arch, p: PlannedTensor, st):
    """The converted tensor, in slabs of whole rows when the family's transform allows it."""
    rows = p.shape[0]
    if len(p.shape) == 1 or not arch.row_local(p.hf_name):
        yield arch.to_gguf(p.hf_name, _as_float(st.data[:rows], st.dtype))
        return
    step = max(1, SLAB_BYTES // (4 * int(np.prod(p.shape[1:]))))
    for r in range(0, rows, step):
        yield arch.to_gguf(p.hf_name, _as_float(st.data[r:min(r + step, rows)], st.dtype))
        _release(st.data)


def _release(view: np.ndarray) -> None:
    """Drop the file pages a tensor's reading brought in, so resident memory stays one tensor wide."""
    base = view
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    if base is not None and hasattr(base, "madvise"):
        base.madvise(mmap.MADV_DONTNEED)


def _encode(data: np.ndarray, qtype: T, via: T | None = None, name: str = "") -> np.ndarray:
    if via is not None and via != qtype:  # what quantizing the F16 file would have read
        from ggufq.quantize.recipes import quantize_tensor
        return quantize_tensor(name, _encode(data, via).astype(np.float32), qtype, check_finite=False)
    if qtype == T.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(data).astype(np.float16)
    rows = np.ascontiguousarray(data, dtype=np.float32).reshape(-1, data.shape[-1])
    return get_format(qtype).quantize(rows)


def write_metadata(w: gguf.GGUFWriter, folder: Path, arch, vocab, file_type) -> None:
    total, shared, expert, expert_count = w.get_total_parameter_count()
    try:
        meta = gguf.Metadata.load(None, folder, None, total)
    except Exception as e:  # gguf reads README.md's YAML front matter and config.json without checking
        raise GGUFQError(f"{folder}: cannot read the model card or config ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    gen = folder / "generation_config.json"
    if gen.is_file():  # llama.cpp's current converter also reads transformers' name for it
        cfg = load_json(gen)
        if "penalty_repeat" not in cfg and "repetition_penalty" in cfg:
            meta.sampling_penalty_repeat = cfg["repetition_penalty"]
    if meta.name is None:
        meta.name = folder.name
    if meta.size_label is None and total > 0:
        meta.size_label = gguf.size_label(total, shared, expert, expert_count)
    w.add_type(gguf.GGUFType.MODEL)
    meta.set_gguf_meta_model(w)
    arch.set_gguf_parameters(w, file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    arch.set_vocab(w, vocab)


def _quantize_metadata(w: gguf.GGUFWriter, outtype: str) -> None:
    """What llama-quantize does to the F16 file's keys: these two move to the end, file type updated."""
    from ggufq.quantize.recipes import parse_file_type
    _, ftype, _ = parse_file_type(outtype)
    for key in ("general.quantization_version", "general.file_type"):
        w.kv_data[0].pop(key, None)
    w.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)
    w.add_uint32("general.file_type", int(ftype))


def convert(folder: str | Path, outfile: str | Path, outtype: str = "f16", progress: bool = True) -> dict:
    folder, outfile = Path(folder), Path(outfile)
    if outtype not in OUTTYPES:
        from ggufq.quantize.recipes import parse_file_type
        outtype = parse_file_type(outtype)[0]  # a llama-quantize type name, or a clear error
    t0 = time.perf_counter()
    arch, tensors, vocab, file_type, planned = plan(folder, outtype)
    total = sum(p.nbytes for p in planned)
    with atomic_output(outfile) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_arch)
        try:
            for p in planned:
                w.add_tensor_info(p.gguf_name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
            write_metadata(w, folder, arch, vocab, file_type)
            if outtype not in OUTTYPES:
                _quantize_metadata(w, outtype)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            stream = TensorStream(w)
            with _progress(total, progress, outfile.name) as bar:
                for p in planned:
                    stream.begin(p.gguf_name)
                    slabs = [p.generated] if p.generated is not None else _slabs(arch, p, tensors[p.hf_name])
                    for data in slabs:
                        if not np.isfinite(data).all():
                            raise GGUFQError(f"tensor {p.hf_name or p.gguf_name} holds NaN or Inf")
                        stream.write(_encode(data, p.qtype, p.via, p.gguf_name))
                    stream.end()
                    if p.hf_name is not None:
                        _release(tensors[p.hf_name].data)
                    bar.update(p.nbytes)
            stream.finish()
        finally:
            w.close()
    n_params = sum(int(np.prod(p.shape)) for p in planned)
    size = outfile.stat().st_size
    return {"file": str(outfile), "bytes": size, "tensors": len(planned), "parameters": n_params,
            "bits_per_weight": 8 * sum(p.nbytes for p in planned) / max(n_params, 1),
            "seconds": time.perf_counter() - t0}


def _progress(total: int, enabled: bool, name: str):
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not enabled, leave=False)
