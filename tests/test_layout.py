"""CONTRIBUTING's size rule, held by a test: no Python module of the project over 600 lines."""
from __future__ import annotations

import subprocess

from .conftest import ROOT

MAX_LINES = 600


def test_no_module_over_600_lines():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert len(files) > 50     # the listing worked (a fresh clone is a git work tree)
    long = {f: n for f in files if (n := len((ROOT / f).read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
