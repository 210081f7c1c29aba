"""Text: tokenizer, chat template, sampling, generation."""
