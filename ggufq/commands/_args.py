"""Argument types shared by the commands: a number out of range is a usage error (exit 1) at parse time,
before any file is opened, instead of a silent default or a failure minutes later."""
from __future__ import annotations

import argparse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def positive_int(text: str) -> int:
    """1, 2, ...: threads, chunk sizes, repetitions."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {v}")
    return v


def non_negative_int(text: str) -> int:
    """0, 1, ...: a count where 0 means none or the default (llama.cpp's -c 0, -n 0)."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {v}")
    return v


def count_or_all(text: str) -> int:
    """-1 (all, llama.cpp's convention) or 0, 1, ...: --chunks, -n."""
    v = _int(text)
    if v < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (all) or 0 or more, not {v}")
    return v
