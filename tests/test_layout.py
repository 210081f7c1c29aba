"""CONTRIBUTING's size rule, held by a test: no Python module of the project over 600 lines."""
from __future__ import annotations

from .conftest import ROOT

MAX_LINES = 600
FOLDERS = ("ggufq", "kernels", "tests", "tools")


def test_no_module_over_600_lines():
    files = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")] + list((ROOT / "models").glob("*.py"))
    assert len(files) > 50     # the folders were found
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
