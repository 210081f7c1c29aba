"""Text generation and chat on top of the runtime (ggufq.model.Model), the tokenizer and the sampler.

    from ggufq.runtime.model import Model
    from ggufq.text.generate import generate, chat, ChatSession
    m = Model.load("model.gguf")
    for piece in generate(m, "The capital of France is", 32, temp=0):   # text pieces, streamed
        print(piece, end="")
    print("".join(chat(m, [{"role": "user", "content": "Hi!"}], temp=0.7, seed=1)))

    s = ChatSession(m, system="Be brief.")   # multi-turn; the KV cache is kept between turns
    for piece in s.send("Hello"): ...

A chat turn renders the whole conversation with the model's template, finds the longest common token
prefix with what the KV cache already holds, truncates the cache there and evaluates only the rest.
Generation stops at an end-of-generation token (EOS, EOT, <|im_end|>, <end_of_turn>, ...), at max_tokens,
or when the context is full.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Iterator

from ggufq.text.sample import Sampler, SamplingParams

_SAMPLING_KEYS = {f.name for f in fields(SamplingParams)}


def make_sampler(model, **sampling) -> Sampler:
    unknown = set(sampling) - _SAMPLING_KEYS
    if unknown:
        raise TypeError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
    return Sampler.from_params(SamplingParams(**sampling), n_ctx=getattr(model, "n_ctx", None))


@dataclass
class Stats:
    """Counts and times of the last generation (for the timings line on stderr)."""
    n_prompt: int = 0          # the prompt: tokens and seconds
    t_prompt: float = 0.0
    n_gen: int = 0             # the answer: tokens and seconds, and why it stopped
    t_gen: float = 0.0
    stop: str = ""             # "eog", "length", "context" or "interrupted"

    def line(self) -> str:
        def rate(n, t):
            return f"{n / t:.2f} tokens/s" if t > 0 and n else "-"
        return (f"prompt {self.n_prompt} tokens in {self.t_prompt:.2f} s ({rate(self.n_prompt, self.t_prompt)}), "
                f"generated {self.n_gen} tokens in {self.t_gen:.2f} s ({rate(self.n_gen, self.t_gen)}), "
                f"stop: {self.stop}")


def generate_ids(model, logits, sampler: Sampler, max_tokens: int, stats: Stats | None = None) -> Iterator[int]:
    """Sample from logits, evaluate, repeat: the generated ids (an end-of-generation token ends the stream
    and is not yielded). max_tokens < 0 means until EOG or a full context."""
    tok = model.tokenizer
    stats = stats if stats is not None else Stats()
    n = 0
    t0 = time.perf_counter()
    try:
        while max_tokens < 0 or n < max_tokens:
            t = sampler.sample(logits)
            if tok.is_eog(t):
                stats.stop = "eog"
                return
            n += 1
            stats.n_gen = n
            yield t
            if 0 <= max_tokens <= n:
                break
            if model.n_past >= model.n_ctx:
                stats.stop = "context"
                return
            logits = model.eval([t])
        stats.stop = "length"
    finally:
        stats.t_gen = time.perf_counter() - t0
        if not stats.stop:
            stats.stop = "interrupted"


def eval_prompt(model, ids: list[int], sampler: Sampler | None = None, stats: Stats | None = None, keep: int = 0):
    """Evaluate ids after the first `keep` cached positions (the cache is truncated to keep first): the logits
    of the last token. The sampler's penalty history gets the prompt tokens, as llama.cpp's does."""
    if keep >= len(ids):
        keep = len(ids) - 1
    t0 = time.perf_counter()
    if keep:
        model.truncate(keep)
    else:
        model.reset()
    logits = model.eval(ids[keep:])
    if stats is not None:
        stats.n_prompt, stats.t_prompt = len(ids) - keep, time.perf_counter() - t0
    if sampler is not None:
        for t in ids:
            sampler.accept(t)
    return logits


def generate(model, prompt: str, max_tokens: int = 128, *, add_special: bool = True, parse_special: bool = True,
             stats: Stats | None = None, **sampling) -> Iterator[str]:
    """Complete prompt (a fresh sequence): text pieces as they are decoded. Like llama-completion -no-cnv."""
    tok = model.tokenizer
    sampler = make_sampler(model, **sampling)
    ids = tok.encode(prompt, add_special=add_special, parse_special=parse_special)
    if not ids:
        if tok.add_bos and tok.bos_id is not None:
            ids = [tok.bos_id]
        else:
            from ggufq.errors import GGUFQError
            raise GGUFQError("the prompt is empty")
    logits = eval_prompt(model, ids, sampler, stats)
    yield from _text_of(tok, generate_ids(model, logits, sampler, max_tokens, stats))


class ChatSession:
    """A conversation with a model; each turn evaluates only the tokens the KV cache does not hold yet."""

    def __init__(self, model, system: str | None = None, template=None, max_tokens: int = -1, notice=None,
                 **sampling):
        from ggufq.text.chat_template import ChatTemplate
        from ggufq.text.template_limits import Limits
        self.model = model
        self.tok = model.tokenizer
        self.template = template or ChatTemplate.from_gguf(model.gguf, self.tok)
        self.template.limits = Limits.for_context(model.n_ctx)
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.max_tokens = max_tokens
        # told once, the first time old turns are dropped to make room (the command prints it on stderr)
        self.notice = notice or (lambda message: None)
        self.n_dropped = 0
        self.sampler = make_sampler(model, **sampling)
        self.cached: list[int] = []  # the tokens whose keys/values the model's cache holds, in order
        self.stats = Stats()
        model.reset()

    def _prompt_ids(self) -> list[int]:
        text = self.template.render(self.messages, add_generation_prompt=True)
        tok = self.tok
        bos_text = tok.tokens[tok.bos_id] if tok.bos_id is not None else None
        add_special = not (bos_text and text.startswith(bos_text))  # the template may put BOS itself
        return tok.encode(text, add_special=add_special, parse_special=True)

    def send(self, user: str) -> Iterator[str]:
        """Add a user message and stream the answer; the answer (also a partial one, if the caller stops
        iterating or is interrupted) is added to the conversation."""
        before = list(self.messages)
        self.messages.append({"role": "user", "content": user})
        try:
            ids = self._fit()
        except Exception:
            self.messages = before  # the conversation stays as it was
            raise
        common = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1, self.model.n_past)
        self.stats = Stats()
        logits = eval_prompt(self.model, ids, None, self.stats, keep=common)
        self.cached = list(ids)
        self.sampler.reset()
        for t in ids:
            self.sampler.accept(t)
        dec = self.tok.stream_decoder()
        answer: list[str] = []
        stop = self.template.stop
        shown = 0  # characters of the answer yielded; the rest may be the start of a stop text
        try:
            for t in generate_ids(self.model, logits, self.sampler, self.max_tokens, self.stats):
                # the sampled token is evaluated before the next one is drawn, except the last one
                answer.append(dec.push(t))
                self.cached.append(t)
                text = "".join(answer)
                upto = len(text)
                if stop:
                    cut = min((text.find(s) for s in stop if s in text), default=-1)
                    if cut >= 0:
                        answer = [text[:cut]]
                        if cut > shown:
                            yield text[shown:cut]
                        self.stats.stop = "stop text"
                        break
                    upto -= max((n for s in stop for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])),
                                default=0)
                if upto > shown:
                    yield text[shown:upto]
                    shown = upto
            else:
                answer.append(dec.flush())
                text = "".join(answer)
                if len(text) > shown:
                    yield text[shown:]
        finally:
            # tokens appended to `cached` are evaluated except possibly the last: keep the two in step
            self.cached = self.cached[:self.model.n_past]
            self.messages.append({"role": "assistant", "content": "".join(answer)})

    def _room(self) -> int:
        """Tokens kept free for the answer when old turns are dropped: -n, or a quarter of the context."""
        n_ctx = self.model.n_ctx
        return min(self.max_tokens, n_ctx // 2) if self.max_tokens > 0 else n_ctx // 4

    def _fit(self) -> list[int]:
        """The prompt's ids; when the conversation has outgrown the context, its oldest turns are dropped
        (the system message stays) until the prompt leaves room for an answer, as llama.cpp's context
        shift lets a chat go on. A last message that does not fit alone is refused."""
        n_ctx = self.model.n_ctx
        ids = self._prompt_ids()
        first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        while len(ids) + self._room() > n_ctx and len(self.messages) - first > 1:
            del self.messages[first]  # the oldest user message or answer
            while len(self.messages) - first > 1 and self.messages[first]["role"] != "user":
                del self.messages[first]
            self.n_dropped += 1
            if self.n_dropped == 1:
                self.notice(f"the conversation outgrew the context of {n_ctx} tokens: dropping the oldest turns "
                            "(the system message is kept)")
            ids = self._prompt_ids()
        if len(ids) >= n_ctx:
            from ggufq.errors import GGUFQError
            raise GGUFQError(f"the message does not fit: the conversation has {len(ids)} tokens, the context "
                             f"only {n_ctx} (-c)")
        return ids


def chat(model, messages: list[dict], max_tokens: int = -1, **sampling) -> Iterator[str]:
    """The assistant's answer to a conversation (a list of {"role", "content"}), streamed as text pieces.
    A fresh sequence each call; for several turns with the cache kept, use ChatSession."""
    from ggufq.text.chat_template import ChatTemplate
    from ggufq.text.template_limits import Limits
    tok = model.tokenizer
    template = ChatTemplate.from_gguf(model.gguf, tok)
    template.limits = Limits.for_context(model.n_ctx)
    text = template.render(messages, add_generation_prompt=True)
    bos_text = tok.tokens[tok.bos_id] if tok.bos_id is not None else None
    ids = tok.encode(text, add_special=not (bos_text and text.startswith(bos_text)), parse_special=True)
    sampler = make_sampler(model, **sampling)
    logits = eval_prompt(model, ids, sampler)
    yield from _text_of(tok, generate_ids(model, logits, sampler, max_tokens))


def _text_of(tok, ids):
    """The text of a stream of ids, piece by piece, as whole UTF-8 characters."""
    dec = tok.stream_decoder()
    for t in ids:
        piece = dec.push(t)
        if piece:
            yield piece
    tail = dec.flush()
    if tail:
        yield tail
