"""Read llama.cpp importance-matrix files as llama-quantize does (`common/imatrix-loader.cpp`).

Two formats:
* GGUF (current llama-imatrix): tensors `<name>.in_sum2` and `<name>.counts` (F32), keys
  `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`. The importance of column i of expert j
  is in_sum2[j, i] / round(counts[j]) (1.0 where the count is 0).
* legacy `.dat`: int32 n_entries, then per entry: int32 name length, name, int32 ncall, int32 nval,
  nval float32 sums; optionally int32 chunk count, int32 dataset length, dataset. Values are sums / ncall.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufq.errors import GGUFQError


@dataclass
class ImatrixData:
    path: str
    entries: dict[str, np.ndarray] = field(default_factory=dict)  # tensor name -> float32 importances
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False
    # the file's own numbers, for merging (ggufq imatrix --in-file): per tensor, the sums of squares
    # float32[n_mat * k] and the token counts float32[n_mat], as llama-imatrix keeps them
    raw: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray | None:
        return self.entries.get(name)


def load_imatrix(path: str | Path) -> ImatrixData:
    path = str(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise GGUFQError(f"{path}: cannot open imatrix: {e.strerror}") from None
    data = _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    for name, v in data.entries.items():
        if not np.isfinite(v).all():
            raise GGUFQError(f"{path}: imatrix contains non-finite values for {name}")
    return data


def _load_gguf(path: str) -> ImatrixData:
    from ggufq.files.gguf_reader import GGUFFile

    with GGUFFile(path) as g:
        if g.tensors == {}:
            raise GGUFQError(f"{path}: no data in imatrix file")
        keys = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
        if not all(k in g.kv for k in keys):
            raise GGUFQError(f"{path}: missing imatrix metadata ({', '.join(keys)})")
        out = ImatrixData(path, datasets=list(g.get("imatrix.datasets") or []),
                          chunk_count=int(g.get("imatrix.chunk_count")),
                          chunk_size=int(g.get("imatrix.chunk_size")))
        pairs: dict[str, list] = {}
        for name, t in g.tensors.items():
            for suffix, slot in ((".in_sum2", 0), (".counts", 1)):
                if name.endswith(suffix):
                    pairs.setdefault(name[: -len(suffix)], [None, None])[slot] = t
        for name, (sums, counts) in sorted(pairs.items()):
            if sums is None or counts is None:
                raise GGUFQError(f"{path}: mismatched sums and counts for {name}")
            if sums.qtype.name != "F32" or counts.qtype.name != "F32":
                raise GGUFQError(f"{path}: sums and counts for {name} must be F32")
            s = np.array(sums.data, dtype=np.float32).reshape(-1)
            c = np.array(counts.data, dtype=np.float32).reshape(-1)
            n = c.size
            if n == 0 or s.size % n:
                raise GGUFQError(f"{path}: {name}: {s.size} sums cannot be split into {n} experts")
            # std::lround: half away from zero
            ci = np.where(c >= 0, np.floor(c.astype(np.float64) + 0.5), np.ceil(c.astype(np.float64) - 0.5))
            cf = ci.astype(np.float32)
            s = s.reshape(n, -1)
            with np.errstate(divide="ignore", invalid="ignore"):
                e = np.where(cf[:, None] > 0, s / np.where(cf > 0, cf, np.float32(1))[:, None], np.float32(1))
            out.entries[name] = e.astype(np.float32).reshape(-1)
            out.raw[name] = (s.reshape(-1).copy(), c.copy())
    return out


def _load_legacy(path: str) -> ImatrixData:
    raw = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > len(raw):
            raise GGUFQError(f"{path}: truncated imatrix file")
        v = struct.unpack_from(fmt, raw, pos)
        pos += n
        return v[0]

    n_entries = take("<i")
    if n_entries < 1:
        raise GGUFQError(f"{path}: no data in imatrix file")
    out = ImatrixData(path, is_legacy=True)
    for i in range(n_entries):
        ln = take("<i")
        if ln < 0 or pos + ln > len(raw):
            raise GGUFQError(f"{path}: failed reading name for entry {i + 1}")
        name = raw[pos:pos + ln].split(b"\0")[0].decode("utf-8", "replace")
        pos += ln
        ncall = take("<i")
        nval = take("<i")
        if nval < 1 or pos + 4 * nval > len(raw):
            raise GGUFQError(f"{path}: failed reading values for entry {i}")
        sums = np.frombuffer(raw, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        out.entries[name] = (sums / np.float32(ncall)).astype(np.float32) if ncall > 0 else sums.copy()
        out.raw[name] = (sums, np.array([ncall], np.float32))  # scaled by the chunk size when merged
    if pos + 4 <= len(raw):
        out.chunk_count = take("<i")
        if pos + 4 <= len(raw):
            ln = take("<i")
            if ln > 0 and pos + ln <= len(raw):
                out.datasets.append(raw[pos:pos + ln].split(b"\0")[0].decode("utf-8", "replace"))
    return out
