"""ggufq inspect FILE [--json]: what is in a GGUF file, at a glance or as JSON."""
from __future__ import annotations

import json
import sys

import numpy as np

from ggufq.files.gguf_reader import GGUFFile
from ggufq.text.chat_template import template_findings

_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
               "tokenizer.ggml.merges")


def configure(p):
    p.add_argument("file", help="GGUF file")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def summarize(g: GGUFFile) -> dict:
    arch = g.get("general.architecture", "?")
    hparams = {k[len(arch) + 1:]: _plain(kv.value) for k, kv in g.kv.items() if k.startswith(arch + ".")}
    general = {k: _plain(kv.value) for k, kv in g.kv.items() if k.startswith("general.")}
    tok = {
        "model": g.get("tokenizer.ggml.model"),
        "pre": g.get("tokenizer.ggml.pre"),
        "vocab_size": len(g.get("tokenizer.ggml.tokens") or []),
        "merges": len(g.get("tokenizer.ggml.merges") or []),
        "special": {k.split(".")[-1]: _plain(kv.value) for k, kv in g.kv.items()
                    if k.startswith("tokenizer.ggml.") and (k.endswith("_id") or k.startswith("tokenizer.ggml.add_"))},
        "chat_template": "tokenizer.chat_template" in g.kv,
        "chat_template_flags": template_findings(g.get("tokenizer.chat_template") or ""),
    }
    tensors = [{"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "bytes": t.nbytes}
               for t in g.tensors.values()]
    n_el = sum(t.n_elements for t in g.tensors.values())
    n_bytes = sum(t.nbytes for t in g.tensors.values())
    other = {k: _plain(kv.value) for k, kv in g.kv.items()
             if not k.startswith(("general.", "tokenizer.", arch + ".")) and k not in _BIG_ARRAYS}
    return {"file": g.path, "version": g.version, "architecture": arch, "general": general, "other": other,
            "hparams": hparams, "tokenizer": tok, "tensors": tensors,
            "totals": {"tensors": len(tensors), "parameters": n_el, "bytes": n_bytes,
                       "file_bytes": g.size, "bits_per_weight": 8 * n_bytes / max(n_el, 1)}}


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def run(args) -> int:
    with GGUFFile(args.file) as g:
        s = summarize(g)
    if args.json:
        json.dump(s, sys.stdout, indent=1)
        print()
        return 0
    w = sys.stdout.write
    kind = s["general"].get("general.type")
    if kind == "imatrix" or (s["architecture"] == "?" and kind):
        _print_other(s, kind, w)
        return 0
    if s["architecture"] == "?":
        w(f"{s['file']}: GGUF v{s['version']} without general.architecture: not a model file\n")
    else:
        w(f"{s['file']}: GGUF v{s['version']}, architecture {s['architecture']}\n")
    for k, v in {**s["general"], **{f"{s['architecture']}.{k}": v for k, v in s["hparams"].items()}}.items():
        w(f"  {k:<44} {_short(v)}\n")
    t = s["tokenizer"]
    w(f"tokenizer: {t['model']} (pre {t['pre']}), {t['vocab_size']} tokens, {t['merges']} merges, "
      f"chat template {'present' if t['chat_template'] else 'absent'}\n")
    for k, v in t["special"].items():
        w(f"  {k:<44} {v}\n")
    for flag in t["chat_template_flags"]:
        w(f"  chat template flagged: {flag}\n")
    w(f"{'tensor':<36} {'type':<6} {'shape':<20} {'bytes':>12}\n")
    for r in s["tensors"]:
        w(f"{r['name']:<36} {r['type']:<6} {str(r['shape']):<20} {r['bytes']:>12}\n")
    tot = s["totals"]
    w(f"{tot['tensors']} tensors, {tot['parameters'] / 1e6:.2f} M parameters, "
      f"{tot['bytes'] / 2**20:.2f} MiB of tensor data, {tot['bits_per_weight']:.3f} bits per weight\n")
    return 0


def _print_other(s: dict, kind: str, w) -> None:
    """A GGUF that holds no model: llama-imatrix's importance matrix (general.type = imatrix), or
    another general.type; its keys and tensor count, no tokenizer or bits per weight."""
    what = "an importance matrix (llama-imatrix), for quantize --imatrix" if kind == "imatrix" else f"a {kind} file"
    w(f"{s['file']}: GGUF v{s['version']}, {what}\n")
    for k, v in s["general"].items():
        w(f"  {k:<44} {_short(v)}\n")
    if kind == "imatrix":
        entries = [t["name"][:-len(".in_sum2")] for t in s["tensors"] if t["name"].endswith(".in_sum2")]
        w(f"  {'imatrix.chunk_count':<44} {s['other'].get('imatrix.chunk_count')}\n")
        w(f"  {'imatrix.chunk_size':<44} {s['other'].get('imatrix.chunk_size')}\n")
        w(f"  {'imatrix.datasets':<44} {_short(s['other'].get('imatrix.datasets'))}\n")
        w(f"{len(entries)} matrices with importances, e.g. {', '.join(entries[:3])}\n")
    else:
        w(f"{s['totals']['tensors']} tensors\n")


def _short(v):
    s = repr(v) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "..."
