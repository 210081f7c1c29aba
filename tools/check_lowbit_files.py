"""Whole low-bit files against llama-quantize's, every file type, with and without an imatrix: the check
the suite samples (tests/test_lowbit.py quantizes the plain files whole, the imatrix ones layers 0-1).

    .venv/bin/python tools/check_lowbit_files.py [--model smol|gemma] [-t 2]

For each real model and each file type of tests/data/quant_<model>_{iq4,q3k,q2k}.json (made by
tools/make_lowbit_fixtures.py with llama-quantize):

  ggufq quantize --allow-requantize models/<model>.gguf F16.gguf F16
  ggufq quantize [--pure] F16.gguf OUT.gguf TYPE                     whole file = llama-quantize's (sha256)
  ggufq quantize [--pure] --imatrix tests/data/imatrix_<model>.gguf F16.gguf OUT.gguf TYPE
                                                                    every tensor = llama-quantize's

and prints a table of the results; exit status 1 if any differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_quant_fixtures import DATA, MODELS, describe  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=list(MODELS), action="append")
    ap.add_argument("-t", "--threads", default="2")
    args = ap.parse_args()
    from ggufq.cli import main as ggufq
    rows, failed = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for short in args.model or list(MODELS):
            f16 = Path(tmp) / f"{short}.F16.gguf"
            if ggufq(["quantize", "--allow-requantize", str(MODELS[short]), str(f16), "F16", "-t", args.threads]):
                raise SystemExit(f"{short}: making the F16 file failed")
            for group in ("iq4", "q3k", "q2k"):
                fx = json.loads((DATA / f"quant_{short}_{group}.json").read_text())
                for ftype in fx["plain"]:
                    qtype, _, pure = ftype.partition("-")
                    for im in (False, True):
                        out = Path(tmp) / f"{short}.{ftype}.gguf"
                        cmd = ["quantize", *(["--pure"] if pure else []),
                               *(["--imatrix", str(DATA / f"imatrix_{short}.gguf")] if im else []),
                               str(f16), str(out), qtype, "-t", args.threads]
                        t0 = time.perf_counter()
                        if ggufq(cmd):
                            raise SystemExit(f"failed: ggufq {' '.join(cmd)}")
                        secs = time.perf_counter() - t0
                        want = fx["imatrix" if im else "plain"][ftype]
                        got = describe(out, whole=not im)
                        want_t = want if im else want["tensors"]
                        diff = [n for n in want_t if got["tensors"].get(n) != want_t[n]]
                        diff += [n for n in got["tensors"] if n not in want_t]
                        same_file = im or got["file_sha256"] == want["file_sha256"]
                        ok = not diff and same_file
                        failed += not ok
                        types = sorted({e["type"] for e in got["tensors"].values()})
                        rows.append((short, ftype, "imatrix" if im else "none", len(got["tensors"]),
                                     "whole file sha256" if not im else "every tensor",
                                     "equal" if ok else f"{len(diff)} tensors differ" + ("" if same_file else ", file differs"),
                                     ", ".join(types), f"{secs:.1f}"))
                        out.unlink()
    print("| model | file type | imatrix | tensors | compared | result | tensor types | ggufq s |")
    print("|---|---|---|---:|---|---|---|---:|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(f"\n{len(rows) - failed} of {len(rows)} equal to llama-quantize's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
