"""Golden model of the binarized dense attention baseline: the HAD core without its sparsifier
(``hamming`` scores, no sparsifier, ``table`` exponential).

The arithmetic, the vector-file contract and the accuracy are specified once for the whole
family in :mod:`hadware.golden.attention_core`; this module names the variant's entry points.
Output: ``out``.
"""

from __future__ import annotations

from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.golden.attention_core import INPUT_NAMES, check_inputs, float_reference, run_vectors
from hadware.spec.attention_vectors import output_names

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "check_inputs", "float_reference", "run_vectors"]

#: Arrays of an output vector file.
OUTPUT_NAMES = output_names(BinaryDenseAttentionConfig)
