"""The one way ggufq writes an output: into a temporary file (or folder) beside it, flushed to disk, then
renamed into place, so that an error, Ctrl-C or a full disk leaves the old output (or none), never half of
a new one.

    with atomic_output("model.gguf") as tmp:        # a path: write it, by any means
        write(tmp)
    with AtomicFile("base.kld") as f:               # an open binary file, for writes spread over a run
        f.write(...)                                # (f.abort() drops it; leaving the block commits)
    with atomic_outputs([a, b, c]) as tmps:         # several files, each complete before any is renamed
    with atomic_folder("hf_dir") as tmp:            # a folder (ggufq export)

Temporary names are `.<name>.ggufq-<pid>.tmp` in the destination's folder (`.<name>.ggufq-<pid>.<x>.tmp`
for folders): the same file system (so the rename is atomic), hidden, and recognisable as ours. A process
killed outright (SIGKILL, a power cut) cannot remove its own: the next write of the same output removes
those whose process is gone (remove_stale). SIGINT and SIGTERM are exceptions in ggufq (cli.main), so they
leave nothing.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ggufq.errors import GGUFQError


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.ggufq-{os.getpid()}.tmp")


def scratch_folder(path: Path) -> Path:
    """A temporary folder beside `path` for intermediate files (convert's F16 and imatrix for a dynamic
    quant), named like the temporaries, so that a killed run's folder is removed by the next one."""
    path = Path(path)
    remove_stale(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.ggufq-{os.getpid()}.", suffix=".tmp", dir=path.parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove the temporaries of earlier writes of `path` whose process no longer runs (a live process's,
    or one whose pid was reused, are left alone)."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.ggufq-") + r"(\d+)(\.[^/]*)?\.(tmp|old)$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _sync(path: Path) -> None:
    """Flush a finished file's data to disk before it is renamed (a crash then leaves the old file or the
    whole new one, not a renamed empty one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare(path: Path, what: str = "cannot write") -> None:
    """Make the output's missing folders (convert, imatrix, compare and export do; quantize does not, as
    llama-quantize does not: it passes make_folders=False)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GGUFQError(f"{path}: {what}: {e.strerror or e}") from None


@contextmanager
def atomic_output(path, make_folders: bool = True):
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
    path = Path(path)
    if make_folders:
        _prepare(path)
    remove_stale(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_outputs(paths):
    """Yields a temporary path for each of `paths`; all are renamed into place, one after the other, only
    once the block has written every one."""
    paths = [Path(p) for p in paths]
    for p in paths:
        _prepare(p)
        remove_stale(p)
    tmps = [temp_path(p) for p in paths]
    try:
        yield tmps
        for t in tmps:
            _sync(t)
        for t, p in zip(tmps, paths):
            os.replace(t, p)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)


class AtomicFile:
    """A binary file written over a whole run (a KL-divergence base): commit() renames it into place,
    abort() removes it; as a context manager, commit on success and abort on any exception."""

    def __init__(self, path):
        self.path = Path(path)
        _prepare(self.path)
        remove_stale(self.path)
        self.tmp = temp_path(self.path)
        try:
            self.f = open(self.tmp, "wb")
        except OSError as e:
            raise GGUFQError(f"cannot write {self.path}: {e.strerror}") from None

    def write(self, data) -> None:
        self.f.write(data)

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextmanager
def atomic_folder(out):
    """Yields a temporary folder beside `out`; when the block succeeds it becomes `out` (an existing `out`
    is moved aside first and removed only then); on any exception it is removed."""
    out = Path(out)
    _prepare(out, "cannot create")
    remove_stale(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.ggufq-{os.getpid()}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise GGUFQError(f"{out}: cannot create: {e.strerror or e}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.ggufq-{os.getpid()}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
