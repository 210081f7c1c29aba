"""Hostile chat templates: every render is bounded (text/template_limits.py). The three attacks of the
issue (an endless loop, a gigantic string, endless recursion) and their relatives each stop with one
GGUFQError naming the file and the limit, quickly and with bounded memory; through `ggufq chat` that is
one line on stderr and exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ggufq.errors import GGUFQError
from ggufq.text.chat_template import CHATML_TEMPLATE, ChatTemplate
from ggufq.text.template_limits import Limits

from .tiny_models import tiny_gguf

MSGS = [{"role": "user", "content": "hi"}]

ATTACKS = {  # name: (template, the words of the limit it meets)
    "endless loop": ("{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
                     "{% endfor %}{% endfor %}{% endfor %}", "iterations"),
    "gigantic string": ("{% set s = 'a' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
                        "longer than"),
    "gigantic string at once": ("{{ 'a' * 10000000000 }}", "longer than"),
    "doubling by ~": ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                      "{% endfor %}{{ ns.s }}", "longer than"),
    "endless recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested deeper"),
    "recursive loop": ("{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}", "nested deeper"),
    "huge power": ("{{ 7 ** 100000000 }}", "power"),
    "format width": ("{{ '%*s' % (2000000000, 'a') }}", "MiB"),
    "str.format width": ("{{ '{:>3000000000}'.format('a') }}", "MiB"),
    "filter width": ("{{ messages[0].role|center(3000000000) }}", "MiB"),
    "constant filter width": ("{{ 'a'|center(3000000000) }}", "MiB"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_hostile_template_stops_inside_the_render(name):
    source, limit = ATTACKS[name]
    t0 = time.monotonic()
    with pytest.raises(GGUFQError) as e:
        ChatTemplate(source, origin="evil.gguf").render(MSGS)
    msg = str(e.value)
    assert msg.startswith("evil.gguf: chat template") and limit in msg and "\n" not in msg, msg
    assert time.monotonic() - t0 < 5.0


def test_limits_leave_ordinary_templates_alone():
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 200} for i in range(400)]
    out = ChatTemplate(CHATML_TEMPLATE, limits=Limits.for_context(131072)).render(many)
    assert out.count("<|im_start|>") == 401
    # the output bound follows the context: the same conversation is too long for a 2k-token model's prompt
    with pytest.raises(GGUFQError, match="rendered prompt would be longer than 65,536"):
        ChatTemplate(CHATML_TEMPLATE, limits=Limits.for_context(2048)).render(many)
    # a template's own mistakes are one line too, not a traceback
    with pytest.raises(GGUFQError, match="ZeroDivisionError"):
        ChatTemplate("{{ 1 / (messages|length - 1) }}").render(MSGS)
    with pytest.raises(GGUFQError, match="reserves for its limits"):
        ChatTemplate("{% set ggufq_bounded_loop = 1 %}")


WRAPPER = """import json, resource, subprocess, sys, time
t0 = time.monotonic()
r = subprocess.run(sys.argv[1:], input="hi\\n", capture_output=True, text=True, timeout=60)
print(json.dumps({"rc": r.returncode, "err": r.stderr, "out": r.stdout, "s": time.monotonic() - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@pytest.mark.parametrize("name", ["endless loop", "gigantic string", "endless recursion"])
def test_chat_with_a_hostile_file_is_one_line_and_exit_2(tmp_path, name):
    source = ATTACKS[name][0]
    path = tiny_gguf(tmp_path / "evil.gguf", extra=lambda w: w.add_chat_template(source))
    r = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "ggufq", "chat", "-m", str(path),
                        "-n", "4"], capture_output=True, text=True, timeout=120)
    got = json.loads(r.stdout)
    lines = got["err"].strip().splitlines()
    assert got["rc"] == 2 and len(lines) == 1, got
    assert str(path) in lines[0] and "limit" in lines[0] and "Traceback" not in got["err"]
    assert got["rss_mb"] < 1024, got


def test_inspect_flags_hostile_templates(tmp_path):
    """`ggufq inspect` says what a template reaches for, or which loops and calls may not end, without
    running it; the real models' templates are not flagged."""
    from ggufq.text.chat_template import template_findings
    from .conftest import GEMMA, SMOL
    from ggufq.files.gguf_reader import GGUFFile
    for name in ("endless loop", "endless recursion", "recursive loop"):
        assert template_findings(ATTACKS[name][0]), name
    assert template_findings("{{ cycler.__init__.__globals__ }}")[0].startswith("it reaches for Python internals")
    assert template_findings("{% for i in range(1000000000) %}{% endfor %}") == ["range over 1,000,000,000 items (line 1)"]
    for real in (SMOL, GEMMA):
        with GGUFFile(real) as g:
            assert template_findings(g.get("tokenizer.chat_template")) == []
    assert template_findings(CHATML_TEMPLATE) == []
    path = tiny_gguf(tmp_path / "evil.gguf", extra=lambda w: w.add_chat_template(ATTACKS["endless recursion"][0]))
    r = subprocess.run([sys.executable, "-m", "ggufq", "inspect", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "chat template flagged: macro f calls itself (line 1)" in r.stdout, r.stdout
