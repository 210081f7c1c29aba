"""ggufq convert HF_DIR --outtype f16 --outfile OUT.gguf"""
from __future__ import annotations

import sys
from pathlib import Path


def configure(p):
    p.add_argument("model", help="Hugging Face folder: config.json, safetensors, tokenizer files")
    p.add_argument("--outtype", default="f16",
                   help="f32, f16, bf16, q8_0 as llama.cpp's converter, or a llama-quantize type (q4_0, q4_k_m, "
                        "q5_k_m, ...): the same bytes as converting to f16 and then quantizing (default f16)")
    p.add_argument("--outfile", help="output GGUF (default: <folder>-<outtype>.gguf beside the folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..convert import convert
    from ..gguf_writer import check_output_file
    from ..threads import configure_batch_threads
    configure_batch_threads()
    folder = Path(args.model)
    out = Path(args.outfile) if args.outfile else folder.parent / f"{folder.name}-{args.outtype}.gguf"
    check_output_file(out)
    from ..jit import announce, quantizer_modules
    announce("converter", quantizer_modules())
    s = convert(folder, out, args.outtype.lower() if args.outtype.lower() in ('f32', 'f16', 'bf16', 'q8_0') else args.outtype, progress=not args.no_progress and sys.stderr.isatty())
    print(f"{s['file']}: {s['bytes'] / 2**20:.2f} MiB, {s['tensors']} tensors, "
          f"{s['parameters'] / 1e6:.1f} M parameters, {s['bits_per_weight']:.2f} bits per weight, "
          f"{s['seconds']:.1f} s")
    return 0
