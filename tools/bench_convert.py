"""Wall time and peak RSS of `ggufq convert` against llama.cpp's convert_hf_to_gguf.py, same folder,
same run, alternating A B A B, printed as medians and ratios (ours / llama.cpp's).

    python tools/bench_convert.py [--runs 3] [--outtype f16] [--python PY] [--llama-cpp TREE]

PY must have torch + transformers (llama.cpp's converter needs them); TREE is the llama.cpp source tree
(default: the one ../shared/tools/llama-cpp-ref.sh unpacked). Targets: time <= 1.0x, peak RSS <= 0.5x.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = Path.home() / ".cache" / "ggufq-ref"


def timed(cmd: list[str], env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one whole process, from GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, *cmd], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, rss_kb = t.read().split()[-2:]
    return float(wall), int(rss_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--python", default=str(REF / "convvenv" / "bin" / "python"))
    ap.add_argument("--llama-cpp", default=str(REF / "llama.cpp"))
    ap.add_argument("--models", nargs="*", default=["smollm2-hf", "gemma3-hf"])
    args = ap.parse_args()
    tree = Path(args.llama_cpp)
    env = {**os.environ, "PYTHONPATH": str(tree / "gguf-py")}
    print(f"{'model':<12} {'tool':<10} {'wall s':>8} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.gguf"
        for m in args.models:
            folder = ROOT / "models" / m
            ours = [sys.executable, "-m", "ggufq", "convert", str(folder), "--outtype", args.outtype,
                    "--outfile", str(out), "--no-progress"]
            theirs = [args.python, str(tree / "convert_hf_to_gguf.py"), str(folder), "--outtype", args.outtype,
                      "--outfile", str(out)]
            a, b = [], []
            for _ in range(args.runs):
                a.append(timed(ours))
                b.append(timed(theirs, env))
            (ta, ra), (tb, rb) = [tuple(statistics.median(x[i] for x in runs) for i in (0, 1)) for runs in (a, b)]
            print(f"{m:<12} {'ggufq':<10} {ta:>8.2f} {ra:>9.0f}")
            print(f"{m:<12} {'llama.cpp':<10} {tb:>8.2f} {rb:>9.0f}")
            print(f"{m:<12} {'ratio':<10} {ta / tb:>8.2f}x {ra / rb:>8.2f}x   (targets: time <= 1.0x, RSS <= 0.5x)")


if __name__ == "__main__":
    main()
