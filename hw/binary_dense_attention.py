"""Binarized dense attention baseline: HAD's XNOR-popcount scores and table, no sparsifier.

The attention core (:mod:`hadware.hw.attention_core`: streams, storage, timing) with the parts
``hamming`` / ``table`` / none: the softmax runs over every valid key. Per query::

    cycles = 2 * ceil(n_eff / lanes) + L,
    L = ceil(log2(lanes)) + 1 + ceil(log2(d / 8)) + 1 + R + d_v + 7

Arithmetic: exactly :mod:`hadware.golden.binary_dense_attention`.
"""

from __future__ import annotations

from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.hw.attention_core import AttentionCore

__all__ = ["BinaryDenseAttention"]


class BinaryDenseAttention(AttentionCore):
    """The binarized dense attention baseline."""

    config_class = BinaryDenseAttentionConfig
