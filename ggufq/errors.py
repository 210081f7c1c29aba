"""The one exception type the command line turns into a single line and exit status 2."""


class GGUFQError(Exception):
    """A user-facing failure: bad input, unsupported model, missing file. Never a bug."""


class GGUFFormatError(GGUFQError):
    """A GGUF file that is truncated, malformed or hostile."""


class ChatTemplateError(GGUFQError):
    """A chat template that is refused, fails, or goes past a limit of its render: the file's fault, so
    a chat ends there (no turn of it can be rendered)."""
