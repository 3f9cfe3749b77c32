"""Int8 top-k attention baseline: int8 dot-product scores, the HAD sparsifier, fixed exp.

The attention core (:mod:`hadware.hw.attention_core`: streams, storage, timing) with the parts
``int8`` / ``fixed`` / ``topk``. Per query::

    cycles = ceil(n_eff / lanes) + top_k + L,   L = max(1, ceil(log2(d))) + 2 + R + d_v + 5

Arithmetic: exactly :mod:`hadware.golden.int8_topk_attention`.
"""

from __future__ import annotations

from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.hw.attention_core import AttentionCore

__all__ = ["Int8TopKAttention"]


class Int8TopKAttention(AttentionCore):
    """The int8 top-k attention baseline."""

    config_class = Int8TopKAttentionConfig
