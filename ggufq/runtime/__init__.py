"""The CPU runtime: model, forward pass, decode step, ops, threads, JIT warm-up."""
