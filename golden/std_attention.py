"""Golden model of the standard attention baseline: ``int8`` scores, no sparsifier (a softmax
over all valid keys), the ``fixed`` exponential.

The arithmetic (including the fixed exponential's steps a to e), the vector-file contract and
the accuracy are specified once for the whole family in :mod:`hadware.golden.attention_core`;
this module names the variant's entry points. Output: ``out``.
"""

from __future__ import annotations

from hadware.config.std_attention import StdAttentionConfig
from hadware.golden.attention_core import INPUT_NAMES, check_inputs, float_reference, run_vectors
from hadware.spec.attention_vectors import output_names

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "check_inputs", "float_reference", "run_vectors"]

#: Arrays of an output vector file.
OUTPUT_NAMES = output_names(StdAttentionConfig)
