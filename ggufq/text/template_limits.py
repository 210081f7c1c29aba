"""Bounds on one render of a chat template: time, loop iterations, call depth, output size and memory.

A chat template is a program from whoever made the file. jinja2's sandbox keeps it away from Python's
internals but not from the machine: a loop of 10^10 steps, a string of 10 GB or a macro that calls itself
would hang ggufq, exhaust memory or end in a traceback. The bounds are enforced inside the render, by the
code the template runs through (no watchdog): every loop's iterable is wrapped (`bounded_loop`, put in by
`bound_template` on the template's syntax tree), every call the template makes goes through the sandbox's
`call`, the binary operators that can build a large value (`*`, `**`, `+`) through its `call_binop`, and
`~` (concatenation) through `bounded_concat`. Each of these counts and checks the clock. Whatever size
these cannot foresee (a format width, a filter's argument) meets the memory cap: the process's data
segment may grow by `memory` bytes during the render (RLIMIT_DATA, restored after), and past it Python
raises MemoryError inside the render. Any breach is a TemplateLimit naming the limit.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    seconds: float = 2.0              # wall time of one render
    iterations: int = 1_000_000       # loop iterations, all loops of one render together
    depth: int = 64                   # nested calls (macros, recursive loops, functions)
    output_chars: int = 1 << 20       # the rendered text, and any one string or list the template builds
    memory: int = 512 << 20           # growth of the process's data segment during the render, in bytes

    @classmethod
    def for_context(cls, n_ctx: int) -> "Limits":
        """Output bounded by a few times what the model's context can hold (~4 characters a token)."""
        return cls(output_chars=max(1 << 16, 16 * n_ctx))


class TemplateLimit(Exception):
    """A render went past one of its Limits; the message says which."""


class RenderGuard:
    """The counters and the deadline of one render."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.start()

    def start(self) -> None:
        self.iterations = 0
        self.depth = 0
        self.deadline = time.monotonic() + self.limits.seconds

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"it ran longer than {self.limits.seconds:g} s")

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.iterations:
            raise TemplateLimit(f"its loops ran more than {self.limits.iterations:,} iterations")
        if self.iterations & 255 == 0:
            self.clock()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.depth:
            raise TemplateLimit(f"its calls nested deeper than {self.limits.depth} (endless recursion?)")
        self.clock()

    def leave(self) -> None:
        self.depth -= 1

    def size(self, n: int, what: str = "a value") -> None:
        if n > self.limits.output_chars:
            raise TemplateLimit(f"{what} would be longer than {self.limits.output_chars:,} characters")

    def binop(self, op: str, left, right) -> None:
        """Refuse, before it is computed, an operation whose result would be over the size limits."""
        self.clock()
        seq = (str, list, tuple)
        if op == "*":
            for a, b in ((left, right), (right, left)):
                if isinstance(a, seq) and isinstance(b, int) and not isinstance(b, bool):
                    self.size(len(a) * max(b, 0))
        elif op == "+":
            if isinstance(left, seq) and isinstance(right, seq):
                self.size(len(left) + len(right))
        elif op == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0 \
                    and left.bit_length() * right > 4096:
                raise TemplateLimit("it computes a power with more than 4096 bits")

    def concat(self, parts) -> str:
        texts = [str(p) for p in parts]
        self.size(sum(map(len, texts)))
        self.clock()
        return "".join(texts)


def bounded_loop(guard: RenderGuard, iterable):
    """The iterable of a template's {% for %}, counted item by item."""
    for item in iterable:
        guard.tick()
        yield item


def bound_template(ast):
    """The template's syntax tree with every loop's iterable wrapped in bounded_loop and every `~` made a
    call of bounded_concat (both globals of the sandbox, see chat_template._environment)."""
    from jinja2 import nodes
    for node in list(ast.find_all(nodes.For)):
        node.iter = nodes.Call(nodes.Name("ggufq_bounded_loop", "load"), [node.iter], [], None, None,
                               lineno=node.lineno)
    for node in list(ast.find_all(nodes.Concat)):
        parts = nodes.List(node.nodes, lineno=node.lineno)
        call = nodes.Call(nodes.Name("ggufq_bounded_concat", "load"), [parts], [], None, None, lineno=node.lineno)
        _replace(ast, node, call)
    return ast


def _replace(tree, old, new) -> None:
    """Put `new` where `old` is in the tree (jinja2's nodes keep children in named fields)."""
    from jinja2 import nodes
    for parent in [tree, *tree.find_all(nodes.Node)]:
        for field in parent.fields:
            value = getattr(parent, field, None)
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return


@contextmanager
def memory_cap(extra: int):
    """Let the data segment grow by at most `extra` bytes inside the block (Linux; elsewhere no cap)."""
    try:
        import resource
        with open("/proc/self/status") as f:
            vm_data = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    except (ImportError, OSError, StopIteration, ValueError):
        yield
        return
    cap = vm_data + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield                       # already capped tighter
        return
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
