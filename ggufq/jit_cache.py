"""Drop every cached numba kernel of ggufq when any of the sources they are compiled from changes.

numba keys a function's cache entry by the text of the function's own file only. Our kernels inline
code from other modules (the LLVM intrinsics of kernels/dot_simd.py, dot_vnni.py and gemm_q8.py, the row
kernels the decode step unrolls, the ops it calls), so after an upgrade or an edit that touches only
those, numba would load the old machine code and run it. Here the sources of every package that keeps a
numba cache are hashed together; when the hash differs from the one saved beside the kernels' cache, the
cached kernels (and the warm-up's stamps) of all of them are deleted, and `make compile` or the first
command compiles them again. Hashing ~1 MB of sources costs ~2 ms a process.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the folders with numba functions (cache=True): their __pycache__ holds the compiled kernels
CACHED = [ROOT / "kernels", ROOT / "ggufq" / "runtime", ROOT / "ggufq" / "files", ROOT / "ggufq" / "quantize"]
STAMP = ROOT / "kernels" / "__pycache__" / "ggufq-sources.sha1"


def sources_digest() -> str:
    h = hashlib.sha1()
    for folder in CACHED:
        for p in sorted(folder.glob("*.py")):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def drop_stale_caches() -> None:
    try:
        digest = sources_digest()
        if STAMP.read_text() == digest:
            return
    except FileNotFoundError:
        pass
    except OSError:
        return  # sources or cache unreadable: leave it to numba
    for folder in CACHED:
        cache = folder / "__pycache__"
        for pattern in ("*.nbi", "*.nbc", "*.stamp", "*.row_kernels.*"):
            for f in cache.glob(pattern):
                try:
                    f.unlink()
                except OSError:
                    pass
    try:
        STAMP.parent.mkdir(exist_ok=True)
        tmp = STAMP.with_name(f"{STAMP.name}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, STAMP)
    except OSError:
        pass  # a read-only install: numba does not cache there either
