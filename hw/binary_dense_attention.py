"""Binarized dense attention baseline: HAD's XNOR-popcount scores and table, no sparsifier.

The attention core (:mod:`hadware.hw.attention_core`: streams, storage, timing) with the parts
``hamming`` / ``table`` / none: the softmax runs over every valid key. Per query::

    cycles = 2 * ceil(n_eff / lanes) + L,
    L = 2 * ceil(log2(lanes)) + L_lane + 1 + R + d_v + L_scale + 9,

``L_lane = 1 + ceil(log2(d / 8))`` the score lane's pipeline, the table exponential's one
cycle, ``R = recip_bits`` and ``L_scale`` the output scaler's pipeline.

Arithmetic: exactly :mod:`hadware.golden.binary_dense_attention`.
"""

from __future__ import annotations

from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.hw.attention_core import AttentionCore

__all__ = ["BinaryDenseAttention"]


class BinaryDenseAttention(AttentionCore):
    """The binarized dense attention baseline."""

    config_class = BinaryDenseAttentionConfig
