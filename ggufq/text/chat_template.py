"""Chat templates: render `tokenizer.chat_template` the way transformers' apply_chat_template does.

    tmpl = ChatTemplate.from_gguf(g, tokenizer)      # the file's template, or a named fallback
    prompt = tmpl.render(messages, add_generation_prompt=True)

Templates come from files we do not trust, so they run in jinja2's ImmutableSandboxedEnvironment, with the
settings and variables transformers uses (trim_blocks, lstrip_blocks, loopcontrols; `messages`, `tools`,
`documents`, `add_generation_prompt`, the special tokens' texts `bos_token`, `eos_token`, ..., plus
`raise_exception` and `strftime_now`, and a `tojson` that does not escape HTML). Before anything runs, the
template's syntax tree is checked: any reach for a Python internal (an attribute or key starting with an
underscore, `|attr('__...')`, known escape hatches like `cycler.__init__`) refuses the whole template with
a GGUFQError. At render time the sandbox stops whatever the static check cannot see, and that too becomes
a GGUFQError. Every render is bounded in time, loop iterations, call depth, output size and memory
(text/template_limits.py): a breach is one GGUFQError naming the file and the limit.

A file without a template gets a fallback, announced on stderr: Gemma's turn format for the gemma
architectures, ChatML otherwise.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime

from ggufq.errors import ChatTemplateError, GGUFQError
from ggufq.text.template_limits import Limits, RenderGuard, TemplateLimit, bound_template, bounded_loop, memory_cap

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma's turn format (as Gemma 3 instruction-tuned models use it): BOS, a system message folded into the first
# user turn, "assistant" called "model", contents trimmed, each turn closed by <end_of_turn>.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] | trim + '\\n\\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{% set first_user_prefix = '' %}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# A plain transcript for base (pretrained) models, which have no chat template and were never taught one:
# the system message as a preamble, then "User: ..." and "Assistant: ..." lines. The model continues the
# transcript, so its answer ends where it starts the user's next line (PLAIN_STOP).
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] | trim + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] | trim + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] | trim + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
PLAIN_STOP = ("\nUser:",)

FALLBACKS = {"chatml": CHATML_TEMPLATE, "gemma": GEMMA_TEMPLATE, "plain": PLAIN_TEMPLATE}

# names whose attributes lead out of the sandbox in known exploits; any attribute of them is refused
_ESCAPE_HATCHES = {"cycler", "joiner", "namespace", "lipsum", "self", "range", "dict", "config", "request",
                   "get_flashed_messages", "url_for"}
_SAFE_METHODS_OF_HATCHES = {("cycler", "next"), ("cycler", "reset"), ("cycler", "current")}


def _environment():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        """The sandbox with a RenderGuard (set per render) counting calls and checking the operators
        that can build large values."""
        # intercepted operators are also never folded into constants when the template is compiled, so
        # '%' is here too: its result is only bounded by the memory cap, which holds inside the render
        intercepted_binops = frozenset({"*", "**", "+", "%"})
        guard = RenderGuard(Limits())

        def call_binop(self, context, operator, left, right):
            self.guard.binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's own signature)
            __self.guard.enter()
            try:
                return super().call(__context, __obj, *args, **kwargs)
            finally:
                __self.guard.leave()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True,
                         extensions=[jinja2.ext.loopcontrols, _generation_extension()])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["ggufq_bounded_loop"] = lambda iterable: bounded_loop(env.guard, iterable)
    env.globals["ggufq_bounded_concat"] = lambda parts: env.guard.concat(parts)
    return env


def _generation_extension():
    """transformers' {% generation %} ... {% endgeneration %} block (it only marks assistant text); rendered
    as its body."""
    import jinja2
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    return Generation


def check_template(source: str, env=None) -> None:
    """Refuse a template that reaches for Python internals, before any of it runs."""
    import jinja2
    from jinja2 import nodes

    env = env or _environment()
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template: syntax error at line {e.lineno}: {e.message}") from None

    def refuse(what: str, node):
        raise ChatTemplateError(f"chat template refused: it reaches for Python internals ({what}, line {node.lineno}); "
                         "nothing was rendered")

    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Const, nodes.Call, nodes.Name)):
        if isinstance(node, nodes.Name):
            if node.name.startswith("ggufq_"):  # the render's own bounds (template_limits): not to be replaced
                raise ChatTemplateError(f"chat template refused: it names {node.name} (line {node.lineno}), which "
                                 "ggufq reserves for its limits; nothing was rendered")
        elif isinstance(node, nodes.Getattr):
            if node.attr.startswith("_"):
                refuse(f".{node.attr}", node)
            if isinstance(node.node, nodes.Name) and node.node.name in _ESCAPE_HATCHES \
                    and (node.node.name, node.attr) not in _SAFE_METHODS_OF_HATCHES:
                refuse(f"{node.node.name}.{node.attr}", node)
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
                refuse(f"[{node.arg.value!r}]", node)
        elif isinstance(node, nodes.Filter):
            if node.name == "attr":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, nodes.Const) and isinstance(arg.value, str) and not arg.value.startswith("_")):
                    refuse("|attr with a computed or private name", node)
        elif isinstance(node, nodes.Const):
            if isinstance(node.value, str) and node.value.startswith("__") and node.value.endswith("__"):
                refuse(repr(node.value), node)


def template_findings(source: str) -> list[str]:
    """What `ggufq inspect` flags in a file's template, without running it: a reach for what the sandbox
    forbids (the refusal check_template would give), and loops or calls that may not end: recursive loops,
    macros that call themselves, loops nested three deep, ranges over 10,000 items. A render would stop
    at its limits anyway (template_limits); a template made in good faith has none of these."""
    import jinja2
    from jinja2 import nodes
    try:
        check_template(source)
    except GGUFQError as e:
        return [str(e).removeprefix("chat template ").removeprefix("refused: ")]
    ast = _environment().parse(source)
    found = []
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            found.append(f"a recursive loop (line {loop.lineno})")
        depth = 1 + sum(1 for _ in _enclosing_loops(ast, loop))
        if depth == 3:
            found.append(f"loops nested {depth} deep (line {loop.lineno})")
    for macro in ast.find_all(nodes.Macro):
        if any(isinstance(c.node, nodes.Name) and c.node.name == macro.name for c in macro.find_all(nodes.Call)):
            found.append(f"macro {macro.name} calls itself (line {macro.lineno})")
    for call in ast.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "range":
            try:
                n = max(int(a.as_const()) for a in call.args[:2]) if call.args else 0
            except (nodes.Impossible, TypeError, ValueError, jinja2.TemplateError):
                continue
            if n > 10_000:
                found.append(f"range over {n:,} items (line {call.lineno})")
    return found


def _enclosing_loops(tree, target):
    """The For nodes that contain `target`."""
    from jinja2 import nodes
    for loop in tree.find_all(nodes.For):
        if loop is not target and any(n is target for n in loop.find_all(nodes.For)):
            yield loop


class ChatTemplate:
    """A compiled, checked chat template and the special-token texts it is rendered with."""

    def __init__(self, source: str, special_tokens: dict[str, str] | None = None, name: str = "file",
                 stop: tuple[str, ...] = (), origin: str = "", limits: Limits | None = None):
        self.source = source
        self.name = name
        self.stop = stop  # texts that end an answer besides an end-of-generation token
        self.special_tokens = dict(special_tokens or {})
        self.origin = origin  # the file the template came from, for messages
        self.limits = limits or Limits()
        self._env = _environment()
        try:
            check_template(source, self._env)
        except GGUFQError as e:
            raise ChatTemplateError(f"{self.origin}: {e}" if self.origin else str(e)) from None
        try:  # compiling evaluates the constant parts (filters of constants): under the memory cap too
            with memory_cap(self.limits.memory):
                self._template = self._env.from_string(bound_template(self._env.parse(source)))
        except MemoryError:
            raise ChatTemplateError(f"{self._where}: compiling it needed more than {self.limits.memory >> 20} MiB "
                             "(a limit of ggufq's, against hostile files)") from None
        except Exception as e:
            raise ChatTemplateError(f"{self._where} cannot be compiled: {type(e).__name__}: {e}") from None

    @property
    def _where(self) -> str:
        return f"{self.origin}: chat template" if self.origin else "chat template"

    @classmethod
    def plain(cls) -> "ChatTemplate":
        """The transcript format for a base model (PLAIN_TEMPLATE), answers ending at PLAIN_STOP."""
        return cls(PLAIN_TEMPLATE, name="plain", stop=PLAIN_STOP)

    @classmethod
    def from_gguf(cls, g, tokenizer=None, quiet: bool = False) -> "ChatTemplate":
        """The file's tokenizer.chat_template, or a fallback (with a notice on stderr) when it has none."""
        special = {}
        if tokenizer is not None:
            for key, tid in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id),
                             ("unk_token", tokenizer.unk_id), ("pad_token", tokenizer.pad_id)):
                if tid is not None:
                    special[key] = tokenizer.tokens[tid]
        source = g.get("tokenizer.chat_template")
        if source:
            return cls(source, special, name="file", origin=str(getattr(g, "path", "")))
        arch = g.get("general.architecture", "") or ""
        name = "gemma" if arch.startswith("gemma") else "chatml"
        if not quiet:
            print(f"ggufq: the file has no chat template; using the built-in {name} template "
                  f"({'Gemma turn format' if name == 'gemma' else 'ChatML'})", file=sys.stderr)
        return cls(FALLBACKS[name], special, name=name)

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list | None = None,
               documents: list | None = None, **kwargs) -> str:
        """The prompt text for a conversation, as apply_chat_template(..., tokenize=False) returns it."""
        import jinja2
        from jinja2.sandbox import SecurityError

        variables = {**self.special_tokens, **kwargs}
        where = self._where
        guard = self._env.guard = RenderGuard(self.limits)
        parts, size = [], 0
        try:
            with memory_cap(self.limits.memory):
                for part in self._template.generate(messages=messages, tools=tools, documents=documents,
                                                    add_generation_prompt=add_generation_prompt, **variables):
                    size += len(part)
                    guard.size(size, "the rendered prompt")
                    parts.append(part)
            return "".join(parts)
        except TemplateLimit as e:
            raise ChatTemplateError(f"{where} stopped: {e} (a limit of ggufq's, against hostile files)") from None
        except MemoryError:
            parts.clear()
            raise ChatTemplateError(f"{where} stopped: it needed more than {self.limits.memory >> 20} MiB "
                             "(a limit of ggufq's, against hostile files)") from None
        except RecursionError:
            raise ChatTemplateError(f"{where} stopped: it recursed too deep") from None
        except SecurityError as e:
            raise ChatTemplateError(f"{where} refused by the sandbox: {e}") from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"{where}: {e}") from None
        except Exception as e:  # the template's own errors (a division by zero, a wrong type): its fault
            raise ChatTemplateError(f"{where} failed: {type(e).__name__}: {e}") from None
