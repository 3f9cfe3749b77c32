"""HAD attention core: binarized XNOR-popcount scores, the top-k sparsifier, the table softmax.

The attention core (:mod:`hadware.hw.attention_core`: streams, storage, timing) with the parts
``hamming`` / ``table`` / ``topk``. Per query, with ``n_eff = max(1, min(n, count))``,
``rows = ceil(n_eff / lanes)``, ``R = recip_bits`` and ``L_scale`` the output scaler's
pipeline (:meth:`hadware.hw.attention_core.Scaler.latency_of`)::

    merge top-k:     cycles = rows + top_k + L,          L = 1 + ceil(log2(d / 8)) + 1 + R
                                                             + d_v + L_scale + 7
    counting top-k:  cycles = 2 rows + top_k + L + 2

Arithmetic: exactly :mod:`hadware.golden.attention`.
"""

from __future__ import annotations

from hadware.config.attention import AttentionConfig
from hadware.hw.attention_core import AttentionCore

__all__ = ["Attention"]


class Attention(AttentionCore):
    """The HAD attention core; ``Attention(AttentionConfig(...))``."""

    config_class = AttentionConfig
