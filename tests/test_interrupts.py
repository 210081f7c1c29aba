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


def signalled(argv, sig, delay):
    """Start the command, send `sig` after `delay` seconds; (exit status, stderr, whether it was still
    running when the signal came)."""
    p = start(argv)
    time.sleep(delay)
    running = p.poll() is None
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    return p.returncode, err, running


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
    # each signal at a random moment of the run; a run that was already done must have written the whole
    # file (and the signal is sent again, earlier: the machine may be slower or faster than it was)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        fraction = rng.uniform(0.3, 0.9)
        for _ in range(6):
            rc, err, running = signalled(argv, sig, fraction * duration)
            if not running:
                assert rc == 0 and out.read_bytes() == whole
                out.unlink()
                fraction /= 2
                continue
            if rc == 0:  # it finished between the check and the signal
                out.unlink()
                continue
            if sig == signal.SIGKILL:  # nothing can clean up: only our temporaries may stay
                assert rc == -9
                left = names(tmp_path)
                # killed after the rename, before the exit: the output is there, and whole
                if "out.gguf" in left:
                    assert out.read_bytes() == whole
                    left.remove("out.gguf")
                assert all(n.startswith(".out.gguf.ggufq-") and n.endswith(".tmp") for n in left), left
                break
            assert rc == (130 if sig == signal.SIGINT else 143), err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal" not in err, err
            assert names(tmp_path) == [], (sig, names(tmp_path))
            break
        else:
            pytest.fail(f"{sig.name} never came while {command} ran")
    # the next run removes what the killed one left
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
