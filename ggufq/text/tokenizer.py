"""The tokenizer of a GGUF file, built from its metadata alone, giving the ids llama.cpp gives.

    tok = Tokenizer.from_gguf(GGUFFile("model.gguf"))
    ids = tok.encode("Hello <|im_start|>")        # BOS per add_bos, special tokens parsed out
    tok.decode(ids), tok.token_to_piece(ids[0]), tok.is_eog(ids[-1])

What llama.cpp does, and so what this does, in order:
1. Special tokens: control, user-defined and unknown tokens are cut out of the text, longest first
   (control and unknown ones only when parse_special). User-defined tokens are always cut out.
2. Each remaining text fragment goes to the model's algorithm:
   - "gpt2" (BPE): the fragment is split by the pre-tokenizer regexes of `tokenizer.ggml.pre`, each word
     is mapped byte -> printable character (GPT-2's byte-level alphabet), and merged by merge rank
     (lowest rank first, leftmost first). Words are merged by the `tokenizers` package's BPE model when
     the vocabulary allows it (every merge's parts and result are tokens), else by our own loop.
   - "llama" (SentencePiece, e.g. Gemma): spaces become U+2581, a space is prefixed after BOS or a special
     token when add_space_prefix, then adjacent symbols are merged greedily by the score of the token
     they form (highest first, leftmost first); a final symbol that is no token becomes byte tokens
     <0xXX>. This is llama.cpp's own bigram merge (not SentencePiece's encoder), so it is written here.
3. BOS/EOS are added per tokenizer.ggml.add_bos_token / add_eos_token when add_special.

The regex split reproduces llama.cpp's: a codepoint is "collapsed" to one character standing for its
Unicode category (letter, number, punctuation, mark, symbol, whitespace, other) and the pattern's
\\p{..} classes are rewritten to match those characters; Python's `re` in ASCII mode then behaves like
the C++ std::regex (ECMAScript) llama.cpp runs. Categories come from `unicodedata2` 15.1 (the Unicode version
of llama.cpp's table; Python 3.11's own `unicodedata` is 14.0, which would see the 15.0/15.1 additions, e.g.
CJK extension H letters or the pink heart emoji, as unassigned).
"""
from __future__ import annotations

import codecs
import heapq
import re
from functools import lru_cache

try:  # llama.cpp's category table is Unicode 15.1; Python 3.11's own unicodedata is 14.0
    import unicodedata2 as unicodedata
except ImportError:  # pragma: no cover - then codepoints assigned in 15.0/15.1 count as unassigned
    import unicodedata

import numpy as np

from ggufq.errors import GGUFQError

# --------------------------------------------------------------------------------------------------
# token types (GGUF) and attributes (llama.cpp's llama_token_attr bits)
# --------------------------------------------------------------------------------------------------
ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8

_TYPE_TO_ATTR = {0: ATTR_UNDEFINED, 1: ATTR_NORMAL, 2: ATTR_UNKNOWN, 3: ATTR_CONTROL,
                 4: ATTR_USER_DEFINED, 5: ATTR_UNUSED, 6: ATTR_BYTE}

# token texts llama.cpp treats as end of generation (llama-vocab.cpp, the EOG list)
_EOG_TEXTS = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
}
_EOT_TEXTS = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
              "<EOT>", "_<EOT>", "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>"]
_FIM_TEXTS = {  # kind -> texts; pad/rep/sep are end-of-generation too
    "pre": ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>",
            "\u2581<PRE>", "<|code_prefix|>", "<|prefix|>"],
    "suf": ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>",
            "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>"],
    "mid": ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>",
            "\u2581<MID>", "<|code_middle|>", "<|middle|>"],
    "pad": ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    "rep": ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
    "sep": ["<|file_sep|>"],
}

# --------------------------------------------------------------------------------------------------
# pre-tokenizer regexes, per tokenizer.ggml.pre (as llama.cpp's llm_tokenizer_bpe lists them)
# --------------------------------------------------------------------------------------------------
_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
_LLAMA3 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
          "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN35 = (_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*"
           "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_DEEPSEEK_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+")
_REGEXES = {
    "llama3": [_LLAMA3],
    "dbrx": [_LLAMA3],
    "deepseek-llm": ["[\r\n]", _DEEPSEEK_LETTERS, "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                     "\\s+$", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}+"],
    "deepseek-v3": ["\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
                    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"],
    "deepseek-coder": ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
                       "\\p{N}"],
    "falcon": ["[\\p{P}\\$\\+<=>\\^~\\|`]+", _GPT2, "[0-9][0-9][0-9]"],
    "starcoder": ["\\p{N}", _GPT2],
    "gpt2": [_GPT2],
    "qwen2": [_QWEN2],
    "qwen35": [_QWEN35],
    "bloom": [" ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"],
    "chatglm4": [_LLAMA3],
    "viking": [" ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+", "\\p{N}"],
    "tekken": ["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+"
               "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
               "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "gpt4o": ["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" + _CONTRACTIONS + "?"
              "|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" + _CONTRACTIONS + "?"
              "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "seed-coder": [_CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+"
                   "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "bailingmoe": ["'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
                   "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"],
    "minicpm5": ["\\p{N}{1,3}", _CONTRACTIONS + "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+"
                 "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"],
    "newlines": ["[^\\n]+|[\\n]+"],
    "whitespace": ["\\S+"],
    "default": ["[\\p{P}\\$\\+<=>\\^~\\|]+", _GPT2, "\\p{N}+", "[0-9][0-9][0-9]"],
}

# tokenizer.ggml.pre -> (regex family, flags) as llama.cpp's vocabulary loader maps them.
# flags: ignore_merges, clean_spaces (default True for BPE), add_bos (default), escape_whitespaces
_PRE = {}
for _names, _family, _flags in [
    (["default"], "default", {}),
    (["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"],
     "llama3", {"ignore_merges": True, "add_bos": True}),
    (["deepseek-llm"], "deepseek-llm", {"clean_spaces": False}),
    (["deepseek-coder"], "deepseek-coder", {"clean_spaces": False}),
    (["deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"], "deepseek-v3", {"clean_spaces": False}),
    (["falcon"], "falcon", {}),
    (["mpt", "olmo", "jais", "exaone4", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
      "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe"], "gpt2", {}),
    (["trillion", "granite-docling"], "gpt2", {"clean_spaces": False}),
    (["starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"], "starcoder", {}),
    (["command-r", "smollm"], "starcoder", {"clean_spaces": False}),
    (["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"], "qwen2", {"clean_spaces": False}),
    (["megrez", "stablelm2"], "qwen2", {}),
    (["qwen35"], "qwen35", {"clean_spaces": False}),
    (["dbrx", "smaug-bpe"], "dbrx", {}),
    (["poro-chat"], "bloom", {"clean_spaces": False}),
    (["bloom", "gpt3-finnish"], "bloom", {}),
    (["chatglm-bpe"], "chatglm4", {"no_bos": True}),
    (["glm4", "glm5"], "chatglm4", {"no_bos": True, "ignore_merges": True}),
    (["viking"], "viking", {"clean_spaces": False}),
    (["tekken"], "tekken", {"clean_spaces": False, "ignore_merges": True, "add_bos": True}),
    (["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], "gpt4o", {"clean_spaces": False}),
    (["seed-coder"], "seed-coder", {"clean_spaces": False}),
    (["bailingmoe", "bailingmoe2", "llada-moe"], "bailingmoe", {"clean_spaces": False}),
    (["minicpm5"], "minicpm5", {"ignore_merges": True}),
    (["gemma4", "granite-embed-multi-311m"], "newlines", {"escape_whitespaces": True, "byte_encode": False,
                                                           "force_bos": True}),
    (["sarvam-moe"], "newlines", {"escape_whitespaces": True, "byte_encode": False, "clean_spaces": False}),
]:
    for _n in _names:
        _PRE[_n] = (_family, _flags)

# --------------------------------------------------------------------------------------------------
# Unicode categories the way llama.cpp's table sees them, and the collapsed regex split
# --------------------------------------------------------------------------------------------------
_WHITESPACE = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                         0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
_CAT_CHAR = {"N": "\xd1", "L": "\xd2", "P": "\xd3", "M": "\xd4", "S": "\xd5"}
_CAT_ASCII = {  # what each collapsed category also matches below 128
    "N": "0-9", "L": "A-Za-z", "P": "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}", "M": "", "S": "\\$\\+<->^`\\|\\~",
}
_UCAT = {"\\p{N}": "N", "\\p{L}": "L", "\\p{P}": "P", "\\p{M}": "M", "\\p{S}": "S",
         "\\p{Lu}": "L", "\\p{Ll}": "L", "\\p{Lt}": "L", "\\p{Lm}": "L", "\\p{Lo}": "L"}


class _Collapse(dict):
    """str.translate table: a codepoint >= 128 -> the character standing for its category."""

    def __missing__(self, cp: int) -> str:
        if cp in _WHITESPACE:
            c = "\x0b"
        else:
            c = _CAT_CHAR.get(unicodedata.category(chr(cp))[0], "\xd0")
        self[cp] = c
        return c


_COLLAPSE = _Collapse({i: chr(i) for i in range(128)})


class _NonAsciiSpace(dict):
    """str.translate table for the regexes run on the text itself: non-ASCII whitespace -> \\v."""

    def __missing__(self, cp: int):
        c = "\x0b" if cp > 0x7F and cp in _WHITESPACE else chr(cp)
        self[cp] = c
        return c


_NONASCII_SPACE = _NonAsciiSpace()


def _compile(expr: str):
    """One llama.cpp pre-tokenizer regex -> (compiled Python regex, whether it runs on collapsed text)."""
    uses_cat = any(k in expr for k in _UCAT)
    out, i, inside = [], 0, False
    while i < len(expr):
        ch = expr[i]
        if ch == "\\" and i + 1 < len(expr):
            m = re.match(r"\\p\{[A-Za-z]+\}", expr[i:])
            if m and m.group(0) in _UCAT:
                cat = _UCAT[m.group(0)]
                body = _CAT_CHAR[cat] + _CAT_ASCII[cat]
                out.append(body if inside else "[" + body + "]")
                i += len(m.group(0))
                continue
            out.append(expr[i:i + 2])
            i += 2
            continue
        if ch == "[" and not inside:
            inside = True
        elif ch == "]" and inside:
            inside = False
        elif ch == "$" and not inside:
            ch = r"\Z"  # ECMAScript $ is the end of input only; Python's also matches before a final \n
        out.append(ch)
        i += 1
    if uses_cat and any(ord(c) >= 128 for c in expr):
        raise GGUFQError(f"pre-tokenizer regex mixes Unicode categories and non-ASCII characters: {expr!r}")
    return re.compile("".join(out), re.ASCII), uses_cat


def regex_split(text: str, compiled) -> list[str]:
    """Split text like llama.cpp's unicode_regex_split: each regex splits every piece further, keeping both
    the matches and the text between them."""
    if not text:
        return []
    collapsed = plain = None
    bounds = [(0, len(text))]
    for rx, uses_cat in compiled:
        if uses_cat:
            if collapsed is None:
                collapsed = text.translate(_COLLAPSE)
            s = collapsed
        else:
            if plain is None:
                plain = text.translate(_NONASCII_SPACE)
            s = plain
        new = []
        for a, b in bounds:
            pos = a
            for m in rx.finditer(s, a, b):
                if m.start() > pos:
                    new.append((pos, m.start()))
                if m.end() > m.start():
                    new.append((m.start(), m.end()))
                pos = m.end()
            if pos < b:
                new.append((pos, b))
        bounds = new
    return [text[a:b] for a, b in bounds]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are shifted to 256+."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_UNICODE = _bytes_to_unicode()
UNICODE_TO_BYTE = {v: k for k, v in BYTE_TO_UNICODE.items()}
_LATIN1_TO_BYTE_LEVEL = {b: c for b, c in BYTE_TO_UNICODE.items()}  # str.translate table over chr(0..255)


def _byte_encode(word: str) -> str:
    """A word's UTF-8 bytes, each written as its GPT-2 byte-level character."""
    return word.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_LEVEL)


def _merge(symbols: list[str], priority) -> list[str]:
    """Merge adjacent symbols greedily: the pair with the smallest priority(left, right) first, leftmost
    first among equals; priority returns None for pairs that never merge. A heap with lazy invalidation
    (a linked list of symbols), so long inputs stay O(n log n)."""
    n = len(symbols)
    if n < 2:
        return symbols
    text = list(symbols)
    nxt = list(range(1, n)) + [-1]
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        p = priority(text[i], text[i + 1])
        if p is not None:
            heap.append((p, i, i + 1, text[i], text[i + 1]))
    heapq.heapify(heap)
    while heap:
        p, left, right, lt, rt = heapq.heappop(heap)
        if text[left] is None or text[right] is None or nxt[left] != right or text[left] != lt or text[right] != rt:
            continue
        text[left] = lt + rt
        text[right] = None
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
        for a, b in ((prv[left], left), (left, nxt[left])):
            if a >= 0 and b >= 0:
                q = priority(text[a], text[b])
                if q is not None:
                    heapq.heappush(heap, (q, a, b, text[a], text[b]))
    return [t for t in text if t is not None]


# --------------------------------------------------------------------------------------------------
# the tokenizer
# --------------------------------------------------------------------------------------------------
UNICODE_VERSION = unicodedata.unidata_version


class Tokenizer:
    """Encode and decode with a GGUF's vocabulary exactly as llama.cpp does (SPM and byte-level BPE)."""

    def __init__(self, *, model: str, pre: str | None, tokens: list[str], scores, token_types, merges,
                 kv: dict, arch: str = "", name: str = ""):
        self.model = model
        self.pre = pre
        n = len(tokens)
        self.tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}
        if len(self.token_to_id) != n:
            raise GGUFQError("tokenizer vocabulary has duplicate tokens")
        self.scores = (np.asarray(scores, dtype=np.float32) if scores is not None else np.zeros(n, np.float32))
        if len(self.scores) < n:
            raise GGUFQError("tokenizer.ggml.scores is shorter than the vocabulary")
        if token_types is not None:
            tt = np.asarray(token_types)
            if len(tt) < n:
                raise GGUFQError("tokenizer.ggml.token_type is shorter than the vocabulary")
            self.attrs = [_TYPE_TO_ATTR.get(int(t), ATTR_UNDEFINED) for t in tt[:n]]
        else:
            self.attrs = [ATTR_NORMAL] * n
        self.arch = arch

        get = kv.get
        # defaults per algorithm, then the file's keys (llama.cpp's llama_vocab::impl::load)
        self.ignore_merges = False
        self.clean_spaces = False
        self.escape_whitespaces = True
        self.byte_encode = True
        if model == "llama":
            self.kind = "spm"
            bos, eos, unk = 1, 2, 0
            self.add_space_prefix, self.add_bos, self.add_eos = True, True, False
            self._regexes = None
        elif model == "bert":
            self.kind = "wpm"
            bos, eos, unk = 101, None, 100
            self.add_space_prefix, self.add_bos, self.add_eos = False, True, False
            self.clean_spaces = True
            self._regexes = None
            self.wpm_lowercase = bool(get("tokenizer.ggml.normalizer.lowercase", True))
            self.wpm_strip_accents = bool(get("tokenizer.ggml.normalizer.strip_accents", self.wpm_lowercase))
        elif model in ("gpt2", "gemma4"):
            self.kind = "bpe"
            bos, eos, unk = (11, 11, None) if model == "gpt2" else (None, None, None)
            if model == "gemma4":
                pre = self.pre = "gemma4"
            self.add_space_prefix, self.add_bos, self.add_eos = False, False, False
            self.escape_whitespaces = False
            self.clean_spaces = True
            pre_name = pre or "default"
            if pre_name not in _PRE:
                raise GGUFQError(f"unknown pre-tokenizer type {pre_name!r} (tokenizer.ggml.pre)")
            family, flags = _PRE[pre_name]
            self.ignore_merges = flags.get("ignore_merges", False)
            self.clean_spaces = flags.get("clean_spaces", True)
            self.add_bos = flags.get("add_bos", False)
            self.escape_whitespaces = flags.get("escape_whitespaces", False)
            self.byte_encode = flags.get("byte_encode", True)
            if flags.get("no_bos"):
                bos = None
            self._force_bos = flags.get("force_bos", False)
            self._regexes = [_compile(r) for r in _REGEXES[family]]
        else:
            raise GGUFQError(f"unsupported tokenizer model {model!r} "
                             "(ggufq supports 'llama' (SPM), 'gpt2' and 'gemma4' (BPE), 'bert' (WPM))")
        self.add_space_prefix = bool(get("tokenizer.ggml.add_space_prefix", self.add_space_prefix))

        def special(key, default):
            if default is not None and default >= n:
                default = None
            v = get(key)
            if v is None:
                return default
            return int(v) if 0 <= int(v) < n else default

        self.bos_id = special("tokenizer.ggml.bos_token_id", bos)
        self.eos_id = special("tokenizer.ggml.eos_token_id", eos)
        self.eot_id = special("tokenizer.ggml.eot_token_id", None)
        self.eom_id = special("tokenizer.ggml.eom_token_id", None)
        self.unk_id = special("tokenizer.ggml.unknown_token_id", unk)
        self.pad_id = special("tokenizer.ggml.padding_token_id", 0 if model == "bert" else None)
        self.sep_id = special("tokenizer.ggml.seperator_token_id", 102 if model == "bert" else None)
        fim = {k: special(f"tokenizer.ggml.fim_{k}_token_id", None) for k in _FIM_TEXTS}
        if get("tokenizer.ggml.add_bos_token") is not None:
            self.add_bos = bool(get("tokenizer.ggml.add_bos_token"))
        if get("tokenizer.ggml.add_eos_token") is not None:
            self.add_eos = bool(get("tokenizer.ggml.add_eos_token"))
        if self.kind == "bpe" and self._force_bos:
            self.add_bos = True

        # auto-detected special tokens, as llama.cpp finds them by their text
        def mark_control(i):
            self.attrs[i] |= ATTR_CONTROL

        if self.eot_id is None:
            for t in _EOT_TEXTS:
                if t in self.token_to_id:
                    self.eot_id = self.token_to_id[t]
                    mark_control(self.eot_id)
                    break
        if self.eom_id is None and "<|eom_id|>" in self.token_to_id:
            self.eom_id = self.token_to_id["<|eom_id|>"]
            mark_control(self.eom_id)
        for k, texts in _FIM_TEXTS.items():
            if fim[k] is None:
                for t in texts:
                    if t in self.token_to_id:
                        fim[k] = self.token_to_id[t]
                        mark_control(fim[k])
                        break
        self.fim = fim
        for i, t in enumerate(self.tokens):
            if self.attrs[i] & ATTR_CONTROL and "unused" in t:
                self.attrs[i] |= ATTR_UNUSED
        eog = {fim[k] for k in ("pad", "rep", "sep") if fim[k] is not None}
        for t in _EOG_TEXTS:
            i = self.token_to_id.get(t)
            if i is not None:
                eog.add(i)
                mark_control(i)
        for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):
            if t in self.token_to_id:
                self.attrs[self.token_to_id[t]] = ATTR_USER_DEFINED
        eog |= {i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None}
        texts = {self.tokens[i]: i for i in eog}
        if "<|end|>" in texts and (("<|return|>" in texts and "<|call|>" in texts)
                                   or ("<|calls|>" in texts and "<|flush|>" in texts)):
            eog.discard(texts["<|end|>"])
            self.attrs[texts["<|end|>"]] = ATTR_USER_DEFINED
        if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
            eog.discard(texts["</s>"])
            self.attrs[texts["</s>"]] = ATTR_NORMAL
        self.eog_ids = frozenset(eog)

        # special tokens cut out of the text before the algorithm runs, longest (in bytes) first
        special_ids = [i for i in range(n) if self.attrs[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
        special_ids.sort(key=lambda i: -len(self.tokens[i].encode("utf-8")))
        self._special_ids = special_ids

        # per-token attributes llama.cpp sets by model name
        lname = (name or "").lower()
        if (any(s in (pre or "") for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code"))
                or any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3"))):
            if "<mask>" in self.token_to_id:
                self.attrs[self.token_to_id["<mask>"]] |= ATTR_LSTRIP
        elif "phi-3" in lname or "phi3" in lname:
            for i in special_ids:
                self.attrs[i] |= ATTR_RSTRIP
            for t, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                if t in self.token_to_id:
                    i = self.token_to_id[t]
                    self.attrs[i] = (self.attrs[i] | ATTR_RSTRIP) if on else (self.attrs[i] & ~ATTR_RSTRIP)
        elif "modern-bert" in lname and "[MASK]" in self.token_to_id:
            self.attrs[self.token_to_id["[MASK]"]] |= ATTR_LSTRIP

        if self.kind == "bpe":
            self._init_bpe(merges)
        if self.kind == "wpm":
            self._max_token_chars = max(len(t) for t in self.tokens)
        self._pieces = [self._piece(i, True) for i in range(n)]
        self._word_cache: dict[str, tuple[int, ...]] = {}

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_gguf(cls, g) -> "Tokenizer":
        """Build from an open GGUFFile (only its tokenizer.* and general.* keys are read)."""
        model = g.get("tokenizer.ggml.model")
        if model is None:
            raise GGUFQError("the file has no tokenizer (tokenizer.ggml.model missing)")
        tokens = g.get("tokenizer.ggml.tokens")
        if not tokens:
            raise GGUFQError("the file has no vocabulary (tokenizer.ggml.tokens missing)")
        kv = {k: v.value for k, v in g.kv.items() if k.startswith("tokenizer.ggml.") and
              k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                        "tokenizer.ggml.merges")}
        return cls(model=model, pre=g.get("tokenizer.ggml.pre"), tokens=list(tokens),
                   scores=g.get("tokenizer.ggml.scores"), token_types=g.get("tokenizer.ggml.token_type"),
                   merges=g.get("tokenizer.ggml.merges"), kv=kv, arch=g.get("general.architecture", "") or "",
                   name=g.get("general.name", "") or "")

    @classmethod
    def from_path(cls, path) -> "Tokenizer":
        from ggufq.files.gguf_reader import GGUFFile
        with GGUFFile(path) as g:
            return cls.from_gguf(g)

    def _init_bpe(self, merges) -> None:
        if merges is None:
            raise GGUFQError("BPE tokenizer without merges (tokenizer.ggml.merges missing)")
        ranks: dict[tuple[str, str], int] = {}
        for i, m in enumerate(merges):
            pos = m.find(" ", 1)
            pair = (m[:pos], m[pos + 1:]) if pos >= 0 else ("", "")
            ranks.setdefault(pair, i)
        self._ranks = ranks
        # the tokenizers package merges words fast when the vocabulary is consistent with the merges
        self._hf = None
        if self.byte_encode:
            t2i = self.token_to_id
            ok = all(a in t2i and b in t2i and (a + b) in t2i for (a, b) in ranks)
            ok = ok and all(c in t2i for c in BYTE_TO_UNICODE.values())
            if ok:
                from tokenizers import Tokenizer as HFTokenizer
                from tokenizers.models import BPE
                ordered = sorted(ranks.items(), key=lambda kv: kv[1])
                bpe = BPE(vocab=dict(t2i), merges=[p for p, _ in ordered], ignore_merges=self.ignore_merges,
                          fuse_unk=False)
                self._hf = HFTokenizer(bpe)

    # ---------------------------------------------------------------- properties
    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    def is_control(self, token_id: int) -> bool:
        return bool(self.attrs[token_id] & ATTR_CONTROL)

    # ---------------------------------------------------------------- encoding
    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of text, as llama_tokenize(text, add_special, parse_special) gives them."""
        frags = self._partition(text, parse_special) if text else []
        out: list[int] = []
        if self.kind == "spm":
            if add_special and self.add_bos:
                if self.bos_id is None:
                    raise GGUFQError("the model wants a BOS token but has none")
                out.append(self.bos_id)
            prev_special = True
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                    prev_special = True
                else:
                    if self.add_space_prefix and prev_special:
                        f = " " + f
                    self._spm(f.replace(" ", "\u2581"), out)
                    prev_special = False
        elif self.kind == "wpm":
            if add_special:
                out.append(self.bos_id)
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                else:
                    self._wpm(f, out)
            if add_special:
                if self.sep_id is None:
                    raise GGUFQError("the model wants a SEP token but has none")
                out.append(self.sep_id)
            return out
        else:
            if add_special and self.add_bos:
                if self.bos_id is None:
                    raise GGUFQError("the model wants a BOS token but has none")
                out.append(self.bos_id)
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                else:
                    if self.escape_whitespaces:
                        f = f.replace(" ", "\u2581")
                    self._bpe(f, out)
        if add_special and self.add_eos:
            if self.eos_id is None:
                raise GGUFQError("the model wants an EOS token but has none")
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list:
        """Cut special tokens out of text (llama.cpp's tokenizer_st_partition): a list of str and int."""
        frags: list = [text]
        for tid in self._special_ids:
            attr = self.attrs[tid]
            if not parse_special and attr & (ATTR_CONTROL | ATTR_UNKNOWN):
                continue
            s = self.tokens[tid]
            if s not in text:
                continue
            new: list = []
            for f in frags:
                if isinstance(f, int) or s not in f:
                    new.append(f)
                    continue
                base = 0
                while True:
                    m = f.find(s, base)
                    if m < 0:
                        if base < len(f):
                            new.append(f[base:])
                        break
                    left = f[base:m]
                    if attr & ATTR_LSTRIP:
                        left = left.rstrip(" \t\n\v\f\r")
                    if left:
                        new.append(left)
                    new.append(tid)
                    base = m + len(s)
                    if attr & ATTR_RSTRIP:
                        while base < len(f) and f[base] in " \t\n\v\f\r":
                            base += 1
                    if base >= len(f):
                        break
            frags = new
        return frags

    # SentencePiece-style bigram merge (llama.cpp's llm_tokenizer_spm)
    def _spm(self, text: str, out: list[int]) -> None:
        if not text:
            return
        cached = self._word_cache.get(text) if len(text) <= 64 else None
        if cached is not None:
            out.extend(cached)
            return
        t2i, scores = self.token_to_id, self.scores

        def priority(a, b):
            i = t2i.get(a + b)
            if i is None:
                return None
            return -float(scores[i])

        res: list[int] = []
        for sym in _merge(list(text), priority):
            i = t2i.get(sym)
            if i is not None:
                res.append(i)
            else:
                for byte in sym.encode("utf-8"):
                    res.append(self._byte_token(byte))
        if len(text) <= 64:
            if len(self._word_cache) > 100_000:
                self._word_cache.clear()
            self._word_cache[text] = tuple(res)
        out.extend(res)

    def _byte_token(self, byte: int) -> int:
        i = self.token_to_id.get(f"<0x{byte:02X}>")
        if i is None:
            i = self.token_to_id.get(chr(byte)) if byte < 0x80 else None
            if i is None:
                raise GGUFQError(f"SPM vocabulary has no byte token for 0x{byte:02X}")
        return i

    # BERT word pieces (llama.cpp's llm_tokenizer_wpm): normalize, split into words, longest match
    def _wpm_words(self, text: str) -> list[str]:
        words = [""]
        for c in text:
            if self.wpm_strip_accents:
                c = unicodedata.normalize("NFD", c)[0]
            cp = ord(c)
            if cp in _WHITESPACE:
                if words[-1]:
                    words.append("")
                continue
            cat = unicodedata.category(c)
            if cp == 0 or cp == 0xFFFD or cat in ("Cc", "Cf", "Co", "Cs"):
                continue
            if self.wpm_strip_accents and cat[0] == "M":
                continue
            if self.wpm_lowercase:
                low = c.lower()
                c = low if len(low) == 1 else _SIMPLE_LOWER.get(cp, low[0])
            if cat[0] == "P" or (cp < 0x7F and cat[0] == "S") or _is_chinese(cp):
                if words[-1]:
                    words.append("")
                words[-1] = c
                words.append("")
            else:
                words[-1] += c
        return [w for w in words if w]

    def _wpm(self, text: str, out: list[int]) -> None:
        t2i, maxlen = self.token_to_id, self._max_token_chars
        for word in self._wpm_words(text):
            w = "\u2581" + word
            n, start, i = len(w), len(out), 0
            while i < n:
                for j in range(min(n, i + maxlen + 1), i, -1):
                    tid = t2i.get(w[i:j])
                    if tid is not None:
                        out.append(tid)
                        i = j
                        break
                else:
                    del out[start:]
                    break
            if len(out) == start:
                out.append(self.unk_id)

    # byte-level BPE (llama.cpp's llm_tokenizer_bpe)
    def _bpe(self, text: str, out: list[int]) -> None:
        words = regex_split(text, self._regexes)
        cache = self._word_cache
        new = [w for w in dict.fromkeys(words) if w not in cache]
        if new:
            if len(cache) > 200_000:
                cache.clear()
            if self._hf is not None and len(new) > 8:  # one call into the tokenizers package for them all
                encs = self._hf.encode_batch([[_byte_encode(w)] for w in new], is_pretokenized=True,
                                             add_special_tokens=False)
                for w, e in zip(new, encs):
                    cache[w] = tuple(e.ids)
            else:
                for w in new:
                    cache[w] = self._bpe_word(w)
        for w in words:
            out.extend(cache[w])

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        t2i = self.token_to_id
        enc = _byte_encode(word) if self.byte_encode else word
        if self._hf is not None:
            return tuple(self._hf.encode([enc], is_pretokenized=True, add_special_tokens=False).ids)
        if self.ignore_merges and enc in t2i:
            return (t2i[enc],)
        if not self.byte_encode and enc and all(c == "\n" for c in enc) and self.pre == "gemma4" and enc in t2i:
            return (t2i[enc],)
        ranks = self._ranks
        res = []
        for sym in _merge(list(enc), lambda a, b: ranks.get((a, b))):
            i = t2i.get(sym)
            if i is not None:
                res.append(i)
                continue
            for byte in sym.encode("utf-8"):
                if self.byte_encode:
                    j = t2i.get(chr(byte)) if byte < 0x80 else None
                else:
                    j = t2i.get(f"<0x{byte:02X}>")
                if j is not None:
                    res.append(j)
        return tuple(res)

    # ---------------------------------------------------------------- decoding
    def _piece(self, i: int, special: bool) -> bytes:
        attr = self.attrs[i]
        if not special and attr & (ATTR_UNKNOWN | ATTR_CONTROL):
            return b""
        text = self.tokens[i]
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
            return text.encode("utf-8")
        if attr & ATTR_NORMAL:
            if self.kind in ("spm", "wpm") or self.escape_whitespaces:
                return text.replace("\u2581", " ").encode("utf-8")
            return _decode_byte_level(text)
        if attr & ATTR_BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def token_to_piece(self, token_id: int, special: bool = True) -> bytes:
        """The bytes a token stands for (llama_token_to_piece; special=False hides control tokens)."""
        if not 0 <= token_id < len(self.tokens):
            raise GGUFQError(f"token id {token_id} out of range (vocabulary of {len(self.tokens)})")
        return self._pieces[token_id] if special else self._piece(token_id, False)

    def detokenize(self, ids, remove_special: bool = False, unparse_special: bool = False) -> bytes:
        """llama_detokenize: the pieces joined (control tokens only when unparse_special), the space
        add_space_prefix put before the first word dropped, BOS/EOS dropped when remove_special, and
        for vocabularies with clean_spaces the clean-up of " ?", " 's", ... that llama.cpp does."""
        ids = [int(i) for i in ids]
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        parts = []
        for i in ids:
            piece = self.token_to_piece(i, unparse_special)
            if remove_space and piece.startswith(b" "):
                piece = piece[1:]
            remove_space = False
            parts.append(piece)
        text = b"".join(parts)
        return _clean_spaces(text) if self.clean_spaces else text

    def decode(self, ids, special: bool = False) -> str:
        """Text of ids, as llama.cpp's common_detokenize(ids, special) gives it (invalid UTF-8 replaced)."""
        return self.detokenize(ids, remove_special=False, unparse_special=special).decode("utf-8", errors="replace")

    def stream_decoder(self, special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, special)


def _clean_spaces(data: bytes) -> bytes:
    """llama.cpp's clean_up_tokenization_spaces, three passes over the bytes, in place as it does them."""
    t = bytearray(data)
    n = len(t)
    # " ?", " !", " .", " ,": the space goes
    total = 1 if n else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # " ' ": both spaces go
    n, total, i = total, 1 if total else 0, 1
    while i < n:
        x = t[i]
        if x == 0x27 and i + 1 < n and t[i - 1] == 0x20 and t[i + 1] == 0x20:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # " 's", " 'm", " 're", " 've": the space goes
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm":
                total -= 1
            elif x1 not in b"td" and i + 2 < n:
                x2 = t[i + 2]
                if (x1, x2) in ((0x72, 0x65), (0x76, 0x65)):
                    total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])


_SIMPLE_LOWER = {0x130: 0x69}  # U+0130's full lowercase is two characters, its simple lowercase is "i"
_SIMPLE_LOWER = {k: chr(v) for k, v in _SIMPLE_LOWER.items()}


def _is_chinese(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


@lru_cache(maxsize=None)
def _unk_byte(c: str, text: str) -> bytes:
    return ("[UNK_BYTE_0x" + "".join(f"{b:02x}" for b in c.encode("utf-8")) + text + "]").encode("utf-8")


def _decode_byte_level(text: str) -> bytes:
    out = bytearray()
    for c in text:
        b = UNICODE_TO_BYTE.get(c)
        if b is None:
            out += _unk_byte(c, text)
        else:
            out.append(b)
    return bytes(out)


class StreamDecoder:
    """Incremental detokenizer: push token ids, get the text that is complete so far. A UTF-8 character
    split over several tokens comes out whole, once its last byte has arrived."""

    def __init__(self, tok: Tokenizer, special: bool = False):
        self.tok, self.special = tok, special
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._dec.decode(self.tok.token_to_piece(token_id, self.special))

    def push_bytes(self, token_id: int) -> bytes:
        """The raw bytes of the piece (what llama.cpp writes), kept in step with the text decoder."""
        b = self.tok.token_to_piece(token_id, self.special)
        self._dec.decode(b)
        return b

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
