"""ggufq run -m FILE -p PROMPT [-n N] [sampling]: complete a prompt, like llama-completion -no-cnv.

stdout gets the prompt (its tokens' text, unless --no-display-prompt) and the continuation, streamed token
by token as raw bytes, and nothing else; timings go to stderr. The prompt is tokenized as llama-completion
does (BOS per the model, special tokens parsed, escapes like \\n processed unless --no-escape).
"""
from __future__ import annotations

import sys

from ggufq.errors import GGUFQError
from ggufq.commands._args import count_or_all
from ggufq.commands._sampling_args import add_sampling_args, sampling_kwargs


def configure(p):
    p.add_argument("-m", "--model", required=True, help="GGUF file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-p", "--prompt", help="prompt text")
    src.add_argument("-f", "--file", help="read the prompt from a file")
    p.add_argument("-n", "--n-predict", type=count_or_all, default=-1,
                   help="tokens to generate, -1 = until end of generation or a full context (default -1)")
    p.add_argument("--no-display-prompt", action="store_true", help="print only the continuation")
    p.add_argument("--no-escape", action="store_true", help="do not process escapes (\\n, \\t, ...) in the prompt")
    add_sampling_args(p)


def run(args) -> int:
    from ggufq.text.generate import Stats, eval_prompt, generate_ids, make_sampler
    from ggufq.runtime.model import Model
    from ggufq.commands.tokenize import process_escapes

    if args.prompt is not None:
        data = args.prompt.encode("utf-8", errors="surrogateescape")
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise GGUFQError(f"cannot read {args.file}: {e.strerror}") from None
    if not args.no_escape:
        data = process_escapes(data)
    prompt = data.decode("utf-8", errors="replace")

    model = Model.load(args.model, n_ctx=args.ctx_size, n_threads=args.threads)
    model.warm_up()  # compiling or loading kernels is not part of the reported speeds
    tok = model.tokenizer
    sampler = make_sampler(model, **sampling_kwargs(args))
    ids = tok.encode(prompt, add_special=True, parse_special=True)
    if not ids:
        if not (tok.add_bos and tok.bos_id is not None):
            raise GGUFQError("the prompt is empty")
        ids = [tok.bos_id]
    if len(ids) >= model.n_ctx:
        raise GGUFQError(f"the prompt has {len(ids)} tokens, the context only {model.n_ctx} (-c)")

    out = sys.stdout.buffer
    if not args.no_display_prompt:
        out.write(b"".join(tok.token_to_piece(t, special=False) for t in ids))
        out.flush()
    stats = Stats()
    try:
        logits = eval_prompt(model, ids, sampler, stats)
        for t in generate_ids(model, logits, sampler, args.n_predict, stats):
            out.write(tok.token_to_piece(t, special=False))
            out.flush()
    finally:
        print(f"\nggufq run: {stats.line()}", file=sys.stderr)
    return 0
