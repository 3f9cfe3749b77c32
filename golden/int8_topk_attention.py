"""Golden model of the int8 top-k attention baseline: ``int8`` scores, the HAD ``topk``
sparsifier, the ``fixed`` exponential over the selected keys.

The arithmetic, the vector-file contract and the accuracy are specified once for the whole
family in :mod:`hadware.golden.attention_core`; this module names the variant's entry points.
Outputs: ``out``, ``topk_index``, ``topk_score``.
"""

from __future__ import annotations

from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.golden.attention_core import INPUT_NAMES, check_inputs, float_reference, run_vectors
from hadware.spec.attention_vectors import output_names

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "check_inputs", "float_reference", "run_vectors"]

#: Arrays of an output vector file.
OUTPUT_NAMES = output_names(Int8TopKAttentionConfig)
