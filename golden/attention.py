"""Golden model of the HAD attention core: ``hamming`` scores, the ``topk`` sparsifier, the
``table`` exponential.

The arithmetic, the vector-file contract and the accuracy are specified once for the whole
family in :mod:`hadware.golden.attention_core` (its worked example is this variant's); this
module names the variant's entry points. Outputs: ``out``, ``topk_index``, ``topk_score``.
"""

from __future__ import annotations

from hadware.config.attention import AttentionConfig
from hadware.golden.attention_core import INPUT_NAMES, check_inputs, float_reference, run_vectors
from hadware.spec.attention_vectors import output_names

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "check_inputs", "float_reference", "run_vectors"]

#: Arrays of an output vector file.
OUTPUT_NAMES = output_names(AttentionConfig)
