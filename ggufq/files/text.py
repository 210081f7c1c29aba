"""Text files the commands read (-f, --calib): UTF-8, or one line saying why not."""
from __future__ import annotations

from ggufq.errors import GGUFQError


def read_text(path: str) -> str:
    """A UTF-8 text file a command reads (-f, --calib), or one line saying why it cannot."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise GGUFQError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise GGUFQError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
