"""The tokenizer against llama-tokenize on the two real models (tests/data/tok_fixtures.json, made by
tools/make_tok_fixtures.py), the tokenize command's output byte for byte, and streaming decoding."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from functools import lru_cache

import pytest

from ggufq.text.tokenizer import Tokenizer

from .conftest import DATA, GEMMA, ROOT, SMOL

FIX = json.loads((DATA / "tok_fixtures.json").read_text(encoding="utf-8"))
PATHS = {"SmolLM2-135M-Instruct.Q4_1.gguf": SMOL, "gemma-3-270m-q4_k_m.gguf": GEMMA}


@lru_cache(maxsize=None)
def tok(name: str) -> Tokenizer:
    return Tokenizer.from_path(PATHS[name])


@pytest.mark.parametrize("name", sorted(FIX["models"]))
def test_ids_equal_llama_tokenize(name):
    t = tok(name)
    bad = []
    for c in FIX["models"][name]:
        got = t.encode(c["text"], add_special=t.add_bos and "--no-bos" not in c["args"],
                       parse_special="--no-parse-special" not in c["args"])
        if got != c["ids"]:
            bad.append((c["text"], c["args"], c["ids"], got))
    assert not bad, f"{len(bad)} of {len(FIX['models'][name])} differ, first: {bad[0]}"


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "ggufq", "tokenize", *args], capture_output=True,
                          input=stdin, cwd=ROOT, check=False)


@pytest.mark.parametrize("name", sorted(FIX["models"]))
def test_tokenize_command_prints_like_llama_tokenize(name, tmp_path):
    cases = [c for c in FIX["models"][name] if "plain_stdout_b64" in c]
    assert cases
    for c in cases[:2]:
        p = tmp_path / "prompt.txt"
        p.write_bytes(c["text"].encode("utf-8"))
        r = _cli("-m", PATHS[name], "-f", str(p), "--no-escape")
        assert r.returncode == 0, r.stderr
        assert r.stdout == base64.b64decode(c["plain_stdout_b64"])
        r = _cli("-m", PATHS[name], "-f", str(p), "--no-escape", "--ids")
        assert r.stdout.decode() == "[" + ", ".join(map(str, c["ids"])) + "]\n"


def test_tokenize_command_escapes_and_flags():
    # -p processes escapes like llama-tokenize: "\\n" in the argument is a newline
    r = _cli("-m", SMOL, "-p", "<|im_start|>user\\nhi", "--ids")
    assert r.stdout == b"[1, 4093, 198, 6004]\n"
    r = _cli("-m", SMOL, "-p", "<|im_start|>", "--ids", "--no-parse-special")
    assert r.stdout.decode() == str(tok("SmolLM2-135M-Instruct.Q4_1.gguf").encode("<|im_start|>", parse_special=False)) + "\n"
    r = _cli("-m", GEMMA, "-p", "Hi", "--ids", "--no-bos")
    assert r.stdout == b"[10979]\n"
    r = _cli("-m", GEMMA, "-p", "Hi", "--ids")
    assert r.stdout == b"[2, 10979]\n"
    r = _cli("-m", str(ROOT / "does-not-exist.gguf"), "-p", "x")
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1


def test_properties_and_eog():
    s = tok("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (s.n_vocab, s.bos_id, s.eos_id, s.add_bos) == (49152, 1, 2, False)
    assert s.is_eog(2) and s.is_eog(0) and not s.is_eog(1)  # <|im_end|>, <|endoftext|>; not <|im_start|>
    g = tok("gemma-3-270m-q4_k_m.gguf")
    assert (g.n_vocab, g.bos_id, g.eos_id, g.add_bos) == (262144, 2, 1, True)
    eot = g.token_to_id["<end_of_turn>"]
    assert g.is_eog(eot) and g.is_eog(1) and not g.is_eog(g.token_to_id["<start_of_turn>"])
    assert g.token_to_piece(eot) == b"<end_of_turn>" and g.token_to_piece(eot, special=False) == b""


@pytest.mark.parametrize("name", sorted(FIX["models"]))
def test_stream_decoding_splits_utf8_correctly(name):
    t = tok(name)
    text = "emoji 🚀🔥 CJK 你好世界 hieroglyphs 𓀀𓀁 ꙮ accents éàü — done"
    ids = t.encode(text, add_special=False)
    pieces = [t.token_to_piece(i) for i in ids]
    assert any(not _valid_utf8(p) for p in pieces)  # some characters are split over tokens (byte fallback)
    dec = t.stream_decoder()
    out = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(out) == text
    assert all("\ufffd" not in p for p in out)
    assert t.decode(ids) == text


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.parametrize("name", sorted(FIX["models"]))
def test_long_text_ids_equal_llama_tokenize(name):
    import hashlib
    t = tok(name)
    for c in FIX["long_texts"][name]:
        text = (DATA / c["file"]).read_bytes().decode("utf-8")
        ids = t.encode(text)
        assert len(ids) == c["n"]
        assert hashlib.sha256(json.dumps(ids).encode()).hexdigest() == c["sha256"]
