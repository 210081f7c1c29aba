"""Safetensors without torch: a strict, memory-mapped reader and a streaming (optionally sharded) writer.

The format: an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`), then the raw
little-endian tensor data; offsets are relative to the end of the header.

    tensors = open_safetensors("model_dir")      # a file, a folder, or a model.safetensors.index.json
    dtype, shape, data = tensors["model.norm.weight"]   # data: lazy numpy view (BF16 as uint16 bits)

    write_safetensors_sharded(out_dir, specs, produce, max_shard_bytes=2 * 10**9)

Nothing in a file is trusted: the header length is bounded by the file size, the JSON must parse, every
entry must have a known dtype, a valid shape and offsets inside the data section that match
dtype x shape, and tensors must not overlap. Failures are GGUFQError (one line on the command line).
"""
from __future__ import annotations

import json
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from ggufq.errors import GGUFQError

# dtype name -> numpy dtype of the stored elements (BF16 is kept as its raw uint16 bits)
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class SafetensorsError(GGUFQError):
    """A safetensors file or index that is truncated, malformed or unsupported."""


class STensor(NamedTuple):
    dtype: str               # "F32", "F16" or "BF16"
    shape: tuple[int, ...]   # PyTorch order (row-major, last dimension fastest)
    data: np.ndarray         # lazy view into the mapping; BF16 as uint16 bits


# ---- reading ------------------------------------------------------------------------------------
def read_header(path: str | Path) -> tuple[int, dict]:
    """(offset of the data section, parsed header dict) for one .safetensors file, validated."""
    path = str(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER or 8 + n > size:
                raise SafetensorsError(f"{path}: corrupt header: header length {n} does not fit in a "
                                       f"file of {size} bytes")
            raw = f.read(n)
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot read: {e.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{path}: header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SafetensorsError(f"{path}: header is not valid JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    _validate(path, header, size - 8 - n)
    return 8 + n, header


def _validate(path: str, header: dict, data_size: int) -> None:
    meta = header.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict)
                             or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    spans = []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{path}: tensor {name!r}: entry must have exactly dtype, shape and "
                                   f"data_offsets")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {dtype!r}; supported: "
                                   f"{', '.join(DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
            raise SafetensorsError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_size):
            raise SafetensorsError(f"{path}: tensor {name!r}: data_offsets {offs!r} lie outside the "
                                   f"{data_size} bytes of data")
        n = 1
        for d in shape:
            n *= d
        need = n * DTYPES[dtype].itemsize
        if offs[1] - offs[0] != need:
            raise SafetensorsError(f"{path}: tensor {name!r}: {dtype} {shape} needs {need} bytes, "
                                   f"data_offsets span {offs[1] - offs[0]}")
        if need:
            spans.append((offs[0], offs[1], name))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise SafetensorsError(f"{path}: tensors {n0!r} and {n1!r} overlap")


def _open_file(path: Path) -> dict[str, STensor]:
    start, header = read_header(path)
    out: dict[str, STensor] = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else b""
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dt = DTYPES[e["dtype"]]
        b0, b1 = e["data_offsets"]
        n = (b1 - b0) // dt.itemsize
        arr = np.frombuffer(mm, dtype=dt, count=n, offset=start + b0) if n else np.empty(0, dt)
        out[name] = STensor(e["dtype"], tuple(e["shape"]), arr.reshape(e["shape"]))
    return out


def open_safetensors(path: str | Path) -> dict[str, STensor]:
    """name -> STensor(dtype, shape, lazy view) for a .safetensors file, a sharded index, or a folder
    (which holds model.safetensors or model.safetensors.index.json)."""
    p = Path(path)
    if p.is_dir():
        if (p / INDEX_NAME).is_file():
            p = p / INDEX_NAME
        elif (p / SINGLE_NAME).is_file():
            p = p / SINGLE_NAME
        else:
            found = sorted(p.glob("*.safetensors"))
            if len(found) != 1:
                raise SafetensorsError(f"{path}: no {SINGLE_NAME} or {INDEX_NAME}"
                                       + (f" (and {len(found)} other .safetensors files)" if found else ""))
            p = found[0]
    if not p.is_file():
        raise SafetensorsError(f"{p}: no such file")
    if p.name.endswith(".json"):
        return _open_index(p)
    return _open_file(p)


def _open_index(index_path: Path) -> dict[str, STensor]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SafetensorsError(f"{index_path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise SafetensorsError(f"{index_path}: not valid JSON ({e.msg} at byte {e.pos})") from None
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise SafetensorsError(f"{index_path}: weight_map must map tensor names to file names")
    folder = index_path.parent
    shards: dict[str, dict[str, STensor]] = {}
    out: dict[str, STensor] = {}
    for name, fname in wm.items():
        if Path(fname).name != fname or fname in (".", ".."):
            raise SafetensorsError(f"{index_path}: shard name {fname!r} is not a plain file name")
        if fname not in shards:
            shard = folder / fname
            if not shard.is_file():
                raise SafetensorsError(f"{index_path}: shard {fname} is missing")
            shards[fname] = _open_file(shard)
        if name not in shards[fname]:
            raise SafetensorsError(f"{index_path}: tensor {name!r} is not in {fname}")
        out[name] = shards[fname][name]
    for fname, tensors in shards.items():
        extra = set(tensors) - {n for n, f in wm.items() if f == fname}
        if extra:
            raise SafetensorsError(f"{index_path}: {fname} holds {len(extra)} tensor(s) the index does not "
                                   f"list, e.g. {sorted(extra)[0]!r}")
    return out


# ---- writing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                # "F32", "F16" or "BF16"
    shape: tuple[int, ...]    # PyTorch order

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.dtype].itemsize
        for d in self.shape:
            n *= d
        return n


def _header_bytes(specs: list[TensorSpec], metadata: dict[str, str] | None) -> bytes:
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [pos, pos + s.nbytes]}
        pos += s.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # data section 8-aligned, as the reference writer pads
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: str | Path, specs: list[TensorSpec],
                      produce: Callable[[TensorSpec], np.ndarray],
                      metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[TensorSpec], None] | None = None) -> int:
    """Write one file; `produce(spec)` is called once per tensor, in order, and returns either an array of
    spec.shape in spec.dtype (uint16 bits for BF16) or an iterable of such arrays (consecutive row
    blocks), so that only one tensor, or one block of it, is held at a time. Returns bytes written."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    if metadata is None:
        metadata = {"format": "pt"}
    head = _header_bytes(specs, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for s in specs:
            out = produce(s)
            want = DTYPES[s.dtype]
            if isinstance(out, np.ndarray) and tuple(out.shape) != tuple(s.shape):
                raise ValueError(f"{s.name}: produced shape {list(out.shape)}, expected {list(s.shape)}")
            written = 0
            for arr in ([out] if isinstance(out, np.ndarray) else out):
                if arr.dtype.newbyteorder("<") != want.newbyteorder("<"):
                    raise ValueError(f"{s.name}: produced {arr.dtype}, expected {s.dtype}")
                arr = np.ascontiguousarray(arr, dtype=want)
                f.write(memoryview(arr.reshape(-1).view(np.uint8)))
                written += arr.nbytes
            if written != s.nbytes:
                raise ValueError(f"{s.name}: produced {written} bytes, expected {s.nbytes}")
            if on_tensor:
                on_tensor(s)
        return f.tell()


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Group tensors in order into shards of at most max_shard_bytes (a bigger tensor goes alone)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


def shard_name(i: int, n: int) -> str:
    return SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def write_safetensors_sharded(out_dir: str | Path, specs: list[TensorSpec],
                              produce: Callable[[TensorSpec], np.ndarray], max_shard_bytes: int,
                              metadata: dict[str, str] | None = None,
                              on_tensor: Callable[[TensorSpec], None] | None = None) -> list[str]:
    """model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json as
    Hugging Face writes them. Returns the file names written."""
    out_dir = Path(out_dir)
    shards = plan_shards(specs, max_shard_bytes)
    files = []
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = shard_name(i, len(shards))
        write_safetensors(out_dir / fname, shard, produce, metadata, on_tensor)
        files.append(fname)
        weight_map.update({s.name: fname for s in shard})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(s.nbytes for s in specs)},
                 "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        files.append(INDEX_NAME)
    return files


_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'2GB' -> 2_000_000_000, '100MB', '512MiB', '1000000' (decimal units as Hugging Face uses)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise GGUFQError(f"cannot read size {text!r}: use e.g. 2GB, 500MB or 512MiB")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise GGUFQError(f"size {text!r} must be positive")
    return n
