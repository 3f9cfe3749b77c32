"""HAD attention core: one head, one query at a time, over a stored binarized context.

Arithmetic
----------
Exactly :mod:`hadware.golden.attention` (the specification): XNOR-popcount scores, the top-k
sparsifier (ties to the lower index), softmax numerators ``e_i = LUT[(s_max - s_i) / 2]`` from
a table built at generation time from ``temperature``, exact sums ``den = sum e_i`` and
``num_c = sum e_i * v[idx_i, c]``, then **one division per query**: a restoring divider computes
``recip = floor((2**R + floor(den / 2)) / den)`` in ``R + 1`` cycles, and each output is
``out_c = (num_c * recip + 2**(S-1)) >> S`` (arithmetic shift: round half toward +infinity),
one value column per cycle through one multiplier.

Streams
-------
* ``ctx_stream`` (in): ``{clear, key, value}``. ``clear = 1`` empties the context; otherwise the
  beat appends entry ``count`` (key bits, element j at bit j, 1 = +1; ``d_v`` signed int8
  values). Appends beyond ``n_max`` entries are accepted and dropped.
* ``q_stream`` (in): ``{q, n}``: a query and the number of context entries it attends over. The
  unit uses ``min(n, count)`` entries; with none, every slot is unselected and ``out`` is 0.
* ``o_stream`` (out): ``{out, index, score, sel}``: ``d_v`` outputs in units of
  ``2**-out_frac_bits``, and the ``top_k`` selected slots (best first) with ``sel`` bit p set
  where slot p holds a selection.

Both input streams are served only between queries (context writes first when both are
valid), so a query always sees the context as written before it was accepted.

Storage
-------
Keys: ``ceil(n_max / lanes)`` rows of ``lanes * d`` bits (one row feeds every lane in one cycle);
values: ``n_max`` rows of ``8 * d_v`` bits. Both are synchronous-read memories.

Timing (per query, no output stall)
-----------------------------------
From the cycle the query is accepted to the cycle its output is valid:

    cycles = ceil(n_eff / lanes) + top_k + L,   L = L_score + R + d_v + 6,

with ``n_eff = max(1, min(n, count))``, ``L_score = 1 + ceil(log2(d / 8))`` (the score lanes'
pipeline) and ``R = recip_bits``. The next query is accepted the cycle after the output
transfer. One key per lane per cycle while scoring; one selected slot per cycle while weighting.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hadware.config.attention import AttentionConfig
from hadware.config.score_unit import ScoreUnitConfig
from hadware.config.topk import TopKConfig
from hadware.hw.score_unit import ScoreLane, score_unit_latency
from hadware.hw.topk import TopK

__all__ = [
    "Attention",
    "Divider",
    "Scaler",
    "WeightedSum",
    "attention_cycles",
    "attention_latency_constant",
]


def attention_latency_constant(cfg: AttentionConfig) -> int:
    """The constant L of the per-query cycle count (see the module docstring)."""
    return score_unit_latency(ScoreUnitConfig(d=cfg.d, lanes=1)) + cfg.recip_bits + cfg.d_v + 6


def attention_cycles(cfg: AttentionConfig, n_eff: int) -> int:
    """Cycles from query acceptance to output valid for ``n_eff`` attended entries."""
    return -(-max(1, n_eff) // cfg.lanes) + cfg.top_k + attention_latency_constant(cfg)


class WeightedSum(wiring.Component):
    """Softmax numerators from the table and the exact weighted sums, one slot per cycle.

    Members
    -------
    slot : In(stream.Signature({score, index, sel, last}))  (always ready)
    v_addr : Out(index_width); v_data : In(8 * d_v)
        Read port of the value memory (data one cycle after the address).
    den : Out(den_width); num : Out(ArrayLayout(signed(num_width), d_v))
    index, score : Out(ArrayLayout(...)); sel : Out(top_k)
        The query's slots, best first, complete when ``done`` pulses.
    done : Out(1)
        High for one cycle after the last slot has been added.
    """

    def __init__(self, cfg: AttentionConfig, slot_layout):
        self.cfg = cfg
        super().__init__({
            "slot": In(stream.Signature(slot_layout)),
            "v_addr": Out(cfg.index_width),
            "v_data": In(8 * cfg.d_v),
            "den": Out(cfg.den_width),
            "num": Out(data.ArrayLayout(signed(cfg.num_width), cfg.d_v)),
            "index": Out(data.ArrayLayout(cfg.index_width, cfg.top_k)),
            "score": Out(data.ArrayLayout(signed(cfg.score_width), cfg.top_k)),
            "sel": Out(cfg.top_k),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        k, sw = cfg.top_k, cfg.score_width
        lut = Memory(shape=cfg.lut_width, depth=cfg.lut_depth, init=list(cfg.lut))
        m.submodules.exp_lut = lut
        lut_rd = lut.read_port()

        s = self.slot.payload
        m.d.comb += self.slot.ready.eq(1)
        take = self.slot.valid

        first = Signal(init=1)  # the next slot is slot 0 of a query
        smax = Signal(signed(sw))
        top = Signal(signed(sw))
        m.d.comb += top.eq(Mux(first, s.score, smax))
        diff = Signal(signed(sw + 1))
        m.d.comb += diff.eq(top - s.score)
        addr = Signal(cfg.lut_address_width)
        m.d.comb += [
            addr.eq(Mux(s.sel, diff[1:], 0)),
            lut_rd.addr.eq(addr),
            self.v_addr.eq(s.index),
        ]
        # Stage 1 -> 2 bookkeeping (table and value reads take one cycle).
        st_valid = Signal()
        st_sel = Signal()
        st_first = Signal()
        st_last = Signal()
        m.d.sync += [st_valid.eq(take), st_sel.eq(s.sel), st_first.eq(first),
                     st_last.eq(s.last)]
        with m.If(take):
            m.d.sync += first.eq(s.last)
            with m.If(first):
                m.d.sync += smax.eq(s.score)
            # Slots shift in from the top: after top_k slots, entry 0 holds slot 0.
            for p in range(k - 1):
                m.d.sync += [self.index[p].eq(self.index[p + 1]),
                             self.score[p].eq(self.score[p + 1])]
            m.d.sync += [self.index[k - 1].eq(s.index), self.score[k - 1].eq(s.score),
                         self.sel.eq(Cat(self.sel[1:], s.sel))]

        e = Signal(cfg.lut_width)
        m.d.comb += e.eq(Mux(st_sel, lut_rd.data, 0))
        esig = Cat(e, Const(0, 1)).as_signed()
        with m.If(st_valid):
            with m.If(st_first):
                m.d.sync += self.den.eq(e)
            with m.Else():
                m.d.sync += self.den.eq(self.den + e)
            for c in range(cfg.d_v):
                v = self.v_data[8 * c: 8 * c + 8].as_signed()
                prod = Signal(signed(cfg.lut_width + 9), name=f"ev{c}")
                m.d.comb += prod.eq(esig * v)
                with m.If(st_first):
                    m.d.sync += self.num[c].eq(prod)
                with m.Else():
                    m.d.sync += self.num[c].eq(self.num[c] + prod)
        m.d.sync += self.done.eq(st_valid & st_last)
        return m


class Divider(wiring.Component):
    """Restoring divider for the per-query reciprocal ``floor((2**R + floor(den/2)) / den)``.

    ``start`` loads ``den``; ``R + 1`` cycles later ``done`` pulses with ``recip`` valid (one
    quotient bit per cycle, most significant first). ``den = 0`` gives all ones.
    """

    def __init__(self, cfg: AttentionConfig):
        self.cfg = cfg
        super().__init__({
            "start": In(1),
            "den": In(cfg.den_width),
            "recip": Out(cfg.recip_width),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        r = cfg.recip_bits
        dw = cfg.den_width
        numer = Signal(r + 1)
        divisor = Signal(dw)
        rem = Signal(dw + 1)
        steps = Signal(range(r + 2))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [
                numer.eq((Const(1, r + 1) << r) | (self.den >> 1)),
                divisor.eq(self.den),
                rem.eq(0),
                self.recip.eq(0),
                steps.eq(r + 1),
                busy.eq(1),
            ]
        with m.Elif(busy):
            trial = Signal(dw + 2)
            m.d.comb += trial.eq(Cat(numer[-1], rem))
            fits = Signal()
            m.d.comb += fits.eq(trial >= divisor)
            m.d.sync += [
                rem.eq(Mux(fits, trial - divisor, trial)),
                numer.eq(numer << 1),
                self.recip.eq(Cat(fits, self.recip[:-1])),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


class Scaler(wiring.Component):
    """``out = (num * recip + 2**(S-1)) >> S`` for one value column (combinational): the one
    wide multiplier of the output normalisation, in its own module."""

    def __init__(self, cfg: AttentionConfig):
        self.cfg = cfg
        super().__init__({
            "num": In(signed(cfg.num_width)),
            "recip": In(cfg.recip_width),
            "out": Out(signed(cfg.out_width)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        recip_s = Cat(self.recip, Const(0, 1)).as_signed()
        prod = Signal(signed(cfg.product_width + 1))
        m.d.comb += prod.eq(self.num * recip_s + (1 << (cfg.out_shift - 1)))
        m.d.comb += self.out.eq(prod >> cfg.out_shift)
        return m


class Attention(wiring.Component):
    """The HAD attention core (see the module docstring for streams, arithmetic and timing).

    Parameters
    ----------
    config : AttentionConfig

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AttentionConfig`.
    ValueError
        If ``top_k`` exceeds what the sparsifier supports (256).
    """

    def __init__(self, config: AttentionConfig):
        if not isinstance(config, AttentionConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be an AttentionConfig, not {config!r}")
        self.config = config
        try:
            self.topk_config = TopKConfig(top_k=config.top_k, lanes=config.lanes,
                                          n_max=config.n_max, score_width=config.score_width)
        except ValueError as e:
            self._MustUse__silence = True
            raise ValueError(f"attention hardware: {e}") from None
        self.latency = attention_latency_constant(config)
        self.latency_formula = ("cycles from query accepted to output valid = "
                                "ceil(max(1, min(n, count)) / lanes) + top_k + L, "
                                f"L = L_score + recip_bits + d_v + 6 = {self.latency}")
        self.ctx_layout, self.q_layout, self.out_layout = self.layouts(config)
        super().__init__({
            "ctx_stream": In(stream.Signature(self.ctx_layout)),
            "q_stream": In(stream.Signature(self.q_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    @staticmethod
    def layouts(cfg: AttentionConfig):
        ctx = data.StructLayout({"clear": 1, "key": cfg.d,
                                 "value": data.ArrayLayout(signed(8), cfg.d_v)})
        q = data.StructLayout({"q": cfg.d, "n": cfg.count_width})
        out = data.StructLayout({
            "out": data.ArrayLayout(signed(cfg.out_width), cfg.d_v),
            "index": data.ArrayLayout(cfg.index_width, cfg.top_k),
            "score": data.ArrayLayout(signed(cfg.score_width), cfg.top_k),
            "sel": cfg.top_k,
        })
        return ctx, q, out

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.config
        lanes, d = cfg.lanes, cfg.d
        rows = -(-cfg.n_max // lanes)
        l_score = score_unit_latency(ScoreUnitConfig(d=d, lanes=1))

        keys = Memory(shape=lanes * d, depth=rows, init=[])
        values = Memory(shape=8 * cfg.d_v, depth=cfg.n_max, init=[])
        m.submodules.key_mem = keys
        m.submodules.value_mem = values
        k_wr = keys.write_port(granularity=d)
        k_rd = keys.read_port()
        v_wr = values.write_port()

        # -- context writes -------------------------------------------------------------
        count = Signal(cfg.count_width)
        wr_row = Signal(range(rows + 1))
        wr_lane = Signal(range(lanes))
        idle = Signal(init=1)
        ctx = self.ctx_stream.payload
        m.d.comb += [
            self.ctx_stream.ready.eq(idle),
            k_wr.addr.eq(wr_row),
            k_wr.data.eq(ctx.key.replicate(lanes)),
            v_wr.addr.eq(count),
            v_wr.data.eq(ctx.value.as_value()),
        ]
        ctx_take = Signal()
        m.d.comb += ctx_take.eq(self.ctx_stream.valid & idle)
        with m.If(ctx_take):
            with m.If(ctx.clear):
                m.d.sync += [count.eq(0), wr_row.eq(0), wr_lane.eq(0)]
            with m.Elif(count < cfg.n_max):
                m.d.comb += [k_wr.en.eq((Const(1, lanes) << wr_lane)[:lanes]), v_wr.en.eq(1)]
                m.d.sync += count.eq(count + 1)
                with m.If(wr_lane == lanes - 1):
                    m.d.sync += [wr_lane.eq(0), wr_row.eq(wr_row + 1)]
                with m.Else():
                    m.d.sync += wr_lane.eq(wr_lane + 1)

        # -- query acceptance and key scan ------------------------------------------------
        m.d.comb += self.q_stream.ready.eq(idle & ~self.ctx_stream.valid)
        q_take = Signal()
        m.d.comb += q_take.eq(self.q_stream.valid & self.q_stream.ready)
        q_reg = Signal(d)
        n_eff = Signal(cfg.count_width)
        scanning = Signal()
        rd_row = Signal(range(rows + 1))
        rd_base = Signal(cfg.count_width + 8)
        with m.If(q_take):
            n_req = self.q_stream.payload.n
            m.d.sync += [
                idle.eq(0),
                q_reg.eq(self.q_stream.payload.q),
                n_eff.eq(Mux(n_req < count, n_req, count)),
                scanning.eq(1),
                rd_row.eq(0),
                rd_base.eq(0),
            ]
        m.d.comb += k_rd.addr.eq(rd_row)
        scan_last = Signal()
        m.d.comb += scan_last.eq(rd_base + lanes >= n_eff)
        mask = Signal(lanes)
        for j in range(lanes):
            m.d.comb += mask[j].eq(rd_base + j < n_eff)
        with m.If(scanning):
            m.d.sync += [rd_row.eq(rd_row + 1), rd_base.eq(rd_base + lanes)]
            with m.If(scan_last):
                m.d.sync += scanning.eq(0)

        # The key row arrives one cycle after its address; the lanes add l_score cycles.
        depth = 1 + l_score
        p_valid = Signal(depth)
        p_mask = [Signal(lanes, name=f"p_mask{i}") for i in range(depth)]
        p_last = Signal(depth)
        m.d.sync += [p_valid.eq(Cat(scanning, p_valid[:-1])),
                     p_last.eq(Cat(scan_last, p_last[:-1])),
                     p_mask[0].eq(mask)]
        for i in range(1, depth):
            m.d.sync += p_mask[i].eq(p_mask[i - 1])

        topk = TopK(self.topk_config)
        m.submodules.topk = topk
        for j in range(lanes):
            lane = ScoreLane(d, cfg.score_width)
            m.submodules[f"lane{j}"] = lane
            m.d.comb += [
                lane.q.eq(q_reg),
                lane.k.eq(k_rd.data[j * d:(j + 1) * d]),
                lane.en.eq(1),
                topk.i_stream.payload.score[j].eq(lane.s),
            ]
        # The sparsifier is collecting whenever a scan is in flight (it emits only after
        # 'last'), so its input is ready for every beat: no stall path is needed here.
        m.d.comb += [
            topk.i_stream.valid.eq(p_valid[-1]),
            topk.i_stream.payload.mask.eq(p_mask[-1]),
            topk.i_stream.payload.last.eq(p_last[-1]),
        ]

        # -- softmax numerators and weighted sums -------------------------------------------
        wsum = WeightedSum(cfg, topk.out_layout)
        m.submodules.wsum = wsum
        rd_v = values.read_port()
        wiring.connect(m, topk.o_stream, wsum.slot)
        m.d.comb += [rd_v.addr.eq(wsum.v_addr), wsum.v_data.eq(rd_v.data)]

        # -- one reciprocal, then one output column per cycle ------------------------------
        div = Divider(cfg)
        m.submodules.divider = div
        m.d.comb += [div.start.eq(wsum.done), div.den.eq(wsum.den)]

        col = Signal(range(cfg.d_v + 1))
        scaling = Signal()
        num_sel = Signal(signed(cfg.num_width))
        m.d.comb += num_sel.eq(wsum.num[0])
        for c in range(1, cfg.d_v):
            with m.If(col == c):
                m.d.comb += num_sel.eq(wsum.num[c])
        scaler = Scaler(cfg)
        m.submodules.scale = scaler
        m.d.comb += [scaler.num.eq(num_sel), scaler.recip.eq(div.recip)]
        result = scaler.out
        out_valid = Signal()
        out_regs = Signal(data.ArrayLayout(signed(cfg.out_width), cfg.d_v))
        with m.If(div.done):
            m.d.sync += [scaling.eq(1), col.eq(0)]
        with m.If(scaling):
            for c in range(cfg.d_v):
                with m.If(col == c):
                    m.d.sync += out_regs[c].eq(result)
            m.d.sync += col.eq(col + 1)
            with m.If(col == cfg.d_v - 1):
                m.d.sync += [scaling.eq(0), out_valid.eq(1)]

        m.d.comb += [
            self.o_stream.valid.eq(out_valid),
            self.o_stream.payload.out.eq(out_regs),
            self.o_stream.payload.index.eq(wsum.index),
            self.o_stream.payload.score.eq(wsum.score),
            self.o_stream.payload.sel.eq(wsum.sel),
        ]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += [out_valid.eq(0), idle.eq(1)]
        return m
