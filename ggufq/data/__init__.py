"""Texts bundled with ggufq (see README here)."""
