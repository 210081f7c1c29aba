"""Pre-tokenization as llama.cpp does it: the BPE pre-tokenizer regexes of each `tokenizer.ggml.pre`, run
the way its std::regex runs them (codepoints collapsed to their Unicode category, see ggufq/text/tokenizer.py),
GPT-2's byte-level alphabet, and the greedy pair merge the BPE and SentencePiece paths share."""
from __future__ import annotations

import heapq
import re

try:  # llama.cpp's category table is Unicode 15.1; Python 3.11's own unicodedata is 14.0
    import unicodedata2 as unicodedata
except ImportError:  # pragma: no cover - then codepoints assigned in 15.0/15.1 count as unassigned
    import unicodedata

from ggufq.errors import GGUFQError

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
PRE_REGEXES = {
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
PRE_COMPILED = {}
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
        PRE_COMPILED[_n] = (_family, _flags)

# --------------------------------------------------------------------------------------------------
# Unicode categories the way llama.cpp's table sees them, and the collapsed regex split
# --------------------------------------------------------------------------------------------------
WHITESPACE = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
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
        if cp in WHITESPACE:
            c = "\x0b"
        else:
            c = _CAT_CHAR.get(unicodedata.category(chr(cp))[0], "\xd0")
        self[cp] = c
        return c


_COLLAPSE = _Collapse({i: chr(i) for i in range(128)})


class _NonAsciiSpace(dict):
    """str.translate table for the regexes run on the text itself: non-ASCII whitespace -> \\v."""

    def __missing__(self, cp: int):
        c = "\x0b" if cp > 0x7F and cp in WHITESPACE else chr(cp)
        self[cp] = c
        return c


_NONASCII_SPACE = _NonAsciiSpace()


def compile_regex(expr: str):
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


def byte_encode(word: str) -> str:
    """A word's UTF-8 bytes, each written as its GPT-2 byte-level character."""
    return word.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTE_LEVEL)


def merge_pairs(symbols: list[str], priority) -> list[str]:
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
