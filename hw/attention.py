"""HAD attention core: binarized XNOR-popcount scores, the top-k sparsifier, the table softmax.

The attention core (:mod:`hadware.hw.attention_core`: streams, storage, timing) with the parts
``hamming`` / ``table`` / ``topk``. Per query, with ``n_eff = max(1, min(n, count))``,
``rows = ceil(n_eff / lanes)``, ``R = recip_bits`` and ``L_scale`` the output scaler's
pipeline (:meth:`hadware.hw.attention_core.Scaler.latency_of`)::

    merge top-k:     cycles = rows + top_k + L,   L = L_lane + 1 + R + d_v + L_scale + 8
    counting top-k:  cycles = 2 rows + top_k + L + 4
    systolic top-k:  cycles = rows + 2 top_k + L + ceil(log2(lanes)) + 2

with ``L_lane = 1 + ceil(log2(d / 8))`` (:func:`hadware.hw.score_unit.score_lane_latency`) and
the table exponential's one cycle; the steady-state interval of back-to-back queries is
:meth:`~hadware.hw.attention_core.AttentionCore.interval`.

Arithmetic: exactly :mod:`hadware.golden.attention`.
"""

from __future__ import annotations

from hadware.config.attention import AttentionConfig
from hadware.hw.attention_core import AttentionCore

__all__ = ["Attention"]


class Attention(AttentionCore):
    """The HAD attention core; ``Attention(AttentionConfig(...))``."""

    config_class = AttentionConfig
