"""ggufq.jit tells when a command is about to compile kernels (so it can say so before a long pause)."""
from __future__ import annotations

import importlib.util
import sys

from ggufq.runtime import jit

MODULE = '''
import numba

@numba.njit(cache=True)
def twice(x):
    return 2 * x

@numba.njit(cache=True)
def never_called(x):
    return x

@numba.njit(cache=True, inline="always")
def inlined(x):
    return x
'''


def load(path, name="jit_probe_module"):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_uncompiled_until_the_cache_has_this_cpu(tmp_path, capsys):
    src = tmp_path / "jit_probe_module.py"
    src.write_text(MODULE)
    mod = load(src)
    try:
        assert sorted(jit.uncompiled([mod])) == ["jit_probe_module.never_called", "jit_probe_module.twice"]
        assert jit.announce("probe", [mod]) and "compiling 2 probe kernels" in capsys.readouterr().err
        assert mod.twice(21) == 42
        # a fresh process (a new module object) finds the cache: the function no one called is not news
        mod = load(src)
        assert jit.uncompiled([mod]) == []
        mod.never_called(1)
        src.write_text(MODULE.replace("2 * x", "3 * x"))  # an edited source makes the index stale
        mod = load(src)
        assert sorted(jit.uncompiled([mod])) == ["jit_probe_module.never_called", "jit_probe_module.twice"]
        assert mod.twice(1) == 3
        # once the common path is compiled again, the rare one's stale entry is not news either
        mod = load(src)
        assert jit.uncompiled([mod]) == []
    finally:
        sys.modules.pop("jit_probe_module", None)


def test_a_module_without_any_cache_entry_is_all_uncompiled(tmp_path):
    """A moved or new module (no index for any of its functions) beside a compiled one: all of its
    functions are reported, though the other module's cache is fresh."""
    src = tmp_path / "jit_probe_module.py"
    src.write_text(MODULE)
    mod = load(src)
    try:
        mod.twice(1)
        other = tmp_path / "jit_probe_other.py"
        other.write_text(MODULE)
        spec = importlib.util.spec_from_file_location("jit_probe_other", other)
        mod2 = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod2
        spec.loader.exec_module(mod2)
        assert sorted(jit.uncompiled([mod, mod2])) == ["jit_probe_other.never_called", "jit_probe_other.twice"]
    finally:
        sys.modules.pop("jit_probe_module", None)
        sys.modules.pop("jit_probe_other", None)


CALLER = '''
import numba
from jit_probe_callee import K

@numba.njit(cache=True)
def scaled(x):
    return K * x
'''


def test_an_edit_to_an_inlined_module_drops_the_callers_cache(tmp_path, monkeypatch):
    """numba would keep a function's machine code after an edit to another module it takes code from (its
    cache checks the function's own file): ggufq.jit_cache hashes every cached package's sources together
    and drops all their cached kernels when the hash changes. Shown on two probe modules: the caller's
    stale constant without the guard, the new one with it."""
    from ggufq import jit_cache
    (tmp_path / "jit_probe_callee.py").write_text("K = 2\n")
    caller = tmp_path / "jit_probe_caller.py"
    caller.write_text(CALLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(jit_cache, "CACHED", [tmp_path])
    monkeypatch.setattr(jit_cache, "STAMP", tmp_path / "__pycache__" / "ggufq-sources.sha1")

    def fresh():
        for name in ("jit_probe_callee", "jit_probe_caller"):
            sys.modules.pop(name, None)
        return load(caller, "jit_probe_caller")
    try:
        jit_cache.drop_stale_caches()
        assert fresh().scaled(5) == 10
        (tmp_path / "jit_probe_callee.py").write_text("K = 3\n")
        assert fresh().scaled(5) == 10            # numba alone: the cached code with the old constant
        jit_cache.drop_stale_caches()
        assert not list((tmp_path / "__pycache__").glob("*.nb[ic]"))
        assert fresh().scaled(5) == 15
        jit_cache.drop_stale_caches()             # unchanged sources: the new cache is kept
        assert list((tmp_path / "__pycache__").glob("*.nbi"))
    finally:
        for name in ("jit_probe_callee", "jit_probe_caller"):
            sys.modules.pop(name, None)

