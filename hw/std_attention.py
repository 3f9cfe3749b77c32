"""Standard attention baseline: int8 dot-product scores, a softmax over all keys.

Arithmetic: exactly :mod:`hadware.golden.std_attention`. The datapath is the dense core of
:mod:`hadware.hw.binary_dense_attention` (HAD's streams, context memory, lanes and output path;
a score pass that buffers the scores and finds the maximum, then a weighting pass over the
buffered scores) with two parts of its own:

* :class:`Int8Lane`: the score of one key, ``s = q . k`` over ``d`` int8 elements: ``d``
  signed 8x8 multipliers, two per :class:`Int8Dot` submodule (hierarchical synthesis maps
  each one separately), then a signed adder tree with a register after every level,
  ``L_lane = max(1, ceil(log2(d)))`` cycles;
* :class:`Exp2Unit`: the fixed-point exponential ``E`` (range reduction to ``2**(-f)``, a table
  of ``2**P + 1`` nodes, linear interpolation, a rounding shift), two pipeline stages
  (``L_exp = 2``); one per lane.

Timing (per query, no output stall), from the cycle the query is accepted to the cycle its
output is valid::

    cycles = 2 * ceil(n_eff / lanes) + ceil(log2(lanes)) + L_lane + 2 + R + d_v + 7

with ``n_eff = max(1, min(n, count))`` and ``R = recip_bits``. Area: ``lanes * d`` int8
multipliers for the scores, ``lanes`` exponential units and ``lanes * d_v`` weight multipliers
(``(F + 2) x 8`` bits) for the weighted sums; storage: the int8 keys (``8 d n_max`` bits), the
values (``8 d_v n_max``) and the score buffer (``score_width * n_max``), plus one exponential
table (``2**P`` words) per lane.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hadware.config.std_attention import Int8AttentionFields, StdAttentionConfig
from hadware.hw.binary_dense_attention import BaselineCore, clog2

__all__ = [
    "Exp2Unit",
    "Int8Dot",
    "Int8Lane",
    "InterpMul",
    "ScaleMul",
    "StdAttention",
    "int8_lane_latency",
]


def int8_lane_latency(d: int) -> int:
    """Cycles of :class:`Int8Lane`: ``max(1, ceil(log2(d)))``."""
    return max(1, clog2(d))


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


class ScaleMul(wiring.Component):
    """``x = delta * c`` for the constant ``c = exp_scale`` (combinational)."""

    def __init__(self, cfg: Int8AttentionFields):
        self.c = cfg.exp_scale
        super().__init__({"delta": In(cfg.delta_width),
                          "x": Out(cfg.delta_width + self.c.bit_length())})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += self.x.eq(self.delta * self.c)
        return m


class InterpMul(wiring.Component):
    """``y = t * 2**Q - slope * r``: the interpolation between two table nodes
    (combinational; ``Q = exp_interp_bits >= 1``)."""

    def __init__(self, cfg: Int8AttentionFields):
        self.q = cfg.exp_interp_bits
        super().__init__({
            "t": In(cfg.exp_table_width),
            "slope": In(cfg.exp_slope_width),
            "r": In(self.q),
            "y": Out(cfg.exp_table_width + self.q),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += self.y.eq(Cat(Const(0, self.q), self.t) - self.slope * self.r)
        return m


class Exp2Unit(wiring.Component):
    """The fixed-point exponential ``E(delta)`` of :mod:`hadware.golden.std_attention`.

    Stage 1 (combinational from ``delta``): ``x = delta * c``, ``t`` (``x`` rounded to ``H``
    fractional bits), its integer part saturated at ``F + 2``, the node ``j`` and the position
    ``r``; the table (``2**P`` words of node and slope, synchronous read) is addressed with ``j``.
    Stage 2: ``Y = T[j] * 2**Q - (T[j] - T[j+1]) * r``, then the rounding right shift by
    ``Q + i``; the result is registered.

    Members
    -------
    delta : In(delta_width)
        ``s_max - s_j`` in ``[0, 32640 d]``.
    mask : In(1)
    e : Out(exp_width)
        ``E(delta)``, 0 where ``mask`` was low; valid :attr:`latency` = 2 cycles after ``delta``.
    """

    latency = 2

    def __init__(self, cfg: Int8AttentionFields):
        self.cfg = cfg
        super().__init__({"delta": In(cfg.delta_width), "mask": In(1),
                          "e": Out(cfg.exp_width)})

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        f, p, q = cfg.exp_frac_bits, cfg.exp_table_bits, cfg.exp_interp_bits
        g, h = cfg.exp_scale_shift, cfg.exp_index_bits
        tw, sw = cfg.exp_table_width, cfg.exp_slope_width
        table = cfg.exp_table
        words = [table[j] | ((table[j] - table[j + 1]) << tw) for j in range(2**p)]
        rom = Memory(shape=tw + sw, depth=2**p, init=words)
        m.submodules.exp_table = rom
        rd = rom.read_port()

        # Stage 1.
        m.submodules.exp_scale = scale = ScaleMul(cfg)
        m.d.comb += scale.delta.eq(self.delta)
        rounded = (scale.x + (1 << (g - h - 1))) >> (g - h)
        t = Signal(max(len(rounded), h + 1))
        m.d.comb += t.eq(rounded)
        ipart = t[h:]
        shw = cfg.exp_shift_max.bit_length()
        shift = Signal(shw)
        m.d.comb += [
            shift.eq(Mux(ipart >= cfg.exp_shift_max, cfg.exp_shift_max, ipart[:shw])),
            rd.addr.eq(t[q:h]),
        ]
        # Datapath registers: no reset (the core's valid bits say when the weight matters).
        shift1 = Signal(shw, reset_less=True)
        mask1 = Signal(reset_less=True)
        m.d.sync += [shift1.eq(shift), mask1.eq(self.mask)]

        # Stage 2.
        node = rd.data[:tw]
        if q:
            r1 = Signal(q, reset_less=True)
            m.d.sync += r1.eq(t[:q])
            m.submodules.exp_interp = interp = InterpMul(cfg)
            m.d.comb += [interp.t.eq(node), interp.slope.eq(rd.data[tw:]), interp.r.eq(r1)]
            y = interp.y
        else:
            y = node
        # round(Y / 2**k), halves up, k = Q + shift: floor((floor(2Y / 2**k) + 1) / 2).
        shifted = Signal(f + 2)
        m.d.comb += shifted.eq(Cat(Const(0, 1), y)[q:] >> shift1)
        e = Signal(f + 1, reset_less=True)
        m.d.sync += e.eq(Mux(mask1, (shifted + 1) >> 1, 0))
        m.d.comb += self.e.eq(e)
        return m


class StdAttention(BaselineCore):
    """The standard attention baseline (see the module docstring and
    :mod:`hadware.hw.binary_dense_attention` for streams, storage and timing).

    Parameters
    ----------
    config : StdAttentionConfig

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`StdAttentionConfig`.
    """

    config_class = StdAttentionConfig
    sparse = False

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
