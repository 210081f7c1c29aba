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

try:  # llama.cpp's category table is Unicode 15.1; Python 3.11's own unicodedata is 14.0
    import unicodedata2 as unicodedata
except ImportError:  # pragma: no cover - then codepoints assigned in 15.0/15.1 count as unassigned
    import unicodedata

import numpy as np

from ggufq.errors import GGUFQError
from ggufq.text.detokenize import SIMPLE_LOWER, StreamDecoder, clean_spaces, decode_byte_level, is_chinese
from ggufq.text.pretokenize import (BYTE_TO_UNICODE, PRE_COMPILED, PRE_REGEXES, WHITESPACE, byte_encode,
                                     compile_regex, merge_pairs, regex_split)

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
# the tokenizer
# --------------------------------------------------------------------------------------------------
UNICODE_VERSION = unicodedata.unidata_version


class Tokenizer:
    """Encode and decode with a GGUF's vocabulary exactly as llama.cpp does (SPM and byte-level BPE)."""

    def __init__(self, *, model: str, pre: str | None, tokens: list[str], scores, token_types, merges,
                 kv: dict, arch: str = "", name: str = "", bpe_package: bool = True):
        """bpe_package=False: byte-level BPE merges words with our own loop even where the tokenizers
        package could (the tests compare the two)."""
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
            if pre_name not in PRE_COMPILED:
                raise GGUFQError(f"unknown pre-tokenizer type {pre_name!r} (tokenizer.ggml.pre)")
            family, flags = PRE_COMPILED[pre_name]
            self.ignore_merges = flags.get("ignore_merges", False)
            self.clean_spaces = flags.get("clean_spaces", True)
            self.add_bos = flags.get("add_bos", False)
            self.escape_whitespaces = flags.get("escape_whitespaces", False)
            self.byte_encode = flags.get("byte_encode", True)
            if flags.get("no_bos"):
                bos = None
            self._force_bos = flags.get("force_bos", False)
            self._regexes = [compile_regex(r) for r in PRE_REGEXES[family]]
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
            self._init_bpe(merges, bpe_package)
        if self.kind == "wpm":
            self._max_token_chars = max(len(t) for t in self.tokens)
        # each token's bytes, made on first use: all 49k-262k at once were 0.1-0.3 s of a first token
        self._pieces: list[bytes | None] = [None] * n
        self._word_cache: dict[str, tuple[int, ...]] = {}

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_gguf(cls, g, bpe_package: bool = True) -> "Tokenizer":
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
                   merges=g.get("tokenizer.ggml.merges", keep=False), kv=kv,
                   arch=g.get("general.architecture", "") or "", name=g.get("general.name", "") or "",
                   bpe_package=bpe_package)

    @classmethod
    def from_path(cls, path) -> "Tokenizer":
        from ggufq.files.gguf_reader import GGUFFile
        with GGUFFile(path) as g:
            return cls.from_gguf(g)

    def _init_bpe(self, merges, bpe_package: bool = True) -> None:
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
        if self.byte_encode and bpe_package:
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
                # words then merge in the tokenizers package alone: the pair ranks (280k tuples of two
                # strings for Llama 3, some 70 MB) are not needed again
                self._ranks = None

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
        for sym in merge_pairs(list(text), priority):
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
            if cp in WHITESPACE:
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
                c = low if len(low) == 1 else SIMPLE_LOWER.get(cp, low[0])
            if cat[0] == "P" or (cp < 0x7F and cat[0] == "S") or is_chinese(cp):
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
                encs = self._hf.encode_batch([[byte_encode(w)] for w in new], is_pretokenized=True,
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
        enc = byte_encode(word) if self.byte_encode else word
        if self._hf is not None:
            return tuple(self._hf.encode([enc], is_pretokenized=True, add_special_tokens=False).ids)
        if self.ignore_merges and enc in t2i:
            return (t2i[enc],)
        if not self.byte_encode and enc and all(c == "\n" for c in enc) and self.pre == "gemma4" and enc in t2i:
            return (t2i[enc],)
        ranks = self._ranks
        res = []
        for sym in merge_pairs(list(enc), lambda a, b: ranks.get((a, b))):
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
            return decode_byte_level(text)
        if attr & ATTR_BYTE:
            return bytes([int(text[3:5], 16)])
        return b""

    def token_to_piece(self, token_id: int, special: bool = True) -> bytes:
        """The bytes a token stands for (llama_token_to_piece; special=False hides control tokens)."""
        if not 0 <= token_id < len(self.tokens):
            raise GGUFQError(f"token id {token_id} out of range (vocabulary of {len(self.tokens)})")
        if not special:
            return self._piece(token_id, False)
        piece = self._pieces[token_id]
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id, True)
        return piece

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
        return clean_spaces(text) if self.clean_spaces else text

    def decode(self, ids, special: bool = False) -> str:
        """Text of ids, as llama.cpp's common_detokenize(ids, special) gives it (invalid UTF-8 replaced)."""
        return self.detokenize(ids, remove_special=False, unparse_special=special).decode("utf-8", errors="replace")

    def stream_decoder(self, special: bool = False) -> "StreamDecoder":
        return StreamDecoder(self, special)
