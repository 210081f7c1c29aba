"""ggufq export GGUF OUT_DIR [--dtype bf16|f16|f32] [--shard-size 2GB]: a GGUF back to a Hugging Face folder."""
from __future__ import annotations


def configure(p):
    p.add_argument("gguf", help="GGUF file to export")
    p.add_argument("out_dir", help="Hugging Face folder to create")
    p.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16",
                   help="dtype of the weight matrices (1-D F32 tensors stay F32); default bf16")
    p.add_argument("--shard-size", default="2GB",
                   help="largest safetensors shard, e.g. 2GB, 500MB, 512MiB (default 2GB); larger models "
                        "are split into model-0000i-of-0000n.safetensors with an index")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ggufq.convert.gguf_to_hf import export_gguf
    from ggufq.files.safetensors import parse_size

    r = export_gguf(args.gguf, args.out_dir, dtype=args.dtype, shard_size=parse_size(args.shard_size),
                    force=args.force, progress=not args.quiet)
    shards = sum(f.endswith(".safetensors") for f in r.files)
    tok = next((f for f in r.files if f in ("tokenizer.json", "tokenizer.model")), "no tokenizer")
    print(f"{r.out_dir}: {r.n_tensors} tensors, {r.n_params / 1e6:.1f} M parameters, "
          f"{r.tensor_bytes / 2**20:.1f} MiB in {shards} shard(s), {args.dtype}, {tok}, {r.seconds:.1f} s")
    return 0
