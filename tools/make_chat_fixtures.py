"""Make tests/data/chat_fixtures.json: transformers' apply_chat_template on the real models' templates.

    .venv/bin/python tools/make_chat_fixtures.py --hf-python /path/to/throwaway-venv/bin/python

transformers is not a dependency of ggufq: the rendering runs in another interpreter (a throwaway venv with
transformers and jinja2), fed over stdin. This side reads each GGUF's template and special tokens with ggufq;
a file without a template (Gemma 3 270M) is rendered with the fallback ggufq uses for it, so the fixture
checks that our jinja environment renders it as transformers would.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "user", "content": "Hello!"}], False),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3?"}], True),
    ([{"role": "user", "content": "  spaces around, and a newline\n"},
      {"role": "assistant", "content": "Ünïcödé 你好 🚀"}, {"role": "user", "content": "ok"}], True),
]

# whitespace-sensitive block tags, loop controls, tojson with HTML and non-ASCII, tools: checks the jinja settings
SYNTHETIC_TEMPLATE = """{% for m in messages %}
  {% if m.role == 'system' %}{% continue %}{% endif %}
<{{ m.role }}>{{ m.content | tojson }}
  {%- if loop.last %} (last){% endif %}

{% endfor %}
{% if tools is not none %}
tools: {{ tools | tojson(indent=2) }}
{% endif %}
{% if add_generation_prompt %}<assistant>{% endif %}
{{ bos_token }}|{{ eos_token }}"""
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now> & 'here'",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]

HF_SIDE = r"""
import json, sys
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast
import transformers, jinja2
job = json.load(sys.stdin)
out = {"transformers": transformers.__version__, "jinja2": jinja2.__version__, "models": {}}
for name, m in job.items():
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                  chat_template=m["template"], **m["special"])
    out["models"][name] = [tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp,
                                                   **({"tools": m["tools"]} if m.get("tools") else {}))
                           for msgs, agp in m["conversations"]]
json.dump(out, sys.stdout)
"""


def main() -> None:
    from ggufq.text.chat_template import ChatTemplate
    from ggufq.files.gguf_reader import GGUFFile
    from ggufq.text.tokenizer import Tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--hf-python", required=True, help="python of a venv with transformers and jinja2")
    args = ap.parse_args()
    job = {}
    for name in MODELS:
        with GGUFFile(ROOT / "models" / name) as g:
            tmpl = ChatTemplate.from_gguf(g, Tokenizer.from_gguf(g), quiet=True)
        job[name] = {"template": tmpl.source, "template_name": tmpl.name, "special": tmpl.special_tokens,
                     "conversations": CONVERSATIONS}
    job["synthetic"] = {"template": SYNTHETIC_TEMPLATE, "template_name": "synthetic",
                        "special": {"bos_token": "<s>", "eos_token": "</s>"}, "conversations": CONVERSATIONS}
    job["synthetic+tools"] = {**job["synthetic"], "tools": TOOLS}
    r = subprocess.run([args.hf_python, "-c", HF_SIDE], input=json.dumps(job), capture_output=True, text=True,
                       check=True)
    hf = json.loads(r.stdout)
    fixtures = {"command": "tools/make_chat_fixtures.py: PreTrainedTokenizerFast(chat_template=..., special tokens)"
                           ".apply_chat_template(messages, tokenize=False, add_generation_prompt=...)",
                "transformers": hf["transformers"], "jinja2": hf["jinja2"], "models": {}}
    for name in job:
        fixtures["models"][name] = {
            "template_name": job[name]["template_name"],
            "template": job[name]["template"] if name.startswith("synthetic") else None,
            "special": job[name]["special"],
            "tools": job[name].get("tools"),
            "cases": [{"messages": msgs, "add_generation_prompt": agp, "expected": text}
                      for (msgs, agp), text in zip(CONVERSATIONS, hf["models"][name])],
        }
    dst = ROOT / "tests" / "data" / "chat_fixtures.json"
    dst.write_text(json.dumps(fixtures, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {dst} (transformers {hf['transformers']}, jinja2 {hf['jinja2']})")


if __name__ == "__main__":
    main()
