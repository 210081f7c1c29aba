"""GGUF and safetensors files, importance-matrix files: reading and writing them."""
