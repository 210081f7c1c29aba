"""The README's Python example runs as printed (on SmolLM2), so a new user's first lines work."""
from __future__ import annotations

import contextlib
import io
import re

from .conftest import ROOT, SMOL


def test_readme_python_example_runs():
    block = re.search(r"Python:\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(block.replace('"model.gguf"', repr(SMOL)).replace('Model.load(' + repr(SMOL) + ')',
                                                                'Model.load(' + repr(SMOL) + ', n_ctx=256)'), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == " Paris" and lines[1].startswith(" Paris")
