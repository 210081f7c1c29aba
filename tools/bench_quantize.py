"""Wall time and peak RSS of `ggufq quantize` against `llama-quantize` (2 threads each), as ratios.

    .venv/bin/python tools/bench_quantize.py [--llama-bin DIR] [--repeat N] [--types Q4_0 Q4_K_M Q5_K_M]

DIR holds llama-quantize: $LLAMA_CPP_DIR (a build folder or its bin/) or ~/.cache/ggufq-ref/llama.cpp/build/bin.
Each model is first made F16 (`ggufq quantize --allow-requantize MODEL F16`, identical to llama-quantize's),
ggufq is run once to warm numba's cache, then the two tools alternate, N runs each; the best wall time and
the largest peak RSS (getrusage of the child) are kept. Both outputs are checked to be the same bytes.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "SmolLM2-135M": ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m": ROOT / "models" / "gemma-3-270m-q4_k_m.gguf",
}
GGUFQ = [sys.executable, "-m", "ggufq"]


def find_llama_quantize(arg: str | None) -> Path:
    cands = []
    for base in (arg, os.environ.get("LLAMA_CPP_DIR"), str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin")):
        if base:
            cands += [Path(base) / "llama-quantize", Path(base) / "bin" / "llama-quantize",
                      Path(base) / "build" / "bin" / "llama-quantize"]
    for c in cands:
        if c.is_file():
            return c
    raise SystemExit("llama-quantize not found: pass --llama-bin or set LLAMA_CPP_DIR")


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one run of cmd."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, ru.ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--types", nargs="+", default=["Q4_0", "Q4_K_M", "Q5_K_M"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    lq = str(find_llama_quantize(args.llama_bin))
    nt = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, model in MODELS.items():
            f16 = tmp / f"{label}.F16.gguf"
            subprocess.run(GGUFQ + ["quantize", "--allow-requantize", str(model), str(f16), "F16", "-t", nt],
                           check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            for qt in args.types:
                ours, theirs = tmp / f"ours.{qt}.gguf", tmp / f"llama.{qt}.gguf"
                cmd_ours = GGUFQ + ["quantize", str(f16), str(ours), qt, "-t", nt]
                cmd_llama = [lq, str(f16), str(theirs), qt, nt]
                measure(cmd_ours)  # warm numba's on-disk cache and the page cache
                t_o, r_o, t_l, r_l = [], [], [], []
                for _ in range(args.repeat):
                    a, b = measure(cmd_llama)
                    t_l.append(a)
                    r_l.append(b)
                    a, b = measure(cmd_ours)
                    t_o.append(a)
                    r_o.append(b)
                same = filecmp.cmp(ours, theirs, shallow=False)
                rows.append((label, qt, min(t_o), min(t_l), max(r_o), max(r_l), same))
                ours.unlink()
                theirs.unlink()
                print(f"{label:<13} {qt:<7} ggufq {min(t_o):6.2f} s {max(r_o):7.0f} MiB | llama-quantize "
                      f"{min(t_l):6.2f} s {max(r_l):7.0f} MiB | same bytes: {same}", file=sys.stderr)
            f16.unlink()
    print(f"\n{'model':<13} {'type':<7} {'ggufq s':>8} {'llama s':>8} {'time x':>7} {'ggufq MiB':>10} "
          f"{'llama MiB':>10} {'RSS x':>6}  identical")
    for label, qt, to, tl, ro, rl, same in rows:
        print(f"{label:<13} {qt:<7} {to:8.2f} {tl:8.2f} {to / tl:7.2f} {ro:10.0f} {rl:10.0f} {ro / rl:6.2f}  {same}")
    print(f"({args.threads} threads each, best of {args.repeat} runs; ratio = ggufq / llama-quantize)")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
