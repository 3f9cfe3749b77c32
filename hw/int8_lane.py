"""The int8 scorer part: one lane's exact int8 dot product, pipelined.

``scorer = "int8"`` in the attention family (:data:`hadware.hw.attention_core.SCORERS`). A lane
has ``d`` signed 8x8 multipliers, two per :class:`Int8Dot` submodule (hierarchical synthesis
maps each one separately), then a signed adder tree with a register after every level:
``latency = max(1, ceil(log2(d)))`` cycles, one result per cycle.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["Int8Dot", "Int8Lane", "int8_lane_latency"]


def int8_lane_latency(d: int) -> int:
    """Cycles of :class:`Int8Lane`: ``max(1, ceil(log2(d)))``."""
    return max(1, ceil_log2(d))


class Int8Dot(wiring.Component):
    """``s = sum(a[i] * b[i])`` over ``n`` (1 or 2) pairs of int8 elements, registered: the
    multipliers and the first adder level of a lane. Two multipliers per module keep the
    module small for hierarchical synthesis (ABC maps it in about a second) while halving the
    number of modules and wires against one multiplier per module.

    Members
    -------
    a, b : In(8 * n)
        Element ``i`` in bits ``8i .. 8i + 7``, signed.
    s : Out(signed(16 + n - 1))
        The sum of the inputs presented one cycle earlier.
    """

    def __init__(self, n: int):
        self.n = n
        super().__init__({"a": In(8 * n), "b": In(8 * n), "s": Out(signed(15 + n))})

    def elaborate(self, platform) -> Module:
        m = Module()
        products = [self.a[8 * i: 8 * i + 8].as_signed() * self.b[8 * i: 8 * i + 8].as_signed()
                    for i in range(self.n)]
        s = Signal(signed(15 + self.n), reset_less=True)  # datapath: no reset
        m.d.sync += s.eq(sum(products[1:], products[0]))
        m.d.comb += self.s.eq(s)
        return m


class Int8Lane(wiring.Component):
    """One lane: the dot product of two vectors of ``d`` int8 elements (element ``c`` in bits
    ``8c .. 8c + 7``), pipelined: ``ceil(d / 2)`` :class:`Int8Dot` submodules (two multipliers
    and a registered adder each), then a signed adder tree with a register after every level.

    Members
    -------
    q, k : In(8 * d)
    s : Out(signed(score_width))
        The score of the inputs presented :attr:`latency` cycles earlier (one result per
        cycle, no enable: the attention core never stalls its lanes).
    """

    def __init__(self, d: int, score_width: int):
        self.d = d
        self.latency = int8_lane_latency(d)
        super().__init__({"q": In(8 * d), "k": In(8 * d), "s": Out(signed(score_width))})

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.d
        level: list[Value] = []
        for i in range(0, d, 2):
            n = min(2, d - i)
            dot = Int8Dot(n)
            m.submodules[f"dot{i // 2}"] = dot
            m.d.comb += [dot.a.eq(self.q[8 * i: 8 * (i + n)]), dot.b.eq(self.k[8 * i: 8 * (i + n)])]
            level.append(dot.s)
        depth = 1
        while len(level) > 1:
            depth += 1
            nxt: list[Value] = []
            for i in range(0, len(level), 2):
                pair = level[i: i + 2]
                width = max(len(p) for p in pair) + (len(pair) == 2)
                r = Signal(signed(width), name=f"sum{depth}_{i // 2}", reset_less=True)
                m.d.sync += r.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                nxt.append(r)
            level = nxt
        m.d.comb += self.s.eq(level[0])
        return m
