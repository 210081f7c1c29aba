"""Sampling and runtime options shared by `ggufq run` and `ggufq chat` (llama.cpp's names and defaults)."""
from __future__ import annotations

from ggufq.commands._args import non_negative_int, positive_int


def add_sampling_args(p) -> None:
    g = p.add_argument_group("sampling (llama.cpp's defaults)")
    g.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=non_negative_int, default=40, help="top-k, 0 = off (default 40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p, 1.0 = off (default 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p, 0.0 = off (default 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty, 1.0 = off (default 1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64, help="penalty window, -1 = context (default 64)")
    g.add_argument("--presence-penalty", type=float, default=0.0, help="presence penalty (default 0.0)")
    g.add_argument("--frequency-penalty", type=float, default=0.0, help="frequency penalty (default 0.0)")
    g.add_argument("-s", "--seed", type=int, default=None, help="random seed (default: random)")
    r = p.add_argument_group("runtime")
    r.add_argument("-c", "--ctx-size", type=non_negative_int, default=None, help="context size (default: min(training, 4096))")
    r.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: all cores)")


def sampling_kwargs(args) -> dict:
    seed = args.seed if args.seed is None or args.seed >= 0 else None
    return {"temp": args.temp, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
            "repeat_penalty": args.repeat_penalty, "repeat_last_n": args.repeat_last_n,
            "presence_penalty": args.presence_penalty, "frequency_penalty": args.frequency_penalty, "seed": seed}
