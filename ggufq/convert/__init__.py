"""Conversion both ways: Hugging Face folder -> GGUF, GGUF -> Hugging Face folder."""
