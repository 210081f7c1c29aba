"""Golden fixtures for the low-bit file types (IQ4_NL, IQ4_XS; Q3_K_S, Q3_K_M, Q3_K_L; Q2_K), made with llama-quantize.

    .venv/bin/python tools/make_lowbit_fixtures.py [--llama-bin DIR] [--group iq4|q3k|q2k]

For each real model: its F16 file as in tools/make_quant_fixtures.py, then

  llama-quantize F16.gguf OUT.gguf TYPE 2                                   (whole file + every tensor)
  llama-quantize --imatrix tests/data/imatrix_<model>.gguf F16.gguf OUT.gguf TYPE 2   (every tensor)

for TYPE in the group's file types (TYPE-pure: with --pure), written to tests/data/quant_<model>_<group>.json (the imatrix files are
llama-imatrix's, from tools/make_imatrix_fixtures.py; a file made with one embeds its path, so only the
tensors' digests are compared there); and on SmolLM2's plain files

  llama-perplexity -m OUT.gguf -f tests/data/ppl_text_austen.txt -c 512 --chunks 4 -t 2    (its PPL)
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_quant_fixtures import DATA, describe, f16_of_each_model, llama_bin_arg, print_readme, run, write  # noqa: E402,E501

GROUPS = {"iq4": ["IQ4_NL", "IQ4_XS"], "q3k": ["Q3_K_S", "Q3_K_M", "Q3_K_L"], "q2k": ["Q2_K", "Q2_K-pure"]}
# "TYPE-pure": llama-quantize --pure ... TYPE. Neither model has a Q2_K tensor in the Q2_K mix (rows of 576
# and 640 fall back to Q4_0, ffn_down goes to Q3_K); --pure leaves ffn_down (rows of 1536, 2048) in Q2_K.


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    llama_bin_arg(ap)
    ap.add_argument("--group", choices=list(GROUPS), action="append", help="only these groups (default: all)")
    args = ap.parse_args()
    q = str(Path(args.llama_bin) / "llama-quantize")
    readme: list[str] = []
    for short, f16, work in f16_of_each_model(q):
        for group in args.group or list(GROUPS):
            one_group(q, short, f16, work, group, readme)
    print_readme(readme)
    return 0


def one_group(q, short, f16, work, group, readme) -> None:
    """llama-quantize [--imatrix] F16 OUT TYPE for each type of the group; one JSON per model and group."""
    types = GROUPS[group]
    imatrix = DATA / f"imatrix_{short}.gguf"
    payload = {"command": f"llama-quantize [--pure] [--imatrix tests/data/{imatrix.name}] F16.gguf OUT.gguf TYPE 2 "
                          f"for TYPE in {' '.join(types)} (F16.gguf from quant_{short}_F16.json)",
               "plain": {}, "imatrix": {}}
    for t in types:
        out = work / f"{short}.{t}.gguf"
        qtype, _, pure = t.partition("-")
        flags = ["--pure"] if pure else []
        run([q, *flags, str(f16), str(out), qtype, "2"])
        payload["plain"][t] = describe(out)
        if short == "smol":
            r = subprocess.run([str(Path(q).parent / "llama-perplexity"), "-m", str(out), "-f",
                                str(DATA / "ppl_text_austen.txt"), "-c", "512", "--chunks", "4", "-t", "2"],
                               capture_output=True, text=True)
            ppl = re.search(r"Final estimate: PPL = ([0-9.]+)", r.stdout + r.stderr)
            payload.setdefault("ppl_4x512", {})[t] = float(ppl.group(1))
        run([q, *flags, "--imatrix", str(imatrix), str(f16), str(out), qtype, "2"])
        payload["imatrix"][t] = describe(out, whole=False)["tensors"]
        out.unlink()
    write(f"quant_{short}_{group}.json", payload, readme)


if __name__ == "__main__":
    sys.exit(main())
