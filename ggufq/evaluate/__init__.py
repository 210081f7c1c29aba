"""Evaluation: perplexity, KL divergence, bench."""
