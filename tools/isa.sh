#!/usr/bin/env bash
# Runs a command with numba compiling for another x86 target than this host, so that the AVX2 or the
# portable kernels (and every golden test through them) can be run on an AVX-512 machine:
#   tools/isa.sh avx2 make test          the AVX2 paths (an AVX2 client CPU: haswell's features)
#   tools/isa.sh generic .venv/bin/python -m pytest -q tests/test_kernels_dot.py   the portable IR
#                                        (a baseline x86-64: no AVX, no F16C)
#   tools/isa.sh native ...              this host (the default)
# kernels/dot_common.py reads the same NUMBA_CPU_FEATURES, so the IR asks only for the target's instructions.
# Compiled kernels of each target are cached side by side (numba keys its cache by target).
set -eu
isa=${1:?usage: tools/isa.sh avx2|generic|native command...}; shift
case "$isa" in
  avx2)    export NUMBA_CPU_NAME=haswell
           export NUMBA_CPU_FEATURES="+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+x87,+xsave" ;;
  generic) export NUMBA_CPU_NAME=generic NUMBA_CPU_FEATURES="" ;;
  native)  unset NUMBA_CPU_NAME NUMBA_CPU_FEATURES ;;
  *) echo "tools/isa.sh: unknown target '$isa' (avx2, generic or native)" >&2; exit 2 ;;
esac
exec "$@"
