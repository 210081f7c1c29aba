"""ggufq convert HF_DIR --outtype f16 --outfile OUT.gguf"""
from __future__ import annotations

import sys
from pathlib import Path

from ggufq.commands._args import positive_int


def configure(p):
    p.add_argument("model", help="Hugging Face folder: config.json, safetensors, tokenizer files")
    p.add_argument("--outtype", default="f16",
                   help="f32, f16, bf16, q8_0 as llama.cpp's converter; a llama-quantize type (q4_0, q4_k_m, "
                        "q5_k_m, ...): the same bytes as converting to f16 and then quantizing; or ud-q4_k_xl, "
                        "the dynamic recipe (needs --calib or --imatrix) (default f16)")
    p.add_argument("--outfile", help="output GGUF (default: <folder>-<outtype>.gguf beside the folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = p.add_argument_group("ud-q4_k_xl (a temporary F16 file is written beside the output, then removed)")
    d.add_argument("--calib", metavar="TEXT", help="calibration text: the importance matrix is collected from it "
                                                   "(without --imatrix) and the recipe's probes run on it")
    d.add_argument("--imatrix", metavar="FILE", help="an importance matrix of this model (then --calib defaults "
                                                     "to the text it was collected from)")
    d.add_argument("--calib-ctx", type=positive_int, default=512, metavar="N",
                   help="tokens per calibration chunk, for the imatrix and the probes (default 512)")
    d.add_argument("--target-bpw", type=float, metavar="X", help="budget in bits per weight")
    d.add_argument("--target-size", metavar="N", help="budget as a file size (120MB, 1.5GB, 800MiB)")
    d.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all cores)")


def run(args) -> int:
    from ggufq.convert.hf_to_gguf import convert
    from ggufq.convert.hf_to_ud import UD_OUTTYPE, convert_dynamic
    from ggufq.errors import GGUFQError
    from ggufq.files.gguf_writer import check_output_file
    from ggufq.runtime.jit import announce, quantizer_modules
    from ggufq.runtime.threads import configure_batch_threads

    outtype = args.outtype.lower()
    dynamic = outtype == UD_OUTTYPE
    if not dynamic:
        for flag in ("calib", "imatrix", "target_bpw", "target_size"):
            if getattr(args, flag) is not None:
                raise GGUFQError(f"--{flag.replace('_', '-')} is for --outtype {UD_OUTTYPE}")
    configure_batch_threads(args.threads or 0)
    folder = Path(args.model)
    out = Path(args.outfile) if args.outfile else folder.parent / f"{folder.name}-{args.outtype}.gguf"
    check_output_file(out, *([args.imatrix] if args.imatrix else []))
    announce("converter", quantizer_modules())
    progress = not args.no_progress and sys.stderr.isatty()
    if dynamic:
        s = convert_dynamic(folder, out, args.imatrix, args.calib, args.calib_ctx, args.target_bpw,
                            args.target_size, args.threads, progress)
        print(f"{s['output']}: {s['bytes'] / 2**20:.2f} MiB, {s['bits_per_weight']:.2f} bits per weight, "
              f"{s['type']}, {s['seconds']:.1f} s")
        return 0
    s = convert(folder, out, outtype if outtype in ("f32", "f16", "bf16", "q8_0") else args.outtype, progress=progress)
    print(f"{s['file']}: {s['bytes'] / 2**20:.2f} MiB, {s['tensors']} tensors, "
          f"{s['parameters'] / 1e6:.1f} M parameters, {s['bits_per_weight']:.2f} bits per weight, "
          f"{s['seconds']:.1f} s")
    return 0
