"""From ids back to text as llama.cpp does it: clean-up of tokenization spaces, byte-level decoding, and a
stream decoder that holds back incomplete UTF-8 sequences."""
from __future__ import annotations

import codecs
from functools import lru_cache

from ggufq.text.pretokenize import UNICODE_TO_BYTE

def clean_spaces(data: bytes) -> bytes:
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


SIMPLE_LOWER = {0x130: 0x69}  # U+0130's full lowercase is two characters, its simple lowercase is "i"
SIMPLE_LOWER = {k: chr(v) for k, v in SIMPLE_LOWER.items()}


def is_chinese(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


@lru_cache(maxsize=None)
def _unk_byte(c: str, text: str) -> bytes:
    return ("[UNK_BYTE_0x" + "".join(f"{b:02x}" for b in c.encode("utf-8")) + text + "]").encode("utf-8")


def decode_byte_level(text: str) -> bytes:
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

    def __init__(self, tok, special: bool = False):
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
