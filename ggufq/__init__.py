"""ggufq: GGUF converter, quantizer and numba CPU inference runtime, checked against llama.cpp."""
__version__ = "0.1.0"


def __getattr__(name):
    # The runtime pulls in numba; load it only when asked for.
    if name == "Model":
        from ggufq.runtime.model import Model
        return Model
    raise AttributeError(name)
