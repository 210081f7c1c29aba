"""Block geometry of the GGML tensor types: gguf-py's GGML_QUANT_SIZES, corrected where it lags the
block structs of the ggml that writes the files (ggml-common.h). Every size of a tensor's bytes in ggufq
(the reader, the recipes, the format registry) comes from here."""
from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# ggml-common.h: static_assert(sizeof(block_q8_1) == 2*sizeof(ggml_half) + QK8_1) = 36; gguf-py still says
# 40, from when block_q8_1 held d and s as float32
_CORRECTED = {GGMLQuantizationType.Q8_1: (32, 36)}


def block_geometry(qtype) -> tuple[int, int]:
    """(weights per block, bytes per block); KeyError for a type gguf does not know."""
    qtype = GGMLQuantizationType(qtype)
    return _CORRECTED.get(qtype) or GGML_QUANT_SIZES[qtype]
