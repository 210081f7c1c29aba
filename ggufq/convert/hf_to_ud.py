"""Hugging Face folder -> UD-Q4_K_XL in one command: `ggufq convert HF_DIR --outtype ud-q4_k_xl
(--imatrix FILE | --calib TEXT)`.

The dynamic recipe measures the model: the imatrix runs the calibration text through it, and the probes
run mixtures of quantized and F16 tensors. Both need the model in a form the runtime reads, so the folder
is first converted to a temporary F16 GGUF on disk, in a hidden folder beside the output (the streaming
converter: one tensor in memory at a time). Then, as three separate commands would:

    ggufq convert HF_DIR --outtype f16                       -> TMP/model-f16.gguf
    ggufq imatrix -m TMP/model-f16.gguf -f TEXT -c N          (only without --imatrix)
    ggufq quantize TMP/model-f16.gguf OUT UD-Q4_K_XL --imatrix I --calib TEXT --calib-ctx N

and the same bytes come out (test). The temporary folder is removed at the end, on failure and on Ctrl-C;
the output appears only when complete. Disk: the F16 file (2 bytes per weight) on top of the output.
Memory: the runtime maps the F16 file; pages are read as the forward pass touches them.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from ggufq.errors import GGUFQError
from ggufq.files.atomic import scratch_folder

UD_OUTTYPE = "ud-q4_k_xl"


def convert_dynamic(folder, outfile, imatrix: str | None = None, calib: str | None = None, calib_ctx: int = 512,
                    target_bpw: float | None = None, target_size: str | None = None,
                    threads: int | None = None, progress: bool = True, log=None) -> dict:
    from ggufq.convert.hf_to_gguf import convert
    from ggufq.files.imatrix_file import load_imatrix
    from ggufq.files.text import read_text
    from ggufq.quantize.imatrix import compute_imatrix
    from ggufq.quantize.pipeline import UD, QuantizeJob, calibration_text_of, quantize_file

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    folder, outfile = Path(folder), Path(outfile)
    if imatrix is None and calib is None:
        raise GGUFQError(f"--outtype {UD_OUTTYPE} needs --calib TEXT (the imatrix is collected from it) "
                         f"or --imatrix FILE")
    # every input checked before minutes of work
    if imatrix is not None and calib is None:
        calib = calibration_text_of(load_imatrix(imatrix))
    text = read_text(calib)
    t0 = time.perf_counter()
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_folder(outfile)
    try:
        f16 = Path(tmp) / "model-f16.gguf"
        log(f"convert: {folder} -> a temporary F16 file ({tmp})")
        convert(folder, f16, "f16", progress=progress)
        imatrix_name = None
        if imatrix is None:
            imatrix = str(Path(tmp) / "imatrix.gguf")
            imatrix_name = f"{Path(calib).name} (collected by ggufq convert)"
            log(f"convert: collecting the importance matrix from {calib}, chunks of {calib_ctx} tokens")
            compute_imatrix(f16, text, imatrix, n_ctx=calib_ctx, n_threads=threads, dataset=calib, log=log)
        log(f"convert: choosing each tensor's type ({UD})")
        job = QuantizeJob(input=str(f16), output=str(outfile), type=UD, imatrix=imatrix, calib=calib,
                          calib_ctx=calib_ctx, target_bpw=target_bpw, target_size=target_size, threads=threads,
                          imatrix_name=imatrix_name)
        summary = quantize_file(job)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**summary, "seconds": time.perf_counter() - t0}
