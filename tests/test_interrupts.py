"""Faults while writing: SIGINT or SIGTERM at random moments of `quantize` and `convert` leave neither
the output nor a temporary file (one line, exit 130 / 143); after SIGKILL only a temporary file may
remain, and the next run removes it (files/atomic.py). Random moments from a fixed seed, spread over the
whole run as measured here; a run that finished before its signal must have written the whole file."""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from ggufq.files.atomic import remove_stale, temp_path

from .conftest import ROOT, SMOL

HF = ROOT / "models" / "smollm2-hf"
COMMANDS = {
    "quantize": lambda out: ["quantize", "--allow-requantize", str(SMOL), str(out), "Q8_0"],
    "convert": lambda out: ["convert", str(HF), "--outtype", "q8_0", "--outfile", str(out)],
}


def start(argv):
    return subprocess.Popen([sys.executable, "-m", "ggufq", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_signals_at_random_moments_leave_no_partial_output(tmp_path, command):
    rng = random.Random(20261201)
    out = tmp_path / "out.gguf"
    argv = COMMANDS[command](out)
    assert start(argv).wait() == 0     # the first run may load caches: time the second
    t0 = time.monotonic()
    assert start(argv).wait() == 0
    duration = time.monotonic() - t0
    whole = out.read_bytes()
    out.unlink()
    interrupted = 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        p = start(argv)
        time.sleep(rng.uniform(0.3, 0.95) * duration)
        p.send_signal(sig)
        err = p.communicate(timeout=120)[1]
        if p.returncode == 0:           # it was done before the signal: then the whole file is there
            assert out.read_bytes() == whole
            out.unlink()
            continue
        assert p.returncode == (130 if sig == signal.SIGINT else 143), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal" not in err, err
        assert names(tmp_path) == [], (sig, names(tmp_path))
        interrupted += 1
    assert interrupted >= 2  # the signals did come in the middle of the work
    # SIGKILL: nothing can clean up, so only our temporaries may stay; the next run removes them
    p = start(argv)
    time.sleep(rng.uniform(0.4, 0.8) * duration)
    p.kill()
    p.wait()
    assert all(n.startswith(".out.gguf.ggufq-") and n.endswith(".tmp") for n in names(tmp_path)), names(tmp_path)
    assert start(argv).wait() == 0
    assert names(tmp_path) == ["out.gguf"] and out.read_bytes() == whole


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    out = tmp_path / "x.gguf"
    mine = temp_path(out)
    mine.write_bytes(b"partial")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = tmp_path / f".x.gguf.ggufq-{live.pid}.tmp"
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        gone = tmp_path / f".x.gguf.ggufq-{dead}.tmp"
        gone_dir = tmp_path / f".x.gguf.ggufq-{dead}.abc123.tmp"
        other = tmp_path / ".y.gguf.ggufq-1.tmp"
        for f in (theirs, gone, other):
            f.write_bytes(b"partial")
        gone_dir.mkdir()
        (gone_dir / "model-f16.gguf").write_bytes(b"partial")
        remove_stale(out)
        assert names(tmp_path) == sorted([mine.name, theirs.name, other.name])
    finally:
        live.kill()
        live.wait()
