"""Hugging Face tokenizer files rebuilt from a GGUF's `tokenizer.ggml.*` metadata.

    write_hf_tokenizer(GGUFFile("model.gguf"), out_dir)   # -> names of the files written

- `tokenizer.ggml.model == "gpt2"` (byte-level BPE): `tokenizer.json` with the vocabulary, the merges,
  the added (CONTROL / USER_DEFINED) tokens and the normalizer / pre-tokenizer / post-processor / decoder
  of the `tokenizer.ggml.pre` family, so that the `tokenizers` package splits text exactly as the original
  did (and llama.cpp's converter, which hashes the ids of a probe text, detects the same pre-tokenizer).
- `tokenizer.ggml.model == "llama"` (SentencePiece): `tokenizer.model`, a SentencePiece ModelProto built
  from the tokens, scores and types, with an identity normalizer that escapes spaces as U+2581 and adds
  a dummy prefix only when `add_space_prefix` says so, byte fallback when byte tokens exist.
- both: `tokenizer_config.json` (special tokens, add_bos/add_eos, chat template, added_tokens_decoder)
  and `special_tokens_map.json`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ggufq.errors import GGUFQError

# GGUF token types (also SentencePiece's ModelProto.SentencePiece.Type numbers)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPM_SPACE = "\u2581"

SPECIAL_KINDS = {  # tokenizer_config key prefix -> GGUF key
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
    "sep": "tokenizer.ggml.seperator_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
    "cls": "tokenizer.ggml.cls_token_id",
    "mask": "tokenizer.ggml.mask_token_id",
}

# ---- byte-level BPE pre-tokenizer families ------------------------------------------------------
_BYTELEVEL_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_BYTELEVEL_NOREGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                      "use_regex": False}
_QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
              r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def _seq(*pre: dict) -> dict:
    return {"type": "Sequence", "pretokenizers": list(pre)}


# tokenizer.ggml.pre -> (normalizer, pre_tokenizer, ignore_merges), as the models' own tokenizer.json
# files configure them (GPT-2 / StarCoder / SmolLM / Qwen2 / Llama 3 families).
BPE_FAMILIES: dict[str, tuple[dict | None, dict, bool]] = {
    "gpt-2": (None, _BYTELEVEL_REGEX, False),
    "smollm": (None, _seq({"type": "Digits", "individual_digits": True}, _BYTELEVEL_REGEX), False),
    "starcoder": (None, _seq({"type": "Digits", "individual_digits": True}, _BYTELEVEL_REGEX), False),
    "refact": (None, _seq({"type": "Digits", "individual_digits": True}, _BYTELEVEL_REGEX), False),
    "qwen2": ({"type": "NFC"}, _seq(_split(_QWEN2_RE), _BYTELEVEL_NOREGEX), False),
    "deepseek-r1-qwen": ({"type": "NFC"}, _seq(_split(_QWEN2_RE), _BYTELEVEL_NOREGEX), False),
    "qwen35": (None, _seq(_split(_QWEN35_RE), _BYTELEVEL_NOREGEX), False),
    "llama-bpe": (None, _seq(_split(_LLAMA3_RE), {**_BYTELEVEL_NOREGEX, "trim_offsets": True}), True),
}
BPE_FAMILIES["llama3"] = BPE_FAMILIES["llama-v3"] = BPE_FAMILIES["llama-bpe"]
# families for which llama.cpp adds a BOS when the GGUF has no tokenizer.ggml.add_bos_token
BPE_ADD_BOS_BY_DEFAULT = {"llama-bpe", "llama3", "llama-v3"}


class Vocab:
    """The tokenizer.ggml.* metadata of one GGUF, checked for consistency."""

    def __init__(self, g):
        self.path = g.path
        self.model = g.get("tokenizer.ggml.model")
        if self.model is None:
            raise GGUFQError(f"{g.path}: no tokenizer in this GGUF (tokenizer.ggml.model is missing)")
        self.pre = g.get("tokenizer.ggml.pre") or "default"
        self.tokens: list[str] = list(g.require("tokenizer.ggml.tokens"))
        n = len(self.tokens)
        types = g.get("tokenizer.ggml.token_type")
        self.types = (np.full(n, NORMAL, np.int32) if types is None else np.asarray(types, np.int32))
        scores = g.get("tokenizer.ggml.scores")
        self.scores = None if scores is None else np.asarray(scores, np.float32)
        self.merges: list[str] = list(g.get("tokenizer.ggml.merges") or [])
        if len(self.types) != n or (self.scores is not None and len(self.scores) != n):
            raise GGUFQError(f"{g.path}: tokenizer arrays disagree: {n} tokens, {len(self.types)} types"
                             + ("" if self.scores is None else f", {len(self.scores)} scores"))
        self.special: dict[str, int] = {}
        for kind, key in SPECIAL_KINDS.items():
            v = g.get(key)
            if v is not None:
                if not isinstance(v, int) or not 0 <= v < n:
                    raise GGUFQError(f"{g.path}: {key} = {v!r} is not a token id (vocabulary of {n})")
                self.special[kind] = v
        self.add = {k: g.get(f"tokenizer.ggml.add_{k}_token") for k in ("bos", "eos", "sep")}
        # absent keys mean llama.cpp's defaults: SentencePiece and Llama-3-style BPE add a BOS, none an EOS
        if self.add["bos"] is None:
            self.add["bos"] = self.model == "llama" or self.pre in BPE_ADD_BOS_BY_DEFAULT
        if self.add["eos"] is None:
            self.add["eos"] = False
        self.add_space_prefix = g.get("tokenizer.ggml.add_space_prefix")
        self.chat_template = g.get("tokenizer.chat_template")
        self.named_templates = {k[len("tokenizer.chat_template."):]: kv.value for k, kv in g.kv.items()
                                if k.startswith("tokenizer.chat_template.")}
        self.context_length = g.get(f"{g.get('general.architecture')}.context_length")
        self.eot = g.get("tokenizer.ggml.eot_token_id")

    def check(self) -> None:
        """Fail now (before any file is written) if this vocabulary cannot be exported."""
        if self.model == "gpt2" and self.pre not in BPE_FAMILIES:
            raise GGUFQError(f"{self.path}: pre-tokenizer {self.pre!r} is not supported for export; supported: "
                             + ", ".join(sorted(BPE_FAMILIES)))
        if self.model not in ("gpt2", "llama"):
            raise GGUFQError(f"{self.path}: tokenizer model {self.model!r} cannot be exported (gpt2 BPE and "
                             f"llama SentencePiece can)")

    def content(self, i: int) -> str:
        """An added token's text as Hugging Face stores it. llama.cpp's converter stored SentencePiece
        user-defined pieces pre-normalized ('▁▁' as two spaces): give them back their U+2581."""
        t = self.tokens[i]
        if self.model == "llama" and self.types[i] == USER_DEFINED:
            return t.replace(" ", SPM_SPACE)
        return t

    def normalized(self, i: int) -> bool:
        """SentencePiece user-defined pieces are matched in normalized text (spaces already U+2581)."""
        return bool(self.model == "llama" and self.types[i] == USER_DEFINED and SPM_SPACE in self.content(i))

    def added_ids(self) -> list[int]:
        """CONTROL and USER_DEFINED tokens; for BPE also the special tokens, which llama.cpp's converter
        finds by content among tokenizer.json's added tokens. (A SentencePiece unknown or byte token
        listed there would come back as CONTROL.)"""
        ids = set(np.nonzero((self.types == CONTROL) | (self.types == USER_DEFINED))[0].tolist())
        if self.model == "gpt2":
            ids |= set(self.special.values())
        return sorted(ids)


# ---- tokenizer.json (byte-level BPE) ------------------------------------------------------------
def _added_token(v: Vocab, i: int) -> dict:
    return {"id": i, "content": v.content(i), "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": bool(v.types[i] != USER_DEFINED)}


def _template_processor(v: Vocab) -> dict | None:
    bos = v.special.get("bos") if v.add.get("bos") else None
    eos = v.special.get("eos") if v.add.get("eos") else None
    if bos is None and eos is None:
        return None
    single, pair, specials = [], [], {}
    for i in (bos,):
        if i is not None:
            single.append({"SpecialToken": {"id": v.tokens[i], "type_id": 0}})
            pair.append({"SpecialToken": {"id": v.tokens[i], "type_id": 0}})
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    pair.append({"Sequence": {"id": "A", "type_id": 0}})
    if eos is not None:
        single.append({"SpecialToken": {"id": v.tokens[eos], "type_id": 0}})
        pair.append({"SpecialToken": {"id": v.tokens[eos], "type_id": 0}})
    if bos is not None:
        pair.append({"SpecialToken": {"id": v.tokens[bos], "type_id": 1}})
    pair.append({"Sequence": {"id": "B", "type_id": 1}})
    if eos is not None:
        pair.append({"SpecialToken": {"id": v.tokens[eos], "type_id": 1}})
    for i in (bos, eos):
        if i is not None:
            specials[v.tokens[i]] = {"id": v.tokens[i], "ids": [i], "tokens": [v.tokens[i]]}
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


def tokenizer_json(v: Vocab) -> dict:
    if v.model != "gpt2":
        raise GGUFQError(f"{v.path}: tokenizer.json is written for byte-level BPE (gpt2) vocabularies, "
                         f"this one is {v.model!r}")
    v.check()
    normalizer, pre_tokenizer, ignore_merges = BPE_FAMILIES[v.pre]
    vocab: dict[str, int] = {}
    for i, t in enumerate(v.tokens):
        if v.types[i] == UNUSED and t.startswith("[PAD"):
            continue  # the converter's filler for ids the tokenizer does not define: it makes them again
        if t in vocab:
            raise GGUFQError(f"{v.path}: token {t!r} appears twice (ids {vocab[t]} and {i})")
        vocab[t] = i
    merges = []
    for m in v.merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise GGUFQError(f"{v.path}: merge {m!r} is not two tokens separated by one space")
        merges.append(parts)
    byte_level_post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                       "use_regex": False}
    template = _template_processor(v)
    post = byte_level_post if template is None else {"type": "Sequence",
                                                      "processors": [byte_level_post, template]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(v, i) for i in v.added_ids()],
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
    }


# ---- tokenizer.model (SentencePiece) ------------------------------------------------------------
def _looks_like_bpe_scores(v: Vocab) -> bool:
    """SentencePiece BPE models score piece i as -rank; unigram models store log-probabilities."""
    normal = v.scores[v.types == NORMAL]
    return normal.size == 0 or bool(np.all(normal == np.round(normal)) and np.all(normal <= 0))


def sentencepiece_model(v: Vocab) -> bytes:
    if v.model != "llama":
        raise GGUFQError(f"{v.path}: tokenizer.model is written for SentencePiece (llama) vocabularies, "
                         f"this one is {v.model!r}")
    from sentencepiece import sentencepiece_model_pb2 as pb

    if v.scores is None:
        raise GGUFQError(f"{v.path}: a SentencePiece vocabulary needs tokenizer.ggml.scores")
    unk = v.special.get("unk")
    if unk is None:
        unks = np.nonzero(v.types == UNKNOWN)[0]
        if unks.size != 1:
            raise GGUFQError(f"{v.path}: SentencePiece needs exactly one unknown token, found {unks.size}")
        unk = int(unks[0])
    m = pb.ModelProto()
    seen: dict[str, int] = {}
    for i, (text, score, typ) in enumerate(zip(v.tokens, v.scores.tolist(), v.types.tolist())):
        if i == unk:
            typ = UNKNOWN
        elif typ == UNKNOWN:
            typ = CONTROL
        if typ == USER_DEFINED:
            text = text.replace(" ", SPM_SPACE)
        if not text or text in seen:
            raise GGUFQError(f"{v.path}: token {i} {text!r} is empty or repeats token {seen.get(text)}; "
                             f"SentencePiece needs unique pieces")
        seen[text] = i
        p = m.pieces.add()
        p.piece, p.score = text, score
        p.type = typ if typ in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE) else NORMAL

    ts = m.trainer_spec
    ts.model_type = ts.BPE if _looks_like_bpe_scores(v) else ts.UNIGRAM
    ts.vocab_size = len(v.tokens)
    ts.byte_fallback = bool(np.any(v.types == BYTE))
    ts.unk_id = unk
    ts.unk_piece = v.tokens[unk]
    for kind in ("bos", "eos", "pad"):
        i = v.special.get(kind, -1)
        setattr(ts, f"{kind}_id", i)
        if i >= 0:
            setattr(ts, f"{kind}_piece", v.tokens[i])
    ts.allow_whitespace_only_pieces = True

    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = True if v.add_space_prefix is None else bool(v.add_space_prefix)
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    ns.precompiled_charsmap = b""
    return m.SerializeToString()


# ---- tokenizer_config.json / special_tokens_map.json --------------------------------------------
def _token_entry(content: str, normalized: bool = False) -> dict:
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}


TOKENIZER_CLASSES = {("llama", "gemma3"): "GemmaTokenizer", ("llama", None): "LlamaTokenizer",
                     ("gpt2", None): "PreTrainedTokenizerFast"}


def tokenizer_config(v: Vocab, arch: str | None = None) -> dict:
    cfg: dict[str, Any] = {}
    for k in ("bos", "eos", "sep"):
        if v.add.get(k) is not None:
            cfg[f"add_{k}_token"] = bool(v.add[k])
    if v.add_space_prefix is not None:
        cfg["add_prefix_space"] = bool(v.add_space_prefix)
    cfg["added_tokens_decoder"] = {
        str(i): {**_token_entry(v.content(i), v.normalized(i)), "special": bool(v.types[i] != USER_DEFINED)}
        for i in v.added_ids()}
    for kind, i in v.special.items():
        cfg[f"{kind}_token"] = v.content(i)
    if v.named_templates:
        cfg["chat_template"] = ([{"name": "default", "template": v.chat_template}] if v.chat_template else []) \
            + [{"name": k, "template": t} for k, t in v.named_templates.items()]
    elif v.chat_template is not None:
        cfg["chat_template"] = v.chat_template
    cfg["clean_up_tokenization_spaces"] = False
    cfg["model_input_names"] = ["input_ids", "attention_mask"]  # causal LMs take no token_type_ids
    if v.context_length:
        cfg["model_max_length"] = int(v.context_length)
    if v.model == "llama":
        # transformers' "legacy" SentencePiece handling (dummy prefix on the whole text, spaces kept) is
        # what llama.cpp does; legacy=False drops a leading space
        cfg["legacy"] = True
        cfg["sp_model_kwargs"] = {}
        cfg["spaces_between_special_tokens"] = False
    cfg["tokenizer_class"] = TOKENIZER_CLASSES.get((v.model, arch)) or TOKENIZER_CLASSES[(v.model, None)]
    return cfg


def special_tokens_map(v: Vocab) -> dict:
    return {f"{kind}_token": _token_entry(v.content(i)) for kind, i in v.special.items()}


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_hf_tokenizer(g, out_dir: str | Path) -> list[str]:
    """Write the tokenizer files for GGUFFile `g` into out_dir; returns the file names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v = Vocab(g)
    v.check()
    files = []
    if v.model == "gpt2":
        (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(v), ensure_ascii=False),
                                            encoding="utf-8")
        files.append("tokenizer.json")
    elif v.model == "llama":
        (out / "tokenizer.model").write_bytes(sentencepiece_model(v))
        files.append("tokenizer.model")
    _dump(out / "tokenizer_config.json", tokenizer_config(v, g.get("general.architecture")))
    _dump(out / "special_tokens_map.json", special_tokens_map(v))
    return files + ["tokenizer_config.json", "special_tokens_map.json"]


def generation_config(g) -> dict:
    """generation_config.json: the special ids a generator needs (eos and end-of-turn)."""
    v = Vocab(g)
    cfg: dict[str, Any] = {"_from_model_config": True}
    if "bos" in v.special:
        cfg["bos_token_id"] = v.special["bos"]
    eos = [i for i in (v.special.get("eos"), v.eot) if i is not None]
    eos = list(dict.fromkeys(eos))
    if eos:
        cfg["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    if "pad" in v.special:
        cfg["pad_token_id"] = v.special["pad"]
    return cfg
