"""ggufq quantize IN.gguf OUT.gguf TYPE: quantize a GGUF the way llama-quantize does, byte for byte
(the pipeline is ggufq/quantize/pipeline.py)."""
from __future__ import annotations

from ggufq.commands._args import positive_int


def configure(p):
    p.add_argument("input", help="input GGUF (F32/F16/BF16; quantized with --allow-requantize)")
    p.add_argument("output", help="output GGUF")
    p.add_argument("type", help="Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, "
                                "F16, BF16, F32 (llama-quantize's names; Q4_K = Q4_K_M, Q5_K = Q5_K_M), or "
                                "UD-Q4_K_XL (a type per tensor from measurements: needs --imatrix and --calib)")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix from llama-imatrix (GGUF or legacy .dat)")
    p.add_argument("--tensor-type", action="append", default=[], metavar="REGEX=TYPE",
                   help="quantize tensors whose name matches REGEX to TYPE (first match wins; repeatable)")
    p.add_argument("--output-tensor-type", metavar="TYPE", help="type of output.weight")
    p.add_argument("--token-embedding-type", metavar="TYPE", help="type of token_embd.weight")
    p.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight unquantized")
    p.add_argument("--pure", action="store_true", help="no k-quant mixture: every tensor gets TYPE")
    p.add_argument("--allow-requantize", action="store_true", help="allow an already-quantized input")
    p.add_argument("--dry-run", action="store_true", help="print each tensor's type and the size, write nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the recipe as JSON")
    p.add_argument("--recipe", metavar="FILE.json",
                   help="per-tensor types from a JSON recipe ({\"tensors\": {NAME: TYPE}}, as --dry-run --json "
                        "prints); tensors it does not name follow TYPE's rules")
    d = p.add_argument_group("UD-Q4_K_XL, the dynamic recipe (ggufq/quantize/dynamic.py)")
    d.add_argument("--calib", metavar="TEXT", help="calibration text for the recipe's KL-divergence probes "
                                                   "(at least 512 tokens; use the imatrix's text)")
    d.add_argument("--calib-ctx", type=positive_int, default=512, metavar="N",
                   help="tokens of the calibration chunk each probe runs (its second half is scored; default 512)")
    d.add_argument("--target-bpw", type=float, metavar="X", help="budget in bits per weight (default: the size "
                                                                 "of imatrix Q4_K_M plus 5%%)")
    d.add_argument("--target-size", metavar="N", help="budget as a file size (120MB, 1.5GB, 800MiB)")
    d.add_argument("--save-recipe", metavar="FILE.json", help="write the chosen per-tensor types as a recipe "
                                                              "(--recipe applies it to another run)")
    p.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all cores)")


def run(args) -> int:
    from ggufq.quantize.pipeline import QuantizeJob, quantize_file
    s = quantize_file(QuantizeJob.from_args(args))
    if s["output"] is not None:  # the file's size, as convert prints it (metadata included)
        print(f"{s['output']}: {s['bytes'] / 2**20:.2f} MiB ({s['input_bytes'] / 2**20:.2f} MiB in), "
              f"{s['bits_per_weight']:.2f} bits per weight, {s['type']}, {s['seconds']:.1f} s")
    return 0
