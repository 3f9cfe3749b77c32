"""The exponential parts of the attention cores: ``e = E(s_max - s)`` for one score.

Both units have the same members (``delta``, ``mask`` in; ``e`` out, 0 where ``mask`` was low)
and a class attribute ``latency`` (cycles from ``delta`` to ``e``), so the core and its
weighting stages take either (:data:`hadware.hw.attention_core.EXPS`):

* :class:`TableExp` (``exp = "table"``): the HAD table ``LUT[delta / 2]``, one synchronous
  read, ``latency = 1``;
* :class:`Exp2Unit` (``exp = "fixed"``): the fixed-point ``2**(-u)`` of
  :mod:`hadware.golden.attention_core` (range reduction, a node table, linear interpolation,
  a rounding shift), four stages, ``latency = 4``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["Exp2Unit", "InterpMul", "ScaleMul", "TableExp"]


class TableExp(wiring.Component):
    """The HAD exponential for one score: ``e = LUT[delta / 2]``, 0 where ``mask`` is low.

    Members
    -------
    delta : In(exp_delta_width)
        ``s_max - s``, even, in ``[0, 2 d]``.
    mask : In(1)
    e : Out(exp_width)
        Valid :attr:`latency` = 1 cycle after ``delta`` (the synchronous table read).
    wr_en, wr_addr, wr_data : In
        With ``cfg.runtime_temperature`` only: ``LUT[wr_addr] <= wr_data`` at the clock edge
        where ``wr_en`` is high (``wr_addr <= d``; the caller drops other addresses). The table
        starts with the config's entries (its initial content, which reset does not restore).
    """

    latency = 1

    def __init__(self, cfg):
        self.cfg = cfg
        members = {
            "delta": In(cfg.exp_delta_width),
            "mask": In(1),
            "e": Out(cfg.exp_width),
        }
        if cfg.runtime_temperature:
            members.update({"wr_en": In(1), "wr_addr": In(cfg.lut_address_width),
                            "wr_data": In(cfg.lut_width)})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        lut = Memory(shape=cfg.lut_width, depth=cfg.lut_depth, init=list(cfg.lut))
        m.submodules.exp_lut = lut
        if cfg.runtime_temperature:
            wr = lut.write_port()
            m.d.comb += [wr.en.eq(self.wr_en), wr.addr.eq(self.wr_addr),
                         wr.data.eq(self.wr_data)]
        rd = lut.read_port()
        mask_d = Signal(reset_less=True)
        m.d.sync += mask_d.eq(self.mask)
        # (the mask acts on the registered entry only: the address is the difference itself, so
        # that no select precedes the table, which a device without a memory block builds from
        # several levels of logic)
        m.d.comb += [
            rd.addr.eq(self.delta[1:]),
            self.e.eq(Mux(mask_d, rd.data, 0)),
        ]
        return m


class ScaleMul(wiring.Component):
    """``x = delta * c`` (combinational): for the constant ``c = exp_scale``, or with
    ``cfg.runtime_temperature`` for the member ``c`` (a full multiplier)."""

    def __init__(self, cfg):
        self.runtime = cfg.runtime_temperature
        self.const = None if self.runtime else cfg.exp_scale
        members = {"delta": In(cfg.exp_delta_width),
                   "x": Out(cfg.exp_delta_width + cfg.exp_scale_width)}
        if self.runtime:
            members["c"] = In(cfg.exp_scale_width)
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += self.x.eq(self.delta * (self.c if self.runtime else self.const))
        return m


class InterpMul(wiring.Component):
    """``y = t * 2**Q - slope * r``: the interpolation between two table nodes
    (combinational; ``Q = exp_interp_bits >= 1``)."""

    def __init__(self, cfg):
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
    """The fixed-point exponential ``E(delta)`` of :mod:`hadware.golden.attention_core`.

    Four registered stages, one operation of the chain each: (1) ``x = delta * c``; (2) ``t``
    (``x`` rounded to ``H`` fractional bits), its integer part saturated at ``F + 2``, the node
    ``j`` and the position ``r``, the table (``2**P`` words of node and slope, synchronous read)
    addressed with ``j``; (3) ``Y = T[j] * 2**Q - (T[j] - T[j+1]) * r``; (4) the rounding right
    shift by ``Q + i``. One ``delta`` per cycle.

    Members
    -------
    delta : In(exp_delta_width)
        ``s_max - s`` in ``[0, delta_max]``.
    mask : In(1)
    e : Out(exp_width)
        ``E(delta)``, 0 where ``mask`` was low; valid :attr:`latency` = 4 cycles after
        ``delta``.
    scale, shift : In
        With ``cfg.runtime_temperature`` only: ``c`` and ``G`` of the current temperature
        (``cfg.table_for``; ``G > H``), held while weights are computed. The rounding shift
        by ``G - H`` is then a barrel shifter.
    """

    latency = 4

    def __init__(self, cfg):
        self.cfg = cfg
        members = {"delta": In(cfg.exp_delta_width), "mask": In(1), "e": Out(cfg.exp_width)}
        if cfg.runtime_temperature:
            members.update({"scale": In(cfg.exp_scale_width),
                            "shift": In(range(cfg.exp_scale_shift_max + 1))})
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        f, p, q = cfg.exp_frac_bits, cfg.exp_table_bits, cfg.exp_interp_bits
        g, h = cfg.exp_scale_shift, cfg.exp_index_bits
        tw = cfg.exp_table_width
        table = cfg.exp_table
        words = [table[j] | ((table[j] - table[j + 1]) << tw) for j in range(2**p)]
        rom = Memory(shape=tw + cfg.exp_slope_width, depth=2**p, init=words)
        m.submodules.exp_table = rom
        rd = rom.read_port()

        # Stage 1: the product x = delta * c, registered. (Datapath registers have no reset:
        # the core's valid bits say when the weight matters.)
        m.submodules.exp_scale = scale = ScaleMul(cfg)
        m.d.comb += scale.delta.eq(self.delta)
        if cfg.runtime_temperature:
            m.d.comb += scale.c.eq(self.scale)
        x = Signal.like(scale.x, name="x", reset_less=True)
        mask1 = Signal(reset_less=True)
        m.d.sync += [x.eq(scale.x), mask1.eq(self.mask)]

        # Stage 2: t (x rounded to H fractional bits), the shift, the node address (the table
        # read registers the node and its slope).
        if cfg.runtime_temperature:
            # (x + 2**(s-1)) >> s for s = G - H >= 1; a half beyond x's width adds nothing
            # to a result that is 0 anyway, so it is cut to x's width plus one.
            sh1 = Signal(range(cfg.exp_scale_shift_max + 1))  # s - 1
            half = Signal(len(x) + 1)
            m.d.comb += [sh1.eq(self.shift - (h + 1)), half.eq(Const(1, 1) << sh1)]
            rounded = Signal(len(x) + 2)
            m.d.comb += rounded.eq((x + half) >> (sh1 + 1))
        else:
            rounded = (x + (1 << (g - h - 1))) >> (g - h)
        t = Signal(max(len(rounded), h + 1))
        m.d.comb += t.eq(rounded)
        ipart = t[h:]
        shw = cfg.exp_shift_max.bit_length()
        shift = Signal(shw)
        m.d.comb += [
            shift.eq(Mux(ipart >= cfg.exp_shift_max, cfg.exp_shift_max, ipart[:shw])),
            rd.addr.eq(t[q:h]),
        ]
        shift2 = Signal(shw, reset_less=True)
        mask2 = Signal(reset_less=True)
        m.d.sync += [shift2.eq(shift), mask2.eq(mask1)]

        # Stage 3: Y = T[j] * 2**Q - (T[j] - T[j+1]) * r, registered.
        node = rd.data[:tw]
        if q:
            r2 = Signal(q, reset_less=True)
            m.d.sync += r2.eq(t[:q])
            m.submodules.exp_interp = interp = InterpMul(cfg)
            m.d.comb += [interp.t.eq(node), interp.slope.eq(rd.data[tw:]), interp.r.eq(r2)]
            y_next = interp.y
        else:
            y_next = node
        y = Signal(len(y_next), name="y", reset_less=True)
        shift3 = Signal(shw, reset_less=True)
        mask3 = Signal(reset_less=True)
        m.d.sync += [y.eq(y_next), shift3.eq(shift2), mask3.eq(mask2)]

        # Stage 4: round(Y / 2**k), halves up, k = Q + shift: floor((floor(2Y / 2**k) + 1) / 2).
        shifted = Signal(f + 2)
        m.d.comb += shifted.eq(Cat(Const(0, 1), y)[q:] >> shift3)
        e = Signal(f + 1, reset_less=True)
        m.d.sync += e.eq(Mux(mask3, (shifted + 1) >> 1, 0))
        m.d.comb += self.e.eq(e)
        return m
