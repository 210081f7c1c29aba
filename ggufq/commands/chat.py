"""ggufq chat -m FILE [-sys SYSTEM] [-n N] [sampling]: a multi-turn chat in the terminal.

On a terminal: a `> ` prompt with readline editing and history (kept in ~/.ggufq_chat_history, or the
file GGUFQ_CHAT_HISTORY names; empty = none), the answer streamed as it is generated;
Ctrl-C stops the current answer (what was said so far stays in the conversation), Ctrl-D ends the chat.
With standard input not a terminal (a pipe, a file), each line is one user message and each answer is
printed followed by a newline: scriptable.

The conversation is rendered with the model's chat template (or a fallback, announced on stderr) and the
KV cache is kept between turns, so a turn only evaluates the tokens that are new since the last one.
"""
from __future__ import annotations

import os
import sys

from ggufq.errors import ChatTemplateError, GGUFQError
from ggufq.commands._args import count_or_all
from ggufq.commands._sampling_args import add_sampling_args, sampling_kwargs


def configure(p):
    p.add_argument("-m", "--model", required=True, help="GGUF file")
    p.add_argument("-sys", "--system-prompt", default=None, help="system message")
    p.add_argument("-n", "--n-predict", type=count_or_all, default=-1,
                   help="at most this many tokens per answer, -1 = until end of turn (default -1)")
    add_sampling_args(p)


def _read_line(interactive: bool) -> str | None:
    """The next user message; None at the end (Ctrl-D or end of input)."""
    if interactive:
        return input("> ")  # EOFError and KeyboardInterrupt are handled by the caller
    line = sys.stdin.readline()
    if line == "":
        return None
    return line.rstrip("\r\n")


def _history_file() -> str | None:
    path = os.environ.get("GGUFQ_CHAT_HISTORY")
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".ggufq_chat_history")
    return path or None


def _setup_readline():
    """Line editing and history for input(); returns a function that saves the history."""
    try:
        import readline
    except ImportError:
        return lambda: None
    path = _history_file()
    if path and os.path.exists(path):
        try:
            readline.read_history_file(path)
        except OSError:
            pass

    def save():
        if path:
            try:
                readline.set_history_length(1000)
                readline.write_history_file(path)
            except OSError:
                pass
    return save


def run(args) -> int:
    from ggufq.text.generate import ChatSession
    from ggufq.runtime.model import Model

    interactive = sys.stdin.isatty()
    if interactive:
        # Ctrl-C stops an answer even when the shell that started us ignores SIGINT (a background job)
        import signal
        signal.signal(signal.SIGINT, signal.default_int_handler)
    save_history = _setup_readline() if interactive else (lambda: None)
    model = Model.load(args.model, n_ctx=args.ctx_size, n_threads=args.threads)
    model.warm_up()  # compiling or loading kernels is not part of the reported speeds
    template = None
    if not model.gguf.get("tokenizer.chat_template"):
        from ggufq.text.chat_template import ChatTemplate
        template = ChatTemplate.plain()
        print(f"ggufq chat: {args.model} has no chat template: it is a base (pretrained) model, which continues "
              "text rather than answering. Chatting in a plain 'User:/Assistant:' transcript; for plain "
              "completion use `ggufq run`.", file=sys.stderr)

    def notice(message):
        print(f"ggufq chat: {message}", file=sys.stderr)

    session = ChatSession(model, system=args.system_prompt, template=template, max_tokens=args.n_predict,
                          notice=notice, **sampling_kwargs(args))
    out = sys.stdout
    if interactive:
        print(f"ggufq chat: {args.model} ({session.template.name} template). "
              "Ctrl-C stops an answer, Ctrl-D quits.", file=sys.stderr)
    turns = 0
    while True:
        try:
            line = _read_line(interactive)
        except EOFError:
            line = None
        except KeyboardInterrupt:
            out.write("\n")
            out.flush()
            continue
        if line is None:
            if interactive:
                out.write("\n")
            break
        if not line.strip():
            continue
        answer = session.send(line)
        try:
            for piece in answer:
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            answer.close()  # the partial answer stays in the conversation, the cache in step with it
            out.write("\n")
            print("[answer interrupted]", file=sys.stderr)
        except ChatTemplateError:  # the file's template: no turn can be rendered, the chat ends here
            raise
        except GGUFQError as e:  # this message alone does not fit the context: say so, go on
            print(f"ggufq chat: {e}", file=sys.stderr)
            continue
        if session.stats.stop == "context":
            print(f"[answer cut: the context of {model.n_ctx} tokens is full (-c)]", file=sys.stderr)
        # one blank line between answers in pipe mode, so that a script can tell them apart
        out.write("\n" if interactive else "\n\n")
        out.flush()
        turns += 1
        if interactive:
            print(f"[{session.stats.line()}]", file=sys.stderr)
    save_history()
    if not interactive:
        print(f"ggufq chat: {turns} turns, last: {session.stats.line()}", file=sys.stderr)
    return 0
