"""The `ggufq` command: one sub-command per module in ggufq/commands.

Each command module has `configure(parser)` and `run(args) -> int`, and keeps heavy imports (numba,
the runtime) inside `run`, so `ggufq --help` and `ggufq inspect` start fast. Errors meant for the user
are GGUFQError: one line on stderr, exit status 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from ggufq.errors import GGUFQError

COMMANDS = {
    "inspect": "show a GGUF file's metadata, tokenizer and tensors",
    "convert": "convert a Hugging Face folder (safetensors) into GGUF",
    "export": "write a GGUF back out as a Hugging Face folder",
    "quantize": "quantize a GGUF like llama-quantize",
    "perplexity": "perplexity of a GGUF on a text file, like llama-perplexity",
    "imatrix": "an importance matrix from a calibration text, like llama-imatrix",
    "compare": "quantized files side by side against their base, per workload: table, JSON, plot",
    "bench": "prompt and generation speed, like llama-bench",
    "tokenize": "tokenize text with a GGUF's tokenizer, like llama-tokenize",
    "run": "complete a prompt, like llama-completion -no-cnv",
    "chat": "chat with a model in the terminal",
}


def _module(name: str):
    """The command's module, or None where it is not installed."""
    try:
        return importlib.import_module(f"ggufq.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"ggufq.commands.{name}":
            raise
        return None


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 1 (argparse's own would print the usage
    block and exit 2, the status ggufq keeps for bad input files)."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for argv (default sys.argv[1:]). Only the command argv names has its module imported and
    its options configured: importing all eleven took 0.24 s of every command, a quarter of a first token.
    Without a command (`ggufq --help`) every command is listed with its one-line help."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = _Parser(prog="ggufq", description=__doc__.splitlines()[0])
    from ggufq import __version__
    parser.add_argument("--version", action="version", version=f"ggufq {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (for developers; also GGUFQ_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, help_ in COMMANDS.items():
        module = _module(name) if name == chosen else None
        if name == chosen and module is None:
            continue    # not installed: argparse says it is not a valid choice
        p = sub.add_parser(name, help=help_, description=help_)
        if module is not None:
            module.configure(p)
            p.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C: every temporary file is removed on the way out."""


def _terminate(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    # SIGTERM as an exception while the command runs (and only then: a process that calls main() keeps its
    # own handling otherwise)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _run(args)
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    debug = args.debug or os.environ.get("GGUFQ_DEBUG") == "1"
    try:
        return int(args._run(args) or 0)
    except GGUFQError as e:
        if debug:
            raise
        print(f"ggufq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (`ggufq ... | head`)
        return 0
    except OSError as e:  # the system's answer (a full disk, a permission): one line, not a bug
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"ggufq {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except (MemoryError, RecursionError, ValueError, ArithmeticError, LookupError, TypeError) as e:
        if debug:
            raise
        # a case no check foresaw: still one line, and what to do about it
        print(f"ggufq {args.command}: internal error: {type(e).__name__}: {e} (a bug in ggufq: please report "
              "it; --debug shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"ggufq {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130


def run_quiet(argv: list[str]) -> tuple[int, str]:
    """main(argv) in this process with its output captured: (exit status, what it wrote on stderr).
    For the library's own uses of a command (the warm-up, the dynamic recipe's probe files)."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


def entry() -> None:
    """The `ggufq` command itself: main(), then the process ends without the interpreter's teardown.
    Freeing numba's and LLVM's object graphs module by module takes 0.2-0.3 s after every command (a fifth
    of a whole SmolLM2 quantize, measured with the bench's paired runs); by then every output is closed and
    renamed into place, so only atexit handlers and the standard streams are left to finish."""
    code = main()
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
