"""Runtime speed against llama.cpp, in the same run: a benchmark, not a test.

    .venv/bin/python tools/bench_runtime.py [--llama-cpp DIR] [-t 2] [-p 512] [-n 128] [-r 3] [--only 1B]
    .venv/bin/python tools/bench_runtime.py --busy-core [-n 64] [-r 5]

Files: SmolLM2 Q4_0, Q4_K_M and Q8_0 (made once with `ggufq quantize --allow-requantize` from the shipped
Q4_1 file, into models/bench/), the shipped Gemma 3 Q4_K_M, and Llama-3.2-1B-shaped Q4_0 and Q4_K_M with
random weights (made once by tools/make_synthetic.py; --small-only leaves them out), and Llama-3.1-8B-shaped
files where make_synthetic.py --shape llama-3.1-8b has made them. First the machine's
read bandwidth (a parallel sum over 1 GiB), then for each decode the GB/s of weights it reads and its
fraction of that bandwidth. For each: `ggufq bench` and llama-bench
with the same settings (pp = one batch of p tokens, tg = n tokens one at a time), the ratios, the time
to first token with a warm JIT cache (the median of three fresh processes: import, load the file, a
16-token prompt), and the peak RSS of a 128-token generation against file size + KV cache + 200 MB.
Targets (issue 17): pp and tg >= 1.0x llama.cpp; 1B decode >= 0.9 of the read bandwidth; TTFT <= 1 s.

--busy-core: decode speed of SmolLM2 Q4_0 with default threads, quiet and while another process keeps one
core busy (a Python spin loop), beside `-t 1` under the same load and llama-bench (-t = all cores) quiet
and loaded. Target: default threads under load >= 0.5x their quiet figure and >= the -t 1 figure.
The OpenBLAS variables OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the ggufq runs (the
SkylakeX-or-native sgemm kernels instead of the machine's Haswell default), as the design notes allow.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SMOL = ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = ROOT / "models/gemma-3-270m-q4_k_m.gguf"
BENCH_DIR = ROOT / "models/bench"

PROBE = r"""
import resource, sys, time
t0 = time.perf_counter()
from ggufq.runtime.model import Model
m = Model.load(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]))
m.eval(list(range(100, 116)))
ttft = time.perf_counter() - t0
tok = 0
for i in range(int(sys.argv[4])):
    tok = int(m.eval([tok]).argmax())
kv = m.rs.kc.nbytes + m.rs.vc.nbytes
print(ttft, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, kv)
"""


def env_blas():
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def files() -> list[tuple[str, Path]]:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    out = []
    for t in ("Q4_0", "Q4_K_M", "Q8_0"):
        p = BENCH_DIR / f"smollm2-135m-{t}.gguf"
        if not p.exists():
            subprocess.run([PY, "-m", "ggufq", "quantize", "--allow-requantize", str(SMOL), str(p), t], check=True,
                           stdout=subprocess.DEVNULL)
        out.append((f"SmolLM2 {t}", p))
    out.append(("Gemma3 Q4_K_M", GEMMA))
    if not SMALL_ONLY:
        for t in ("Q4_0", "Q4_K_M"):  # the sizes people run: random weights, Llama 3's vocabulary
            p = BENCH_DIR / f"llama-3.2-1b-{t}.gguf"
            if not p.exists():
                subprocess.run([PY, str(ROOT / "tools/make_synthetic.py"), "--shape", "llama-3.2-1b", "--types", t],
                               check=True, stdout=subprocess.DEVNULL)
            out.append((f"Llama-3.2-1B-shaped {t}", p))
        # the 8B file only when it was made (make_synthetic.py --shape llama-3.1-8b: 16 GB of F16 on the way)
        for p in sorted(BENCH_DIR.glob("llama-3.1-8b-*.gguf")):
            out.append((f"Llama-3.1-8B-shaped {p.stem.rsplit('-', 1)[1]}", p))
    return out


SMALL_ONLY = False

# the machine's read bandwidth: a parallel sum over 1 GiB (far past any cache), numba's threads
READ_PROBE = r"""
import sys, time, numba, numpy as np
numba.set_num_threads(int(sys.argv[1]))
@numba.njit(parallel=True, fastmath=True)
def total(a):
    s = np.float32(0.0)
    for i in numba.prange(a.shape[0]):
        s += a[i]
    return s
a = np.ones(1 << 28, np.float32)
total(a)
t = []
for _ in range(7):
    t0 = time.perf_counter(); total(a); t.append(time.perf_counter() - t0)
print(a.nbytes / sorted(t)[3] / 1e9)
"""


BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def tg(cmd: list[str]) -> float:
    """The tg figure (t/s) that `ggufq bench` or llama-bench prints for cmd."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env_blas(), cwd=ROOT)
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(out.returncode)
    if "llama-bench" in cmd[0]:
        return float(json.loads(out.stdout)[-1]["avg_ts"])
    line = next(x for x in out.stdout.splitlines() if "| tg" in x)
    return float(line.split("|")[5].split("±")[0])


def busy_core(args, have_llama: bool) -> None:
    path = files()[0][1]
    ours = [PY, "-m", "ggufq", "bench", "-m", str(path), "-p", "0", "-n", str(args.n), "-r", str(args.r)]
    ref = [str(Path(args.llama_cpp) / "llama-bench"), "-m", str(path), "-p", "0", "-n", str(args.n),
           "-r", str(args.r), "-t", str(os.cpu_count()), "-o", "json"]
    res = {"ggufq default, quiet": tg(ours)}
    if have_llama:
        res["llama-bench, quiet"] = tg(ref)
    busy = subprocess.Popen([PY, "-c", BUSY])
    try:
        res["ggufq default, one core busy"] = tg(ours)
        res["ggufq -t 1, one core busy"] = tg(ours + ["-t", "1"])
        if have_llama:
            res["llama-bench, one core busy"] = tg(ref)
    finally:
        busy.kill()
        busy.wait()
    for k, v in res.items():
        print(f"{path.name} tg{args.n}  {k:<32} {v:7.2f} t/s")
    q, b, one = res["ggufq default, quiet"], res["ggufq default, one core busy"], res["ggufq -t 1, one core busy"]
    print(f"ggufq default threads: loaded / quiet = {b / q:.2f} (target >= 0.5), loaded / -t 1 loaded = "
          f"{b / one:.2f} (target >= ~1.0)")
    if have_llama:
        lq, lb = res["llama-bench, quiet"], res["llama-bench, one core busy"]
        print(f"llama-bench: loaded / quiet = {lb / lq:.2f}; ggufq / llama.cpp: quiet {q / lq:.2f}, loaded {b / lb:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_DIR",
                                                          str(Path.home() / ".cache/ggufq-ref/llama.cpp/build/bin")))
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--busy-core", action="store_true", help="decode with one core kept busy (see above)")
    ap.add_argument("--small-only", action="store_true", help="the cache-resident real models only")
    ap.add_argument("--only", default="", help="the files whose label contains this (e.g. '1B', 'Q4_K_M')")
    args = ap.parse_args()
    global SMALL_ONLY
    SMALL_ONLY = args.small_only
    have_llama = (Path(args.llama_cpp) / "llama-bench").exists()
    if args.busy_core:
        busy_core(args, have_llama)
        return
    bandwidth = float(subprocess.run([PY, "-c", READ_PROBE, str(args.t)], capture_output=True, text=True,
                                     check=True, cwd=ROOT).stdout)
    print(f"read bandwidth, {args.t} threads (a parallel sum over 1 GiB, median of 7): {bandwidth:.1f} GB/s\n")
    rows = []
    for label, path in files():
        if args.only not in label:
            continue
        cmd = [PY, "-m", "ggufq", "bench", "-m", str(path), "-t", str(args.t), "-p", str(args.p), "-n", str(args.n),
               "-r", str(args.r)]
        if have_llama:
            cmd += ["--compare-llama-cpp", args.llama_cpp]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env_blas(), cwd=ROOT)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(out.returncode)
        print(out.stdout, end="", flush=True)
        for line in out.stdout.splitlines():
            if "GB/s of weights read" in line:
                gbs = float(line.split(" = ")[1].split()[0])
                print(f"{label}: decode reads weights at {gbs:.2f} GB/s = {gbs / bandwidth:.2f} of the measured "
                      f"read bandwidth")
        # three fresh processes, the median: on a VM that pages out cold page cache (DAMON), the first
        # process after a benchmark reads numba's libraries and the kernels' cache from disk again
        probes = [subprocess.run([PY, "-c", PROBE, str(path), "512", str(args.t), "128"], capture_output=True,
                                 text=True, env=env_blas(), cwd=ROOT, check=True).stdout.split() for _ in range(3)]
        ttfts = sorted(float(p[0]) for p in probes)
        ttft, rss, kv = ttfts[1], max(int(p[1]) for p in probes), int(probes[0][2])
        size = path.stat().st_size
        budget = size + kv + 200 * 2**20
        print(f"{label}: time to first token {ttft:.2f} s (warm JIT cache; median of "
              f"{', '.join(f'{t:.2f}' for t in ttfts)}); peak RSS {rss / 2**20:.0f} MiB "
              f"<= file {size / 2**20:.0f} + KV {kv / 2**20:.0f} + 200 MiB = {budget / 2**20:.0f} MiB: "
              f"{'yes' if rss <= budget else 'NO'}\n", flush=True)
        ratios = {}
        for line in out.stdout.splitlines():
            if "ratio" in line:
                test, _, rest = line.partition(":")
                ratios[test] = float(rest.rsplit("ratio", 1)[1])
        rows.append({"model": label, "ratios": ratios, "ttft_s": round(ttft, 2), "peak_rss_mib": round(rss / 2**20),
                     "rss_budget_mib": round(budget / 2**20)})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
