"""Int8 top-k attention baseline: int8 dot-product scores, the HAD sparsifier.

Arithmetic: exactly :mod:`hadware.golden.int8_topk_attention`. The datapath is the HAD core's
(:mod:`hadware.hw.attention`), built by the top-k mode of
:class:`~hadware.hw.binary_dense_attention.BaselineCore`: one pass over the keys through
``lanes`` int8 lanes (:class:`~hadware.hw.std_attention.Int8Lane`), the streaming sparsifier
(:class:`~hadware.hw.topk.TopK`, ``score_width`` bits per score), then one selected slot per
cycle through one exponential unit (:class:`~hadware.hw.std_attention.Exp2Unit`, the same as
the dense int8 baseline's) and ``d_v`` weight multipliers, one reciprocal per query and one
output column per cycle.

Streams as the HAD core: ``ctx_stream {clear, key, value}`` (key: ``d`` int8 elements),
``q_stream {q, n}``, ``o_stream {out, index, score, sel}``.

Timing (per query, no output stall), from the cycle the query is accepted to the cycle its
output is valid::

    cycles = ceil(n_eff / lanes) + top_k + L_lane + 2 + R + d_v + 5

with ``n_eff = max(1, min(n, count))``, ``L_lane = max(1, ceil(log2(d)))`` and
``R = recip_bits``.
"""

from __future__ import annotations

from amaranth import Module, Value, signed
from amaranth.lib import data, wiring

from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.hw.binary_dense_attention import BaselineCore
from hadware.hw.std_attention import Exp2Unit, Int8Lane, int8_lane_latency

__all__ = ["Int8TopKAttention"]


class Int8TopKAttention(BaselineCore):
    """The int8 top-k attention baseline (see the module docstring).

    Parameters
    ----------
    config : Int8TopKAttentionConfig

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`Int8TopKAttentionConfig`.
    ValueError
        If ``top_k`` exceeds what the sparsifier supports (256).
    """

    config_class = Int8TopKAttentionConfig
    sparse = True

    @classmethod
    def key_layout(cls, cfg):
        return data.ArrayLayout(signed(8), cfg.d)

    @classmethod
    def lane_latency(cls, cfg) -> int:
        return int8_lane_latency(cfg.d)

    @classmethod
    def exp_latency(cls, cfg) -> int:
        return Exp2Unit.latency

    def make_lane(self, m: Module, name: str, q: Value, k: Value) -> Value:
        lane = Int8Lane(self.config.d, self.config.score_width)
        m.submodules[name] = lane
        m.d.comb += [lane.q.eq(q), lane.k.eq(k)]
        return lane.s

    def make_exp(self) -> wiring.Component:
        return Exp2Unit(self.config)
