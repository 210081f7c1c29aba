"""Chat templates render as transformers' apply_chat_template (tests/data/chat_fixtures.json, made by
tools/make_chat_fixtures.py with transformers in a throwaway venv), fallbacks, and template injection refused."""
from __future__ import annotations

import json

import pytest

from ggufq.text.chat_template import FALLBACKS, ChatTemplate, check_template
from ggufq.errors import GGUFQError
from ggufq.files.gguf_reader import GGUFFile
from ggufq.text.tokenizer import Tokenizer

from .conftest import DATA, GEMMA, SMOL

FIX = json.loads((DATA / "chat_fixtures.json").read_text(encoding="utf-8"))
PATHS = {"SmolLM2-135M-Instruct.Q4_1.gguf": SMOL, "gemma-3-270m-q4_k_m.gguf": GEMMA}


@pytest.mark.parametrize("name", list(PATHS))
def test_real_models_render_like_transformers(name, capfd):
    with GGUFFile(PATHS[name]) as g:
        tmpl = ChatTemplate.from_gguf(g, Tokenizer.from_gguf(g))
    err = capfd.readouterr().err
    fx = FIX["models"][name]
    assert tmpl.name == fx["template_name"]
    if name.startswith("gemma"):  # the file has no template: the Gemma fallback, announced on stderr
        assert tmpl.name == "gemma" and "no chat template" in err and "gemma" in err
    else:
        assert tmpl.name == "file" and err == ""
    for c in fx["cases"]:
        assert tmpl.render(c["messages"], add_generation_prompt=c["add_generation_prompt"]) == c["expected"]


@pytest.mark.parametrize("name", ["synthetic", "synthetic+tools"])
def test_jinja_settings_like_transformers(name):
    fx = FIX["models"][name]
    tmpl = ChatTemplate(fx["template"], fx["special"])
    for c in fx["cases"]:
        got = tmpl.render(c["messages"], add_generation_prompt=c["add_generation_prompt"], tools=fx["tools"])
        assert got == c["expected"]


def test_gemma_fallback_is_gemma_turn_format():
    t = ChatTemplate(FALLBACKS["gemma"], {"bos_token": "<bos>"})
    got = t.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
                    {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}])
    assert got == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                   "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(GGUFQError, match="alternate"):
        t.render([{"role": "assistant", "content": "x"}])


def test_chatml_fallback_for_other_architectures(tmp_path, capfd):
    class G:  # a file without a template, of a non-Gemma architecture
        def get(self, key, default=None):
            return {"general.architecture": "llama"}.get(key, default)
    t = ChatTemplate.from_gguf(G())
    assert t.name == "chatml" and "ChatML" in capfd.readouterr().err
    assert t.render([{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


INJECTIONS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('touch PWNED') }}",
    "{{ self._TemplateReference__context }}",
    "{{ messages['__class__'] }}",
    "{{ messages|attr('__class__') }}",
    "{{ messages|attr('_' ~ '_class__') }}",
    "{% set x = namespace.__init__ %}{{ x }}",
    "{{ request.application.__globals__ }}",
    "{{ range.__self__ }}",
]


@pytest.mark.parametrize("source", INJECTIONS)
def test_template_injection_refused_before_running(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GGUFQError, match="refused"):
        ChatTemplate(source, {"bos_token": "<s>"})
    assert not (tmp_path / "PWNED").exists()


def test_sandbox_stops_what_the_static_check_cannot_see(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a private name built at render time passes the syntax check; the sandbox refuses it when it is used
    t = ChatTemplate("{% set k = '_' ~ '_class__' %}{{ messages[0].role[k].mro() }}", {})
    with pytest.raises(GGUFQError, match="sandbox"):
        t.render([{"role": "user", "content": "x"}])
    # the immutable sandbox refuses to modify the caller's data
    t2 = ChatTemplate("{% set f = messages.pop %}{{ f() }}", {})
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(GGUFQError, match="sandbox"):
        t2.render(msgs)
    assert len(msgs) == 1


def test_check_template_accepts_ordinary_templates():
    for src in FALLBACKS.values():
        check_template(src)
    check_template("{% for m in messages %}{{ m['role'] | attr('upper') }}{{ loop.index }}{% endfor %}")
    with pytest.raises(GGUFQError, match="syntax error"):
        check_template("{% for m in messages %}")
