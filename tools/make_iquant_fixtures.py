"""Golden fixtures for the non-linear 4-bit file types, IQ4_NL and IQ4_XS, made with llama-quantize.

    .venv/bin/python tools/make_iquant_fixtures.py [--llama-bin DIR]

For each real model: its F16 file as in tools/make_quant_fixtures.py, then

  llama-quantize F16.gguf OUT.gguf TYPE 2                                   (whole file + every tensor)
  llama-quantize --imatrix tests/data/imatrix_<model>.gguf F16.gguf OUT.gguf TYPE 2   (every tensor)

for TYPE in IQ4_NL IQ4_XS, written to tests/data/quant_<model>_iq4.json (the imatrix files are
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

TYPES = ["IQ4_NL", "IQ4_XS"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    llama_bin_arg(ap)
    q = str(Path(ap.parse_args().llama_bin) / "llama-quantize")
    readme: list[str] = []
    for short, f16, work in f16_of_each_model(q):
        imatrix = DATA / f"imatrix_{short}.gguf"
        payload = {"command": f"llama-quantize [--imatrix tests/data/{imatrix.name}] F16.gguf OUT.gguf TYPE 2 "
                              f"for TYPE in {' '.join(TYPES)} (F16.gguf from quant_{short}_F16.json)",
                   "plain": {}, "imatrix": {}}
        for t in TYPES:
            out = work / f"{short}.{t}.gguf"
            run([q, str(f16), str(out), t, "2"])
            payload["plain"][t] = describe(out)
            if short == "smol":
                r = subprocess.run([str(Path(q).parent / "llama-perplexity"), "-m", str(out), "-f",
                                    str(DATA / "ppl_text_austen.txt"), "-c", "512", "--chunks", "4", "-t", "2"],
                                   capture_output=True, text=True)
                ppl = re.search(r"Final estimate: PPL = ([0-9.]+)", r.stdout + r.stderr)
                payload.setdefault("ppl_4x512", {})[t] = float(ppl.group(1))
            run([q, "--imatrix", str(imatrix), str(f16), str(out), t, "2"])
            payload["imatrix"][t] = describe(out, whole=False)["tensors"]
            out.unlink()
        write(f"quant_{short}_iq4.json", payload, readme)
    print_readme(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
