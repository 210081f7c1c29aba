"""The runtime's default thread count follows the machine's load (ggufq.threads.LoadAwareThreads)."""
from __future__ import annotations

import subprocess
import sys
import time

from ggufq.runtime import threads
from ggufq.runtime.threads import LoadAwareThreads


def test_threads_are_the_cores_others_leave_free(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    samples = iter([(0.0, 0.0, 0.0),          # at start
                    (1.0, 2.0, 2.0),          # 1 s: 2 cores busy, all of it ours
                    (2.0, 5.0, 3.0),          # 1 s: 3 cores busy, 1 ours: 2 others -> 2 threads
                    (3.0, 7.6, 4.0),          # 0.6 of a core by others: counted as taken -> 3 threads
                    (4.0, 8.8, 5.0)])         # 0.2: noise, not a core -> 4 threads
    monkeypatch.setattr(LoadAwareThreads, "_sample", staticmethod(lambda: next(samples)))
    clock = iter([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    g = LoadAwareThreads(4, interval=0.5)
    assert [g.pick() for _ in range(4)] == [4, 2, 3, 4]


def test_a_busy_core_is_seen_on_this_machine():
    """A real spinning process takes a core from the count (on a quiet machine of n cores: n -> n - 1,
    at least 1), measured against the count just before it starts, so other load does not decide it."""
    n = threads.os.cpu_count() or 1
    g = LoadAwareThreads(n, interval=0.3)
    time.sleep(0.4)
    before = g.pick()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 3\nwhile time.time() < t: pass"])
    try:
        time.sleep(0.4)
        g.pick()                     # the interval that saw the start of the busy process
        time.sleep(0.4)
        assert g.pick() == max(1, before - 1)
    finally:
        busy.kill()
        busy.wait()
