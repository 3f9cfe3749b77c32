"""Standard attention baseline: int8 dot-product scores, a softmax over all keys.

The attention core (:mod:`hadware.hw.attention_core`: streams, storage, timing) with the parts
``int8`` / ``fixed`` / none. Per query::

    cycles = 2 * ceil(n_eff / lanes) + L,
    L = ceil(log2(lanes)) + max(1, ceil(log2(d))) + 2 + R + d_v + 7

Area: ``lanes * d`` int8 multipliers for the scores, ``lanes`` exponential units and
``lanes * d_v`` weight multipliers for the weighted sums; storage: the int8 keys
(``8 d n_max`` bits), the values (``8 d_v n_max``), the score buffer (``score_width * n_max``)
and one exponential table (``2**P`` words) per lane. Arithmetic: exactly
:mod:`hadware.golden.std_attention`.
"""

from __future__ import annotations

from hadware.config.std_attention import StdAttentionConfig
from hadware.hw.attention_core import AttentionCore

__all__ = ["StdAttention"]


class StdAttention(AttentionCore):
    """The standard attention baseline."""

    config_class = StdAttentionConfig
