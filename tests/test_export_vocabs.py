"""write_hf_tokenizer on llama.cpp's own vocabulary test files (models/vocab/ggml-vocab-*.gguf with .inp/.out,
fetched by models/fetch_vocabs.py): the exported tokenizer.json, read by the `tokenizers` package, or
tokenizer.model, read by sentencepiece, gives the .out ids for every .inp string (add_special_tokens=False,
as the .out files were made). One BPE vocabulary per supported pre-tokenizer family, and two SentencePiece
ones."""
from __future__ import annotations


import pytest

from ggufq.files.gguf_reader import GGUFFile
from ggufq.convert.vocab_to_hf import write_hf_tokenizer


SEP = "\n__ggml_vocab_test__\n"
VOCABS = {"qwen2": "tokenizer.json", "qwen35": "tokenizer.json", "llama-bpe": "tokenizer.json",
          "gpt-2": "tokenizer.json",
          "starcoder": "tokenizer.json", "refact": "tokenizer.json",
          "llama-spm": "tokenizer.model", "phi-3": "tokenizer.model"}


def cases(path):
    with open(f"{path}.inp", encoding="utf-8", newline="") as f:
        inputs = f.read().split(SEP)
    if inputs and inputs[-1].endswith(SEP.rstrip("\n")):
        inputs[-1] = inputs[-1][:-len(SEP.rstrip("\n"))]
    with open(f"{path}.out", encoding="utf-8") as f:
        outputs = f.read().split("\n")
    return [(s, [int(x) for x in o.split()]) for s, o in zip(inputs, outputs)]


@pytest.mark.parametrize("name", VOCABS)
def test_exported_tokenizer_matches_llama_cpp_vocab_tests(vocab_dir, tmp_path, name):
    path = vocab_dir / f"ggml-vocab-{name}.gguf"
    with GGUFFile(path) as g:
        files = write_hf_tokenizer(g, tmp_path)
    assert files[0] == VOCABS[name]
    if files[0] == "tokenizer.json":
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
        encode = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    else:
        import sentencepiece as spm
        encode = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model")).encode
    got = cases(path)
    assert len(got) >= 40
    bad = [(s, want, encode(s)) for s, want in got if encode(s) != want]
    assert not bad, f"{name}: {len(bad)}/{len(got)} differ, first {bad[0]!r}"


# qwen35 is left out: llama.cpp's ggml-vocab-qwen35.gguf carries Qwen1.5's vocabulary, on which the
# Qwen3.5 and Qwen2 regexes split the converter's check text identically, so the hash (the same ids as
# llama-tokenize gives on that file) names it qwen2, as it would the original tokenizer's.
@pytest.mark.parametrize("name", [n for n, f in VOCABS.items() if f == "tokenizer.json" and n != "qwen35"])
def test_converter_reads_back_the_same_vocabulary(vocab_dir, tmp_path, name):
    """ggufq's converter (llama.cpp's get_vocab_base + pre-tokenizer hash) on the exported tokenizer.json
    finds the GGUF's pre-tokenizer, tokens and token types again."""
    from ggufq.convert.vocab_from_hf import bpe_vocab
    with GGUFFile(vocab_dir / f"ggml-vocab-{name}.gguf") as g:
        write_hf_tokenizer(g, tmp_path)
        want = (list(g.get("tokenizer.ggml.tokens")), g.get("tokenizer.ggml.token_type").tolist(),
                g.get("tokenizer.ggml.pre"))
    tokens, types, pre = bpe_vocab(tmp_path, {"vocab_size": len(want[0])})
    assert pre == want[2]
    assert tokens == want[0]
    assert list(types) == want[1]
