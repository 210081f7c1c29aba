"""A validated, memory-mapped GGUF reader.

Nothing in the file is trusted before it is checked: every count and length is compared with the bytes
left before anything is allocated, strings must be UTF-8, tensors must be aligned, inside the data section,
of a known type, whole blocks, and must not overlap. Tensor data are numpy views into the mapping.

    g = GGUFFile("model.gguf")
    g.arch, g.get("llama.block_count"), g.tensors["token_embd.weight"].data
"""
from __future__ import annotations

import mmap
import struct
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from ggufq.files.ggml_types import block_geometry
from ggufq.errors import GGUFFormatError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 4

_SCALAR = {
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2", GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4", GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


class _StringArray:
    """A string array whose bounds are checked but whose elements are decoded on first use: quantizing
    copies a vocabulary as raw bytes and never needs its 50k-262k strings as str (decoding them was a
    tenth of a second of every `ggufq quantize`)."""
    __slots__ = ("buf", "starts", "what")

    def __init__(self, buf, starts: array, what: str):
        # each string's first byte, its length in the 8 bytes before it: 8 bytes a string, where a list
        # of (start, end) tuples took about 120 (50 MB for Llama 3's vocabulary and merges)
        self.buf, self.starts, self.what = buf, starts, what

    def __len__(self) -> int:
        return len(self.starts)

    def decode(self) -> list[str]:
        if len(self.starts) == 0:
            return []
        # the strings lie back to back, each after its 8-byte length: string i ends 8 bytes before string
        # i + 1 starts. The array's bytes copied once, then a slice and a decode a string (Llama 3's 280k
        # merges 151 -> 80 ms, SmolLM2's vocabulary 27 -> 19: a first token's time)
        starts = np.frombuffer(self.starts, np.uint64).astype(np.int64)
        lo, last = int(starts[0]), int(starts[-1])
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:] - 8
        ends[-1] = last + struct.unpack_from("<Q", self.buf, last - 8)[0]
        raw = bytes(self.buf[lo:int(ends[-1])])
        starts -= lo
        ends -= lo
        try:
            return [raw[a:b].decode("utf-8") for a, b in zip(starts.tolist(), ends.tolist())]
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"{self.what} is not valid UTF-8 ({e.reason})") from None


@dataclass
class KV:
    """One metadata entry: its GGUF value type (and element type for arrays) and a Python value.

    Scalars are Python numbers/bools, strings are str, string arrays are lists of str (decoded when
    first read), numeric arrays are numpy arrays (views into the file)."""
    key: str
    vtype: GGUFValueType
    raw: Any
    subtype: GGUFValueType | None = None
    span: tuple[int, int] | None = None  # file offsets of the value's bytes (its type field onwards)

    @property
    def value(self) -> Any:
        if isinstance(self.raw, _StringArray):
            self.raw = self.raw.decode()
        return self.raw


@dataclass
class TensorInfo:
    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # GGML order: shape[0] is the row length (ne0)
    offset: int             # absolute offset in the file
    nbytes: int
    data: np.ndarray = field(repr=False)  # numpy order (shape reversed); uint8 rows for block formats

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.shape[0]


class _Cursor:
    def __init__(self, buf, size: int, path: str):
        self.buf, self.size, self.pos, self.path = buf, size, 0, path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFFormatError(f"{self.path}: truncated or corrupt: {what} needs {n} bytes at offset "
                                  f"{self.pos}, file has {self.size - self.pos} left")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what + " length")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"{self.path}: {what} is not valid UTF-8 ({e.reason} at byte {e.start})")

    def array(self, n: int, dtype: str, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        self.need(n * itemsize, what)
        arr = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.pos)
        self.pos += n * itemsize
        return arr


class GGUFFile:
    def __init__(self, path: str | Path, in_memory: bool = False):
        """in_memory: read the whole file into private anonymous memory instead of mapping it. The
        kernel backs such memory with transparent huge pages, a page cache mapping has 4 KB pages: a decode
        step streaming a 1B model's weights read them at 14.6 GB/s mapped and 19.2 GB/s in memory (the
        TLB misses of 4 KB pages). The runtime asks for it when the file fits (Model.load)."""
        self.path = str(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise GGUFFormatError(f"{self.path}: cannot open: {e.strerror}") from None
        size = Path(self.path).stat().st_size
        if size < 24:
            self._file.close()
            raise GGUFFormatError(f"{self.path}: not a GGUF file (only {size} bytes)")
        if in_memory:
            data = np.empty(size, np.uint8)
            view = memoryview(data)
            for at in range(0, size, 1 << 26):
                if self._file.readinto(view[at:at + (1 << 26)]) != min(1 << 26, size - at):
                    self._file.close()
                    raise GGUFFormatError(f"{self.path}: the file shrank while it was read")
            self._mmap = view.toreadonly()     # tensor views read-only, as the mapping's are
        else:
            self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        self.kv: dict[str, KV] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._parse()

    # ---- public helpers -------------------------------------------------------------------------
    def get(self, key: str, default: Any = None, keep: bool = True) -> Any:
        """The value of a key; keep=False decodes a string array without keeping the list in the file's
        metadata (a tokenizer's 280k merges, read once)."""
        kv = self.kv.get(key)
        if kv is None:
            return default
        return kv.value if keep or not isinstance(kv.raw, _StringArray) else kv.raw.decode()

    def length(self, key: str) -> int | None:
        """An array's element count without decoding it (a vocabulary's 49k-262k strings: a load need
        not pay their decoding, 20-100 ms, to check the count); None if the key is missing or no array."""
        kv = self.kv.get(key)
        return len(kv.raw) if kv is not None and kv.vtype == GGUFValueType.ARRAY else None

    def require(self, key: str) -> Any:
        if key not in self.kv:
            raise GGUFFormatError(f"{self.path}: missing metadata key {key}")
        return self.kv[key].value

    @property
    def arch(self) -> str:
        return self.require("general.architecture")

    def arch_get(self, suffix: str, default: Any = None) -> Any:
        """`{arch}.{suffix}`, e.g. arch_get('block_count')."""
        return self.get(f"{self.arch}.{suffix}", default)

    def close(self) -> None:
        for t in self.tensors.values():
            t.data = None  # drop views so the mapping can close
        try:
            self._mmap.close() if isinstance(self._mmap, mmap.mmap) else self._mmap.release()
        except BufferError:
            pass  # views still alive elsewhere: the mapping closes when they go
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- parsing --------------------------------------------------------------------------------
    def _parse(self) -> None:
        c = _Cursor(self._mmap, self.size, self.path)
        magic = bytes(self._mmap[:4])
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"{self.path}: not a GGUF file (magic {magic!r})")
        c.pos = 4
        self.version = c.unpack("<I", "version")
        if self.version not in (2, 3):
            raise GGUFFormatError(f"{self.path}: GGUF version {self.version} is not supported (2 or 3)")
        n_tensors, n_kv = c.unpack("<QQ", "counts")
        # Smallest possible entries: a KV is 8 (key length) + 4 (type) + 1; a tensor info 8 + 4 + 8 + 4 + 8.
        if n_kv * 13 > self.size - c.pos or n_tensors * 32 > self.size - c.pos:
            raise GGUFFormatError(f"{self.path}: corrupt header: {n_tensors} tensors and {n_kv} keys "
                                  f"cannot fit in {self.size} bytes")
        for _ in range(n_kv):
            key = c.string("metadata key")
            if key in self.kv:
                raise GGUFFormatError(f"{self.path}: duplicate metadata key {key!r}")
            start = c.pos
            vtype = self._value_type(c, key)
            value, subtype = self._value(c, vtype, key, 0)
            self.kv[key] = KV(key, vtype, value, subtype, (start, c.pos))

        alignment = self.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"{self.path}: general.alignment {alignment!r} is not a power of two")
        self.alignment = alignment

        infos, seen = [], set()
        for _ in range(n_tensors):
            name = c.string("tensor name")
            if name in seen:
                raise GGUFFormatError(f"{self.path}: duplicate tensor name {name!r}")
            n_dims = c.unpack("<I", f"tensor {name} dims")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFFormatError(f"{self.path}: tensor {name} has {n_dims} dimensions (1 to 4 allowed)")
            shape = tuple(int(d) for d in c.array(n_dims, "<u8", f"tensor {name} shape"))
            raw_type = c.unpack("<I", f"tensor {name} type")
            offset = c.unpack("<Q", f"tensor {name} offset")
            infos.append((name, shape, raw_type, offset))
            seen.add(name)

        data_start = -(-c.pos // alignment) * alignment
        if infos and data_start > self.size:
            raise GGUFFormatError(f"{self.path}: truncated: no data section")
        self.data_offset = data_start
        spans = []
        for name, shape, raw_type, offset in infos:
            try:
                qtype = GGMLQuantizationType(raw_type)
                block, tsize = block_geometry(qtype)
            except (ValueError, KeyError):
                raise GGUFFormatError(f"{self.path}: tensor {name} has unknown type id {raw_type}") from None
            if any(d <= 0 or d >= 1 << 40 for d in shape):
                raise GGUFFormatError(f"{self.path}: tensor {name} has an invalid shape {list(shape)}")
            n = 1
            for d in shape:
                n *= d
            if n >= 1 << 48:
                raise GGUFFormatError(f"{self.path}: tensor {name} is implausibly large {list(shape)}")
            if shape[0] % block:
                raise GGUFFormatError(f"{self.path}: tensor {name}: row of {shape[0]} is not a whole number "
                                      f"of {qtype.name} blocks of {block}")
            nbytes = n // block * tsize
            if offset % alignment:
                raise GGUFFormatError(f"{self.path}: tensor {name} offset {offset} is not aligned to {alignment}")
            start = data_start + offset
            if start + nbytes > self.size:
                raise GGUFFormatError(f"{self.path}: truncated: tensor {name} needs bytes "
                                      f"{start}..{start + nbytes}, file has {self.size}")
            spans.append((start, start + nbytes, name))
            self.tensors[name] = TensorInfo(name, qtype, shape, start, nbytes,
                                            self._view(start, nbytes, qtype, shape))
        spans.sort()
        for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                raise GGUFFormatError(f"{self.path}: tensors {n0} and {n1} overlap")

    def raw_value(self, key: str) -> bytes:
        """The value of `key` as the file holds it (value type, then the value): copied as it is, a
        262k-string vocabulary needs no re-encoding."""
        start, end = self.kv[key].span
        return bytes(self._mmap[start:end])

    def _value_type(self, c: _Cursor, key: str) -> GGUFValueType:
        raw = c.unpack("<I", f"type of {key}")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFFormatError(f"{self.path}: key {key!r} has unknown value type {raw}") from None

    def _value(self, c: _Cursor, vtype: GGUFValueType, key: str, depth: int):
        if vtype == GGUFValueType.STRING:
            return c.string(f"value of {key}"), None
        if vtype in _SCALAR:
            v = c.array(1, _SCALAR[vtype], f"value of {key}")[0]
            return (bool(v) if vtype == GGUFValueType.BOOL else v.item()), None
        # ARRAY
        if depth >= MAX_ARRAY_DEPTH:
            raise GGUFFormatError(f"{self.path}: key {key!r}: arrays nested too deep")
        sub = self._value_type(c, key)
        n = c.unpack("<Q", f"length of {key}")
        if sub in _SCALAR:
            arr = c.array(n, _SCALAR[sub], f"array {key}")
            return (arr.astype(bool) if sub == GGUFValueType.BOOL else arr), sub
        # strings or nested arrays: each element takes at least 8 bytes
        c.need(n * 8, f"array {key}")
        if sub == GGUFValueType.STRING:
            strings = self._string_array(c, n, key)
            return (strings if depth == 0 else strings.decode()), sub
        return [self._value(c, sub, key, depth + 1)[0] for _ in range(n)], sub

    def _string_array(self, c: _Cursor, n: int, key: str) -> _StringArray:
        starts = None
        if n > 1024 and "numba" in sys.modules:   # the runtime or a quantizer: numba is loaded anyway
            from ggufq.kernels.gguf_strings import string_starts
            walked = np.empty(n, np.uint64)
            end = string_starts(np.frombuffer(self._mmap, np.uint8, count=self.size), c.pos, n, walked)
            if end >= 0:
                starts, c.pos = walked, end
        if starts is None:   # no numba, or a corrupt array: the reference walk says what is wrong
            starts = self._walk_strings(c, n, key)
        # a memoryview keeps the mapping open for a later decode, as tensor views do
        return _StringArray(memoryview(self._mmap), starts, f"{self.path}: an element of {key}")

    def _walk_strings(self, c: _Cursor, n: int, key: str) -> array:
        buf, size, pos = self._mmap, self.size, c.pos
        unpack = struct.Struct("<Q").unpack_from
        starts = array("Q")
        for _ in range(n):
            if pos + 8 > size:
                raise GGUFFormatError(f"{self.path}: truncated or corrupt: array {key} runs past the end")
            (length,) = unpack(buf, pos)
            pos += 8
            if length > size - pos:
                raise GGUFFormatError(f"{self.path}: truncated or corrupt: a string of {key} needs {length} "
                                      f"bytes at offset {pos}, file has {size - pos} left")
            starts.append(pos)
            pos += length
        c.pos = pos
        return starts

    def _view(self, start: int, nbytes: int, qtype: GGMLQuantizationType, shape) -> np.ndarray:
        raw = np.frombuffer(self._mmap, dtype=np.uint8, count=nbytes, offset=start)
        np_shape = tuple(reversed(shape))
        if qtype == GGMLQuantizationType.F32:
            return raw.view(np.float32).reshape(np_shape)
        if qtype == GGMLQuantizationType.F16:
            return raw.view(np.float16).reshape(np_shape)
        if qtype in (GGMLQuantizationType.BF16,):
            return raw.view(np.uint16).reshape(np_shape)
        if qtype in (GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32,
                     GGMLQuantizationType.I64, GGMLQuantizationType.F64):
            dt = {GGMLQuantizationType.I8: np.int8, GGMLQuantizationType.I16: np.int16,
                  GGMLQuantizationType.I32: np.int32, GGMLQuantizationType.I64: np.int64,
                  GGMLQuantizationType.F64: np.float64}[qtype]
            return raw.view(dt).reshape(np_shape)
        block, tsize = block_geometry(qtype)
        return raw.reshape(*np_shape[:-1], shape[0] // block * tsize)
