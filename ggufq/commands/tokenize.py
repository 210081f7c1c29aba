"""ggufq tokenize -m FILE (-p TEXT | -f FILE): the token ids of a text, printed as llama-tokenize prints them.

Without --ids, one token per line: `%6d -> 'piece'`; with --ids, one Python-style list. Escapes (\\n, \\t,
\\xNN, ...) in the prompt are processed unless --no-escape, and special tokens are parsed unless
--no-parse-special, both as llama-tokenize does.
"""
from __future__ import annotations

import sys

from ggufq.errors import GGUFQError


def configure(p):
    p.add_argument("-m", "--model", required=True, help="GGUF file (only its vocabulary is read)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="text to tokenize")
    src.add_argument("-f", "--file", help="file whose whole content is tokenized")
    src.add_argument("--stdin", action="store_true", help="tokenize standard input")
    p.add_argument("--ids", action="store_true", help="print only the ids, as a list like [1, 2, 3]")
    p.add_argument("--no-parse-special", action="store_true",
                   help="treat special tokens' text (<|im_start|>, ...) as plain text")
    p.add_argument("--no-bos", action="store_true", help="do not add BOS even if the model wants one")
    p.add_argument("--no-escape", action="store_true", help="do not process escapes (\\n, \\t, ...)")
    p.add_argument("--show-count", action="store_true", help="print the number of tokens at the end")


def process_escapes(data: bytes) -> bytes:
    """llama.cpp's string_process_escapes: \\n \\r \\t \\' \\" \\\\ and \\xNN; anything else is kept."""
    out = bytearray()
    i, n = 0, len(data)
    simple = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"', ord("\\"): b"\\"}
    while i < n:
        c = data[i]
        if c == 0x5C and i + 1 < n:
            i += 1
            e = data[i]
            if e in simple:
                out += simple[e]
            elif e == ord("x") and i + 2 < n and all(chr(h) in "0123456789abcdefABCDEF" for h in data[i + 1:i + 3]):
                out.append(int(data[i + 1:i + 3], 16))
                i += 2
            else:
                out += b"\\" + bytes([e])
        else:
            out.append(c)
        i += 1
    return bytes(out)


def run(args) -> int:
    from ggufq.files.gguf_reader import GGUFFile
    from ggufq.text.tokenizer import Tokenizer

    if args.prompt is not None:
        data = args.prompt.encode("utf-8", errors="surrogateescape")
    elif args.file is not None:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise GGUFQError(f"cannot read {args.file}: {e.strerror}") from None
    else:
        data = sys.stdin.buffer.read()
    if not args.no_escape:
        data = process_escapes(data)
    text = data.decode("utf-8", errors="replace")

    with GGUFFile(args.model) as g:
        tok = Tokenizer.from_gguf(g)
    ids = tok.encode(text, add_special=tok.add_bos and not args.no_bos, parse_special=not args.no_parse_special)

    out = sys.stdout.buffer
    if args.ids:
        out.write(("[" + ", ".join(str(i) for i in ids) + "]\n").encode())
    else:
        for i in ids:
            out.write(b"%6d -> '" % i + tok.token_to_piece(i) + b"'\n")
    if args.show_count:
        out.write(f"Total number of tokens: {len(ids)}\n".encode())
    out.flush()
    return 0
