"""A bounded fuzz suite (fixed seed): mutations of a real GGUF's header and metadata, and of a small
safetensors file, through `inspect`, `Model.load` (plus a tokenization and one token's forward) and
`quantize`, each case under a time limit and a memory cap. Every case must end in success or in one
GGUFQError line: no other exception (a traceback on the command line), no hang, no allocation sized by
an unchecked header field, no file left behind. Cases that once failed are replayed from
tests/data/fuzz_corpus/*.json (each names its mutation)."""
from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from ggufq.cli import main as cli_main
from ggufq.errors import GGUFQError
from ggufq.text.template_limits import memory_cap

from .conftest import DATA, SMOL

CORPUS = DATA / "fuzz_corpus"
SEED = 20261201
CASE_SECONDS = 20
CASE_MEMORY = 1 << 30


# ---- where a GGUF's length fields are (the GGUF spec, read here independently of ggufq's reader) ------

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_fields(head: bytes) -> dict[str, list[int]]:
    """Offsets of the u64 fields that size something, by where they are: "counts" (tensors, keys),
    "meta" (key and string lengths, array counts), "vocab" (the lengths of strings inside arrays: the
    tokens and merges), "tensor" (tensor dims and data offsets); "u32": the type fields; "end": the end of
    the tensor infos; "plain": the byte ranges outside the vocabulary arrays."""
    out = {"counts": [8, 16], "meta": [], "vocab": [], "tensor": [], "u32": [], "plain": [], "scalar": []}
    pos = 24
    n_tensors, n_kv = struct.unpack_from("<QQ", head, 8)
    plain_from = 0

    def string(where):
        nonlocal pos
        out[where].append(pos)
        n = struct.unpack_from("<Q", head, pos)[0]
        pos += 8 + n

    for _ in range(n_kv):
        string("meta")
        out["u32"].append(pos)
        vtype = struct.unpack_from("<I", head, pos)[0]
        pos += 4
        if vtype == 8:
            string("meta")
        elif vtype == 9:
            out["u32"].append(pos)
            sub = struct.unpack_from("<I", head, pos)[0]
            out["meta"].append(pos + 4)
            n = struct.unpack_from("<Q", head, pos + 4)[0]
            pos += 12
            if sub == 8:
                out["plain"].append((plain_from, pos))
                for _ in range(n):
                    string("vocab")
                plain_from = pos
            else:
                pos += _SCALAR[sub] * n
        else:
            if _SCALAR[vtype] in (4, 8) and vtype not in (6, 12):  # integer hyper-parameters and token ids
                out["scalar"].append([pos, _SCALAR[vtype]])
            pos += _SCALAR[vtype]
    for _ in range(n_tensors):
        string("meta")
        out["u32"].append(pos)
        nd = struct.unpack_from("<I", head, pos)[0]
        pos += 4
        out["tensor"] += [pos + 8 * i for i in range(nd)]
        pos += 8 * nd
        out["u32"].append(pos)
        out["tensor"].append(pos + 4)
        pos += 12
    out["plain"].append((plain_from, pos))
    out["end"] = [pos]
    return out


# ---- mutations: each a small JSON-able description, applied to the original bytes -------------------

EXTREMES_64 = [0, 1, 2, 255, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, (1 << 64) - 1]
EXTREMES_32 = [0, 1, 13, 31, 255, (1 << 31), (1 << 32) - 1]


def mutations(head_len: int, fields: dict, n: int, rng: random.Random) -> list[dict]:
    cases = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:  # bytes flipped, half of the time outside the vocabulary's strings
            if rng.random() < 0.5:
                spans = fields["plain"]
                where = [rng.randrange(*rng.choice(spans)) for _ in range(rng.randint(1, 4))]
            else:
                where = [rng.randrange(head_len) for _ in range(rng.randint(1, 4))]
            cases.append({"flip": sorted(where), "xor": rng.randrange(1, 256)})
        elif r < 0.4:
            cases.append({"truncate": rng.randrange(head_len)})
        elif r < 0.6:  # a hyper-parameter or a token id set to an extreme
            pos, size = rng.choice(fields["scalar"])
            cases.append({f"u{size * 8}": pos, "value": rng.choice(EXTREMES_64 if size == 8 else EXTREMES_32)})
        elif r < 0.85:
            group = rng.choice(["counts", "meta", "vocab", "tensor"])
            cases.append({"u64": rng.choice(fields[group]), "value": rng.choice(EXTREMES_64)})
        else:
            cases.append({"u32": rng.choice(fields["u32"]), "value": rng.choice(EXTREMES_32)})
    return cases


def apply(data: bytearray, case: dict) -> bytearray:
    data = bytearray(data)
    if "flip" in case:
        for p in case["flip"]:
            data[p] ^= case["xor"]
    if "truncate" in case:
        del data[case["truncate"]:]
    if "u64" in case:
        struct.pack_into("<Q", data, case["u64"], case["value"])
    if "u32" in case:
        struct.pack_into("<I", data, case["u32"], case["value"])
    return data


# ---- running one case ----------------------------------------------------------------------------------

class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout


@contextlib.contextmanager
def bounded():
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with memory_cap(CASE_MEMORY):
            yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def command(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli_main(argv)
    return rc, err.getvalue()


def failure_of(step, fn) -> str | None:
    """None if `fn` succeeds or fails with one GGUFQError line, else what went wrong."""
    try:
        with bounded():
            got = fn()
    except GGUFQError as e:
        return None if "\n" not in str(e) else f"{step}: a message of several lines"
    except CaseTimeout:
        return f"{step}: no answer within {CASE_SECONDS} s"
    except MemoryError:
        return f"{step}: an allocation over {CASE_MEMORY >> 20} MiB"
    except Exception as e:  # noqa: BLE001 (any other exception is the failure looked for)
        return f"{step}: {type(e).__name__}: {e}"
    if isinstance(got, tuple):  # a command: (status, stderr)
        rc, err = got
        if rc not in (0, 2) or "Traceback" in err or "internal error" in err \
                or (rc == 2 and len(err.strip().splitlines()) != 1):
            return f"{step}: exit {rc}, stderr {err[-300:]!r}"
    return None


def load_and_run(path):
    from ggufq.runtime.model import Model
    m = Model.load(path, n_ctx=32)
    ids = m.tokenizer.encode("Hello, world", add_special=True)
    m.eval(ids[:2] or [0])


def check_gguf(path: Path, out_dir: Path) -> list[str]:
    """inspect and quantize --dry-run on every case; the model loaded, a text tokenized and one token run
    when the file still reads (the others stop in the reader, whose answer inspect has checked)."""
    failures = [failure_of("inspect", lambda: command(["inspect", str(path)])),
                failure_of("quantize --dry-run", lambda: command(
                    ["quantize", "--allow-requantize", "--dry-run", str(path), str(out_dir / "q.gguf"), "Q4_K_M"]))]
    if command(["inspect", str(path)])[0] == 0:
        failures.append(failure_of("Model.load", lambda: load_and_run(path)))
    return [f for f in failures if f]


@pytest.fixture(scope="module")
def smol_head():
    with open(SMOL, "rb") as f:
        head = f.read(4 << 20)
    fields = gguf_fields(head)
    return head[:fields["end"][0]], fields, Path(SMOL).stat().st_size


def write_mutant(path: Path, head: bytes, size: int, case: dict) -> None:
    """The mutated header, then the original file's length as a hole (the tensor data's values do not
    matter to these steps; a sparse file costs nothing to write)."""
    data = apply(bytearray(head), case)
    with open(path, "wb") as f:
        f.write(data)
        if "truncate" not in case:
            f.truncate(size)


def test_fuzz_gguf_header_and_metadata(tmp_path, smol_head):
    head, fields, size = smol_head
    rng = random.Random(SEED)
    cases = mutations(len(head), fields, 80, rng)
    failures = []
    for case in cases:
        path = tmp_path / "mutant.gguf"
        write_mutant(path, head, size, case)
        failures += [f"{json.dumps(case)} {f}" for f in check_gguf(path, tmp_path)]
        path.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "files left behind"
    assert not failures, "\n".join(failures[:20])


def corpus_cases():
    return sorted(CORPUS.glob("*.json"))


@pytest.mark.parametrize("case_file", corpus_cases(), ids=lambda p: p.stem)
def test_fuzz_corpus(tmp_path, smol_head, case_file):
    head, _, size = smol_head
    case = json.loads(case_file.read_text())
    path = tmp_path / "mutant.gguf"
    write_mutant(path, head, size, case["mutation"])
    assert check_gguf(path, tmp_path) == []


# ---- safetensors --------------------------------------------------------------------------------------

def small_safetensors() -> bytes:
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((4, 8)).astype(np.float32),
               "b": rng.standard_normal((8,)).astype(np.float16)}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        b = t.tobytes()
        header[name] = {"dtype": {"float32": "F32", "float16": "F16"}[str(t.dtype)], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def test_fuzz_safetensors(tmp_path):
    from ggufq.files.safetensors import open_safetensors
    raw = small_safetensors()
    rng = random.Random(SEED + 1)
    failures = []
    for _ in range(200):
        r = rng.random()
        if r < 0.4:
            case = {"flip": sorted(rng.randrange(len(raw)) for _ in range(rng.randint(1, 3))),
                    "xor": rng.randrange(1, 256)}
        elif r < 0.6:
            case = {"truncate": rng.randrange(len(raw))}
        elif r < 0.8:
            case = {"u64": 0, "value": rng.choice(EXTREMES_64)}
        else:  # a digit of the JSON header changed: shapes and offsets that disagree
            digits = [i for i in range(8, len(raw) - 100) if chr(raw[i]).isdigit()]
            case = {"flip": [rng.choice(digits)], "xor": rng.choice([1, 2, 3, 8])}
        path = tmp_path / "model.safetensors"
        path.write_bytes(apply(bytearray(raw), case))

        def read():
            for t in open_safetensors(path).values():
                np.asarray(t.data).sum()
        fail = failure_of("safetensors", read)
        if fail:
            failures.append(f"{json.dumps(case)} {fail}")
    path.unlink()
    assert not failures, "\n".join(failures[:20])


def test_vocabulary_and_embedding_rows_must_agree(tmp_path):
    """A vocabulary longer or shorter than the embedding's rows is refused at load (not an index error
    in the middle of a run), in one line."""
    from .tiny_models import tiny_gguf
    for rows in (3, 6):
        path = tiny_gguf(tmp_path / f"rows{rows}.gguf", embd_rows=rows)
        rc, err = command(["run", "-m", str(path), "-p", "ab", "-n", "2"])
        assert rc == 2 and err.strip().endswith(f"the vocabulary has 4 tokens but token_embd.weight has {rows} rows")


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(40))
    import subprocess
    import sys
    plain = subprocess.run([sys.executable, "-m", "ggufq", "inspect", str(bad)], capture_output=True, text=True)
    debug = subprocess.run([sys.executable, "-m", "ggufq", "--debug", "inspect", str(bad)], capture_output=True,
                           text=True)
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "GGUFFormatError" in debug.stderr
