"""llama.cpp's own tokenizer tests (models/ggml-vocab-*.gguf with .inp/.out, from the llama.cpp source vendored
in the llama-cpp-python sdist; fetched by models/fetch_vocabs.py into models/vocab/).

Checked as llama.cpp's test-tokenizer-0 does: add_special=False, parse_special=False, ids equal.
Every vocabulary that has test cases is checked (SPM, byte-level BPE of 12 pre-tokenizers, Gemma 4's BPE,
BERT's WPM). Left out, and why: aquila, baichuan, gpt-neox, nomic-bert-moe ship no .inp/.out test cases in
llama.cpp (nothing to compare with).
"""
from __future__ import annotations


import pytest

from ggufq.files.gguf_reader import GGUFFile
from ggufq.text.tokenizer import Tokenizer


VOCABS = ["llama-bpe", "llama-spm", "qwen2", "qwen35", "gpt-2", "phi-3", "falcon", "mpt", "starcoder", "refact",
          "command-r", "deepseek-llm", "deepseek-coder", "gemma-4", "bert-bge"]
SEP = "\n__ggml_vocab_test__\n"


def read_cases(path):
    """The test-tokenizer-0 format: inputs separated by SEP, one line of space-separated ids per input."""
    with open(str(path) + ".inp", encoding="utf-8", newline="") as f:
        raw = f.read()
    with open(str(path) + ".out", encoding="utf-8") as f:
        outs = f.read().split("\n")
    inps, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            inps.append(raw[pos:])
            break
        inps.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    assert len(outs) >= len(inps)
    return [(s, [int(x) for x in o.split()]) for s, o in zip(inps, outs)]


@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vocab(vocab_dir, name):
    path = vocab_dir / f"ggml-vocab-{name}.gguf"
    with GGUFFile(path) as g:
        tok = Tokenizer.from_gguf(g)
    cases = read_cases(path)
    assert len(cases) >= 40
    bad = [(s, exp, got) for s, exp in cases
           if (got := tok.encode(s, add_special=False, parse_special=False)) != exp]
    assert not bad, f"{name}: {len(bad)}/{len(cases)} differ, first: {bad[0]!r}"


@pytest.mark.parametrize("name", ["gpt-2", "llama-bpe", "qwen2", "command-r"])
def test_own_bpe_merge_equals_tokenizers_package(vocab_dir, name):
    """Both BPE paths (the tokenizers package, and our merge loop used when the vocabulary is not
    consistent enough for it) give llama.cpp's ids."""
    path = vocab_dir / f"ggml-vocab-{name}.gguf"
    with GGUFFile(path) as g:
        assert Tokenizer.from_gguf(g)._hf is not None
        tok = Tokenizer.from_gguf(g, bpe_package=False)
    assert tok._hf is None
    for s, exp in read_cases(path):
        assert tok.encode(s, add_special=False, parse_special=False) == exp, s


@pytest.mark.parametrize("name", [v for v in VOCABS if v != "bert-bge"])
def test_decode_round_trip(vocab_dir, name):
    """decode(encode(text)) gives the text back, less llama.cpp's clean-up of spaces (" ?" -> "?", ...) for
    the vocabularies that ask for it; the leading space SPM's add_space_prefix added is dropped again."""
    from ggufq.text.detokenize import clean_spaces
    path = vocab_dir / f"ggml-vocab-{name}.gguf"
    with GGUFFile(path) as g:
        tok = Tokenizer.from_gguf(g)
    for s, _ in read_cases(path):
        want = clean_spaces(s.encode()).decode() if tok.clean_spaces else s
        assert tok.decode(tok.encode(s, add_special=False, parse_special=False)) == want, s


def test_clean_spaces_like_llama_cpp():
    from ggufq.text.detokenize import clean_spaces
    assert clean_spaces(b"Hello , world ! I 'm here . It ' s") == b"Hello, world! I'm here. It's"
    assert clean_spaces(b"they 're 've 'll 't 'd") == b"they're've 'll 't 'd"
    assert clean_spaces(b" ?") == b"?" and clean_spaces(b"") == b""
