"""Quantization: per-tensor recipes, the quantize pipeline, imatrix collection, the dynamic recipe."""
