"""Random-weight GGUFs at the shapes people run, for benchmarks: weights need not be real to measure speed.

    .venv/bin/python tools/make_synthetic.py [--shape llama-3.2-1b|llama-3.1-8b] [--types Q4_0,Q4_K_M] [--out DIR]

Writes DIR/<shape>-F16.gguf (llama architecture, Llama 3's real vocabulary and merges from llama.cpp's
models/ggml-vocab-llama-bpe.gguf, fetched by `make models` into models/vocab/), weights drawn from
N(0, 0.02) with a fixed seed and norms of 1, then DIR/<shape>-<TYPE>.gguf by `ggufq quantize` for each
type (llama-quantize's bytes). The F16 file is removed afterwards unless --keep-f16. DIR defaults to
models/bench/ (git-ignored). Sizes: 1B F16 2.5 GB, Q4_0 0.77 GB, Q4_K_M 0.81 GB; 8B F16 16 GB.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gguf  # noqa: E402
import numpy as np  # noqa: E402

# llama.cpp's hyper-parameters of the two models (their config.json), the vocabulary is Llama 3's
SHAPES = {
    "llama-3.2-1b": dict(n_layer=16, d=2048, n_head=32, n_kv=8, ff=8192, tied=True, rope_base=500000.0,
                         ctx=131072),
    "llama-3.1-8b": dict(n_layer=32, d=4096, n_head=32, n_kv=8, ff=14336, tied=False, rope_base=500000.0,
                         ctx=131072),
}
VOCAB = ROOT / "models/vocab/ggml-vocab-llama-bpe.gguf"


def tensors(s: dict, n_vocab: int):
    """(name, shape as numpy sees it) in llama.cpp's order."""
    hd = s["d"] // s["n_head"]
    out = [("token_embd.weight", (n_vocab, s["d"]))]
    for i in range(s["n_layer"]):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (s["d"],)),
                (b + "attn_q.weight", (s["n_head"] * hd, s["d"])),
                (b + "attn_k.weight", (s["n_kv"] * hd, s["d"])),
                (b + "attn_v.weight", (s["n_kv"] * hd, s["d"])),
                (b + "attn_output.weight", (s["d"], s["n_head"] * hd)),
                (b + "ffn_norm.weight", (s["d"],)),
                (b + "ffn_gate.weight", (s["ff"], s["d"])),
                (b + "ffn_up.weight", (s["ff"], s["d"])),
                (b + "ffn_down.weight", (s["d"], s["ff"]))]
    out.append(("output_norm.weight", (s["d"],)))
    if not s["tied"]:
        out.append(("output.weight", (n_vocab, s["d"])))
    return out


def write_f16(path: Path, shape: str) -> None:
    from ggufq.files.atomic import atomic_output
    from ggufq.files.gguf_reader import GGUFFile
    from ggufq.files.gguf_writer import TensorStream
    s = SHAPES[shape]
    with GGUFFile(VOCAB) as v:
        tokens = v.get("tokenizer.ggml.tokens")
        types = np.asarray(v.get("tokenizer.ggml.token_type"), np.int32)
        merges = v.get("tokenizer.ggml.merges")
        pre = v.get("tokenizer.ggml.pre")
        bos, eos = v.get("tokenizer.ggml.bos_token_id"), v.get("tokenizer.ggml.eos_token_id")
    plan = tensors(s, len(tokens))
    rng = np.random.default_rng(0)
    with atomic_output(path) as tmp:
        w = gguf.GGUFWriter(tmp, "llama")
        try:
            for name, shp in plan:
                dt = np.float32 if len(shp) == 1 else np.float16
                w.add_tensor_info(name, shp, np.dtype(dt), int(np.prod(shp)) * np.dtype(dt).itemsize)
            w.add_name(f"synthetic {shape} (random weights)")
            w.add_block_count(s["n_layer"])
            w.add_context_length(s["ctx"])
            w.add_embedding_length(s["d"])
            w.add_feed_forward_length(s["ff"])
            w.add_head_count(s["n_head"])
            w.add_head_count_kv(s["n_kv"])
            w.add_rope_freq_base(s["rope_base"])
            w.add_layer_norm_rms_eps(1e-5)
            w.add_rope_dimension_count(s["d"] // s["n_head"])
            w.add_vocab_size(len(tokens))
            w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
            w.add_tokenizer_model("gpt2")
            w.add_tokenizer_pre(pre)
            w.add_token_list(tokens)
            w.add_token_types(types.tolist())
            w.add_token_merges(merges)
            w.add_bos_token_id(bos)
            w.add_eos_token_id(eos)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            stream = TensorStream(w)
            for name, shp in plan:
                if len(shp) == 1:
                    stream.tensor(name, np.ones(shp, np.float32))
                    continue
                stream.begin(name)
                for r0 in range(0, shp[0], 4096):  # slabs: a 128256 x 4096 embedding at once is 2 GB of float32
                    r1 = min(shp[0], r0 + 4096)
                    slab = rng.standard_normal((r1 - r0, shp[1]), dtype=np.float32)
                    slab *= np.float32(0.02)
                    stream.write(slab.astype(np.float16))
                stream.end()
            stream.finish()
        finally:
            w.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="llama-3.2-1b")
    ap.add_argument("--types", default="Q4_0,Q4_K_M", help="llama-quantize types, comma-separated")
    ap.add_argument("--out", default=str(ROOT / "models/bench"))
    ap.add_argument("--keep-f16", action="store_true")
    ap.add_argument("-t", "--threads", default="2")
    args = ap.parse_args()
    if not VOCAB.exists():
        raise SystemExit(f"{VOCAB} is missing: run `make models`")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    f16 = out / f"{args.shape}-F16.gguf"
    t0 = time.perf_counter()
    if not f16.exists():
        write_f16(f16, args.shape)
        print(f"{f16}: {f16.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s")
    from ggufq.cli import main as ggufq
    for t in filter(None, args.types.split(",")):
        q = out / f"{args.shape}-{t}.gguf"
        if ggufq(["quantize", str(f16), str(q), t, "-t", args.threads]):
            raise SystemExit(f"quantizing to {t} failed")
    if not args.keep_f16:
        f16.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
