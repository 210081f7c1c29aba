"""Tokenizer metadata from a Hugging Face folder, as llama.cpp's converter writes it.

BPE (tokenizer.json) through the `tokenizers` package; SentencePiece (tokenizer.model) through the
`sentencepiece` package; special tokens, merges, add_bos/add_eos and the chat template through gguf's
SpecialVocab, with the two rules llama.cpp's current converter adds on top of gguf 0.19's (see
`_special_vocab`).
"""
from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import gguf

from ggufq.errors import GGUFQError

# llama.cpp names a BPE pre-tokenizer by hashing the token ids of one check text (its
# convert_hf_to_gguf_update.py). These are the hashes of the tokenizers whose pre-tokenizers the
# ggufq runtime implements, with the repository each was computed from.
CHECK_TEXT = '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'
PRE_TOKENIZER_BY_HASH = {
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen/Qwen3-Embedding-0.6B
    "1444df51289cfa8063b96f0e62b1125440111bc79a52003ea14b6eac7016fd5f": "qwen35",  # openbmb/MiniCPM-V-4_6
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # evilfreelancer/ruGPT3XL
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",  # deepseek-ai/deepseek-llm-7b-base
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",  # deepseek-ai/deepseek-coder-6.7b-base
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",  # tiiuae/falcon-7b
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",  # bigcode/starcoder2-3b
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",  # stabilityai/stablelm-2-zephyr-1_6b
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",  # smallcloudai/Refact-1_6-base
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",  # CohereForAI/c4ai-command-r-v01
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen/Qwen1.5-7B
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",  # allenai/OLMo-1.7-7B-hf
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",  # microsoft/phi-2
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",  # Qwen/Qwen3.5-9B-Instruct
}


class TokenType:  # SentencePiece / GGUF token types
    NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def looks_special(token: str) -> bool:
    """Added tokens that some models forget to mark special (llama.cpp's does_token_look_special)."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise GGUFQError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _post_processor_adds(tokenizer_json: dict, tokenizer_config: dict) -> dict[str, bool]:
    """What the tokenizer's post-processor says about adding BOS/EOS. llama.cpp's current converter
    lets this win over tokenizer_config's add_*_token (gguf 0.19's SpecialVocab does the opposite)."""
    adds: dict[str, bool] = {}
    pp = tokenizer_json.get("post_processor") or {}
    bos = tokenizer_config.get("bos_token") or tokenizer_config.get("cls_token")
    if isinstance(bos, dict):
        bos = bos.get("content")
    for proc in pp.get("processors", [pp]) if pp else []:
        kind = proc.get("type")
        if kind == "ByteLevel":
            adds.setdefault("bos", False)
            adds.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            adds.update(bos=True, eos=True, sep=True)
        elif kind == "TemplateProcessing":
            single = proc.get("single", [])
            if len(single) > 1 and (first := single[0].get("SpecialToken", {}).get("id")):
                adds["bos"] = first == bos
    return adds


def special_vocab(folder: Path, n_vocab: int | None = None, load_merges: bool = False) -> gguf.SpecialVocab:
    sv = gguf.SpecialVocab(folder, load_merges=load_merges, n_vocab=n_vocab)
    tj, tc = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if tj.is_file():
        sv.add_special_token.update(_post_processor_adds(load_json(tj), load_json(tc) if tc.is_file() else {}))
    return sv


def _clean_up_tokenization(s: str) -> str:
    # transformers' clean_up_tokenization, applied by its decode() when the tokenizer config asks
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        s = s.replace(a, b)
    return s


def bpe_vocab(folder: Path, hparams: dict) -> tuple[list[str], list[int], str]:
    """Tokens, token types and pre-tokenizer name of a tokenizer.json (llama.cpp's get_vocab_base)."""
    from tokenizers import Tokenizer
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GGUFQError(f"{folder}: no tokenizer.json or tokenizer.model")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers package raises plain Exceptions for bad files
        raise GGUFQError(f"{path}: cannot load: {str(e).splitlines()[0]}") from None
    config = load_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    vocab = tok.get_vocab(with_added_tokens=True)
    added = tok.get_added_tokens_decoder()
    added_contents = {t.content for t in added.values()}
    vocab_size = hparams.get("vocab_size", len(vocab))
    if max(vocab.values()) >= vocab_size:
        raise GGUFQError(f"{path}: token id {max(vocab.values())} is past vocab_size {vocab_size}")
    chkhsh = sha256(str(tok.encode(CHECK_TEXT).ids).encode()).hexdigest()
    pre = PRE_TOKENIZER_BY_HASH.get(chkhsh)
    if pre is None:
        raise GGUFQError(f"{path}: BPE pre-tokenizer not recognised (hash {chkhsh}); supported: "
                         + ", ".join(sorted(set(PRE_TOKENIZER_BY_HASH.values()))))
    reverse = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added_contents:
            if not added[i].normalized:
                before = token
                token = tok.decode(tok.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
                if config.get("clean_up_tokenization_spaces"):
                    token = _clean_up_tokenization(token)
                token = token if token else before
            if added[i].special or looks_special(token):
                types.append(TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(token)
    return tokens, types, pre


def sentencepiece_vocab(folder: Path, hparams: dict) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types of a tokenizer.model (llama.cpp's _create_vocab_sentencepiece)."""
    from sentencepiece import SentencePieceProcessor
    path = folder / "tokenizer.model"
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise GGUFQError(f"{path}: cannot load SentencePiece model: {str(e).splitlines()[0]}") from None
    vocab_size = hparams.get("vocab_size_per_layer_input") or hparams.get("vocab_size") or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [TokenType.UNUSED] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        kind = TokenType.NORMAL
        if sp.IsUnknown(i):
            kind = TokenType.UNKNOWN
        elif sp.IsControl(i):
            kind = TokenType.CONTROL
        elif sp.IsUnused(i):
            kind = TokenType.UNUSED
        elif sp.IsByte(i):
            kind = TokenType.BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), kind
    if (folder / "added_tokens.json").is_file():
        for content, i in load_json(folder / "added_tokens.json").items():
            if i < vocab_size:
                tokens[i], scores[i], types[i] = content.encode(), -1000.0, TokenType.USER_DEFINED
    if (folder / "tokenizer_config.json").is_file():
        decoder = load_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {})
        for key, data in decoder.items():
            i, content = int(key), data["content"]
            if i >= vocab_size:
                continue
            if data.get("special") or looks_special(content):
                types[i] = TokenType.CONTROL
            else:
                content = content.replace("\u2581", " ")
                types[i] = TokenType.USER_DEFINED
            scores[i], tokens[i] = -1000.0, content.encode()
    return tokens, scores, types


class HFVocab:
    """A folder's vocabulary, read once, written into a GGUFWriter later (after the hyper-parameters,
    where llama.cpp's converter writes it)."""

    def __init__(self, folder: Path, hparams: dict):
        self.folder = folder
        if (folder / "tokenizer.model").is_file():
            self.model, self.pre = "llama", "default"
            self.tokens, self.scores, self.types = sentencepiece_vocab(folder, hparams)
        else:
            self.model, self.scores = "gpt2", None
            self.tokens, self.types, self.pre = bpe_vocab(folder, hparams)

    def add_to(self, w) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        if self.model == "gpt2":
            special_vocab(self.folder, load_merges=True).add_to_gguf(w, quiet=True)
        else:
            special_vocab(self.folder, n_vocab=len(self.tokens)).add_to_gguf(w, quiet=True)
