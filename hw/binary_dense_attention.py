"""Binarized dense attention baseline, and the core shared by the three attention baselines.

The baselines exist to compare the HAD core (:mod:`hadware.hw.attention`) with what it replaces:

* ``binary_dense_attention`` (this module): HAD's XNOR-popcount scores, no sparsifier: the
  softmax runs over **all** valid keys with the HAD table ``LUT[(s_max - s_j) / 2]``;
* ``std_attention`` (:mod:`hadware.hw.std_attention`): int8 dot products, softmax over all keys;
* ``int8_topk_attention`` (:mod:`hadware.hw.int8_topk_attention`): int8 dot products, the HAD
  sparsifier.

All three keep HAD's interfaces, context memory, lanes and output path; :class:`BaselineCore`
holds that common part and each block supplies its score lane and its exponential unit.

Streams (as the HAD core)
-------------------------
* ``ctx_stream`` (in): ``{clear, key, value}``. ``clear = 1`` empties the context; otherwise the
  beat appends entry ``count``. Appends beyond ``n_max`` entries are accepted and dropped.
* ``q_stream`` (in): ``{q, n}``; the query attends over ``min(n, count)`` entries (with none,
  ``out`` is 0).
* ``o_stream`` (out): ``{out}``, ``d_v`` outputs in units of ``2**-out_frac_bits`` (the top-k
  baseline adds HAD's ``{index, score, sel}``).

Both inputs are served only between queries (context writes first when both are valid).

Storage
-------
Keys: ``ceil(n_max / lanes)`` rows of ``lanes`` keys, as in the HAD core (``d`` bits per key, or
``8 d`` for int8 keys). Values: the top-k core reads one selected row per cycle, so it stores
``n_max`` rows of ``8 * d_v`` bits as HAD does; a dense core weighs ``lanes`` rows per cycle, so
it stores the same bits as ``ceil(n_max / lanes)`` rows of ``lanes * 8 * d_v`` bits, written
with one enable per entry like the keys. A dense core also keeps the score buffer described
below. All memories are synchronous-read.

Dense datapath (scores computed once, then weighed)
---------------------------------------------------
1. **Score pass.** Every key row goes through the score lanes once. The ``lanes`` scores of a
   row are written into a score buffer (``ceil(n_max / lanes)`` rows of ``lanes * score_width``
   bits: the attention row that a dense softmax must keep, ``n_max * score_width`` bits), and a
   registered tree of pairwise maxima (:class:`MaxTree`, ``L_tree = ceil(log2(lanes))``
   levels) with a running maximum gives ``s_max``. (Scoring the keys a second time instead
   would save the buffer but run every dot product twice per query: for int8 scores that
   doubles the largest part of the switching energy, which would flatter HAD.)
2. **Weighting pass**, as soon as ``s_max`` is final: the buffer is read back one row per cycle
   (the key memory and the score lanes stay idle); each lane computes its weight
   ``e_j = E(s_max - s_j)`` and the ``d_v`` products ``e_j * v[j, c]`` (:class:`WeightLane`);
   per column, a tree adds the ``lanes`` products and an accumulator the rows
   (:class:`ColumnSum`). The value row is read as the weights arrive.
3. One reciprocal per query (:class:`~hadware.hw.attention.Divider`, ``R + 1`` cycles), then one
   output column per cycle through one multiplier (:class:`~hadware.hw.attention.Scaler`), as
   in the HAD core.

Timing of the dense core (per query, no output stall), from the cycle the query is accepted to
the cycle its output is valid::

    cycles = 2 * ceil(n_eff / lanes) + L_tree + L_lane + L_exp + R + d_v + 7

with ``n_eff = max(1, min(n, count))``, ``L_lane`` the score lane's latency, ``L_exp`` the
exponential unit's (1 for the HAD table, 2 for the int8 unit) and ``R = recip_bits``. The top-k
core (HAD's datapath) takes ``ceil(n_eff / lanes) + top_k + L_lane + L_exp + R + d_v + 5``.
The next query is accepted the cycle after the output transfer.

This block: ``L_lane = 1 + ceil(log2(d / 8))`` (:class:`~hadware.hw.score_unit.ScoreLane`),
``L_exp = 1`` (:class:`TableExp`).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.config.score_unit import ScoreUnitConfig
from hadware.config.topk import TopKConfig
from hadware.hw.attention import Divider, Scaler
from hadware.hw.score_unit import ScoreLane, score_unit_latency
from hadware.hw.topk import TopK

__all__ = [
    "BaselineCore",
    "BinaryDenseAttention",
    "ColumnSum",
    "MaxTree",
    "SlotWeightedSum",
    "TableExp",
    "WeightLane",
    "WeightMul",
    "clog2",
]


def clog2(n: int) -> int:
    """``ceil(log2(n))`` for ``n >= 1`` (0 for 1)."""
    return (n - 1).bit_length()


def _delay(m: Module, sig: Value, n: int, name: str, *, data: bool = False) -> list[Value]:
    """``[sig, sig delayed by 1, ..., sig delayed by n]`` through ``n`` registers; with
    ``data`` (a value only read together with a valid bit) the registers have no reset."""
    out = [sig]
    for i in range(n):
        r = Signal(Value.cast(sig).shape(), name=f"{name}{i + 1}", reset_less=data)
        m.d.sync += r.eq(out[-1])
        out.append(r)
    return out


# -- exponential units -----------------------------------------------------------------------


class TableExp(wiring.Component):
    """The HAD exponential for one lane: ``e = LUT[delta / 2]``, 0 where ``mask`` is low.

    Members
    -------
    delta : In(lut_address_width + 1)
        ``s_max - s_j``, even, in ``[0, 2 d]``.
    mask : In(1)
    e : Out(lut_width)
        Valid :attr:`latency` = 1 cycle after ``delta`` (the synchronous table read).
    """

    latency = 1

    def __init__(self, cfg: BinaryDenseAttentionConfig):
        self.cfg = cfg
        super().__init__({
            "delta": In(cfg.lut_address_width + 1),
            "mask": In(1),
            "e": Out(cfg.lut_width),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        lut = Memory(shape=cfg.lut_width, depth=cfg.lut_depth, init=list(cfg.lut))
        m.submodules.exp_lut = lut
        rd = lut.read_port()
        mask_d = Signal(reset_less=True)
        m.d.sync += mask_d.eq(self.mask)
        m.d.comb += [
            rd.addr.eq(Mux(self.mask, self.delta[1:], 0)),
            self.e.eq(Mux(mask_d, rd.data, 0)),
        ]
        return m


# -- building blocks of the dense datapath --------------------------------------------------


class MaxTree(wiring.Component):
    """Maximum of ``lanes`` masked signed values: a tree of pairwise maxima, one register level
    per tree level (``latency = ceil(log2(lanes))``; combinational for one lane).

    Members
    -------
    s : In(ArrayLayout(signed(width), lanes)); mask : In(lanes)
    max : Out(signed(width))
        The largest ``s[j]`` with ``mask[j]`` set (meaningless when ``any`` is low).
    any : Out(1)
        Some ``mask[j]`` was set.
    """

    def __init__(self, lanes: int, width: int):
        self.lanes, self.width = lanes, width
        self.latency = clog2(lanes)
        super().__init__({
            "s": In(data.ArrayLayout(signed(width), lanes)),
            "mask": In(lanes),
            "max": Out(signed(width)),
            "any": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        level = [(self.mask[j], self.s[j]) for j in range(self.lanes)]
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for i in range(0, len(level), 2):
                v = Signal(name=f"any{depth}_{i // 2}", reset_less=True)
                s = Signal(signed(self.width), name=f"max{depth}_{i // 2}", reset_less=True)
                if i + 1 < len(level):
                    (va, a), (vb, b) = level[i], level[i + 1]
                    m.d.sync += [v.eq(va | vb), s.eq(Mux(va & (~vb | (a >= b)), a, b))]
                else:
                    m.d.sync += [v.eq(level[i][0]), s.eq(level[i][1])]
                nxt.append((v, s))
            level = nxt
        m.d.comb += [self.any.eq(level[0][0]), self.max.eq(level[0][1])]
        return m


class WeightMul(wiring.Component):
    """``p = e * v``: an unsigned weight times an int8 value (combinational; a module of its
    own so that hierarchical synthesis maps each multiplier separately)."""

    def __init__(self, e_width: int):
        self.e_width = e_width
        super().__init__({
            "e": In(e_width),
            "v": In(signed(8)),
            "p": Out(signed(e_width + 9)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += self.p.eq(Cat(self.e, Const(0, 1)).as_signed() * self.v)
        return m


class WeightLane(wiring.Component):
    """One lane of the weighting pass: its weight and its ``d_v`` weighted values.

    ``delta`` and ``mask`` are presented at cycle t; the lane's value row ``v`` is sampled at
    cycle ``t + L_exp``; ``e`` (0 where masked) and ``p[c] = e * v[c]`` are registers valid at
    ``t + L_exp + 1`` (``latency = L_exp + 1``).
    """

    def __init__(self, cfg, exp_unit: wiring.Component):
        self.cfg = cfg
        self.exp_unit = exp_unit
        self.latency = exp_unit.latency + 1
        ew = cfg.exp_width
        super().__init__({
            "delta": In(len(exp_unit.delta)),
            "mask": In(1),
            "v": In(data.ArrayLayout(signed(8), cfg.d_v)),
            "e": Out(ew),
            "p": Out(data.ArrayLayout(signed(ew + 9), cfg.d_v)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        m.submodules.exp = exp = self.exp_unit
        m.d.comb += [exp.delta.eq(self.delta), exp.mask.eq(self.mask)]
        # Datapath registers: no reset (the core's valid bits say when they matter).
        e = Signal(cfg.exp_width, reset_less=True)
        m.d.sync += e.eq(exp.e)
        m.d.comb += self.e.eq(e)
        for c in range(cfg.d_v):
            mul = WeightMul(cfg.exp_width)
            m.submodules[f"wsum_mul{c}"] = mul
            p = Signal(signed(cfg.exp_width + 9), name=f"p{c}", reset_less=True)
            m.d.comb += [mul.e.eq(exp.e), mul.v.eq(self.v[c]), self.p[c].eq(p)]
            m.d.sync += p.eq(mul.p)
        return m


class ColumnSum(wiring.Component):
    """Accumulates the sum of ``lanes`` terms per cycle: when ``en``,
    ``acc <= (0 if first else acc) + sum(x)`` (an adder tree and an accumulator, exact).

    Members
    -------
    x : In(ArrayLayout(shape, lanes)); en : In(1); first : In(1); acc : Out(acc_shape)
    """

    def __init__(self, lanes: int, shape, acc_shape):
        self.lanes = lanes
        self.acc_shape = acc_shape
        super().__init__({
            "x": In(data.ArrayLayout(shape, lanes)),
            "en": In(1),
            "first": In(1),
            "acc": Out(acc_shape),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        total = self.x[0]
        for j in range(1, self.lanes):
            total = total + self.x[j]
        acc = Signal(self.acc_shape, reset_less=True)  # 'first' starts every sum afresh
        with m.If(self.en):
            m.d.sync += acc.eq(Mux(self.first, 0, acc) + total)
        m.d.comb += self.acc.eq(acc)
        return m


class SlotWeightedSum(wiring.Component):
    """The HAD weighting of selected slots with a given exponential unit (the top-k core).

    One slot per cycle from the sparsifier (always ready): slot 0's score is ``s_max``; each
    selected slot weighs ``e = E(s_max - s)`` from the exponential unit (``L_exp`` cycles), its
    value row is read so that it arrives with the weight, and ``den`` / ``num`` accumulate
    exactly. ``done`` is high for one cycle after the last slot has been added.

    Members
    -------
    slot : In(stream.Signature({score, index, sel, last}))
    v_addr : Out(index_width); v_data : In(8 * d_v)
    den : Out(den_width); num : Out(ArrayLayout(signed(num_width), d_v))
    index, score : Out(ArrayLayout(...)); sel : Out(top_k); done : Out(1)
    """

    def __init__(self, cfg, slot_layout, exp_unit: wiring.Component):
        self.cfg = cfg
        self.exp_unit = exp_unit
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
        m.submodules.exp = exp = self.exp_unit
        lat = exp.latency

        s = self.slot.payload
        m.d.comb += self.slot.ready.eq(1)
        take = self.slot.valid
        first = Signal(init=1)  # the next slot is slot 0 of a query
        smax = Signal(signed(sw))
        top = Signal(signed(sw))
        diff = Signal(signed(sw + 1))
        m.d.comb += [
            top.eq(Mux(first, s.score, smax)),
            diff.eq(top - s.score),
            exp.delta.eq(diff[:len(exp.delta)]),  # >= 0 for every selected slot
            exp.mask.eq(s.sel),
        ]
        # The value read takes one cycle: address it L_exp - 1 cycles after the slot.
        m.d.comb += self.v_addr.eq(_delay(m, s.index, lat - 1, "v_addr")[-1])
        st_valid = _delay(m, take, lat, "st_valid")[-1]
        st_first = _delay(m, first, lat, "st_first")[-1]
        st_last = _delay(m, s.last, lat, "st_last")[-1]

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

        with m.If(st_valid):
            m.d.sync += self.den.eq(Mux(st_first, 0, self.den) + exp.e)
            for c in range(cfg.d_v):
                mul = WeightMul(cfg.exp_width)
                m.submodules[f"wsum_mul{c}"] = mul
                m.d.comb += [mul.e.eq(exp.e), mul.v.eq(self.v_data[8 * c: 8 * c + 8])]
                m.d.sync += self.num[c].eq(Mux(st_first, 0, self.num[c]) + mul.p)
        m.d.sync += self.done.eq(st_valid & st_last)
        return m


# -- the shared core -------------------------------------------------------------------------


class BaselineCore(wiring.Component):
    """The datapath shared by the attention baselines (see the module docstring).

    A block subclasses it and sets :attr:`config_class`, :attr:`sparse` and the hooks
    :meth:`key_layout`, :meth:`lane_latency`, :meth:`exp_latency`, :meth:`make_lane` and
    :meth:`make_exp`.

    Parameters
    ----------
    config
        An instance of :attr:`config_class` (exactly that class).

    Raises
    ------
    TypeError
        If ``config`` is not an instance of :attr:`config_class`.
    ValueError
        If ``top_k`` exceeds what the sparsifier supports (256).
    """

    #: The block's configuration class.
    config_class: type = BinaryDenseAttentionConfig
    #: True for the top-k core (HAD's sparsifier and slot weighting), False for the dense one.
    sparse: bool = False

    # -- hooks -------------------------------------------------------------------------------

    @classmethod
    def key_layout(cls, cfg):
        """Shape of one key (and of the query)."""
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def lane_latency(cls, cfg) -> int:
        """Cycles from a key row at a lane's input to its score."""
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def exp_latency(cls, cfg) -> int:
        """Cycles from a score difference to its weight."""
        raise NotImplementedError  # pragma: no cover

    def make_lane(self, m: Module, name: str, q: Value, k: Value) -> Value:
        """Add a score lane called ``name`` scoring the query bits ``q`` against the key bits
        ``k``; return its score, valid :meth:`lane_latency` cycles later."""
        raise NotImplementedError  # pragma: no cover

    def make_exp(self) -> wiring.Component:
        """An exponential unit with members ``delta``, ``mask``, ``e`` and ``latency``."""
        raise NotImplementedError  # pragma: no cover

    # -- construction ------------------------------------------------------------------------

    def __init__(self, config):
        cls = self.config_class
        if type(config) is not cls:
            self._MustUse__silence = True
            article = "an" if cls.__name__[0] in "AEIOU" else "a"
            raise TypeError(f"config must be {article} {cls.__name__}, not {config!r}")
        self.config = config
        if self.sparse:
            try:
                self.topk_config = TopKConfig(top_k=config.top_k, lanes=config.lanes,
                                              n_max=config.n_max,
                                              score_width=config.score_width)
            except ValueError as e:
                self._MustUse__silence = True
                raise ValueError(f"{config.block} hardware: {e}") from None
        self.latency = self.latency_constant(config)
        if self.sparse:
            self.latency_formula = ("cycles from query accepted to output valid = "
                                    "ceil(max(1, min(n, count)) / lanes) + top_k + L, "
                                    "L = L_lane + L_exp + recip_bits + d_v + 5 = "
                                    f"{self.latency}")
        else:
            self.latency_formula = ("cycles from query accepted to output valid = "
                                    "2 * ceil(max(1, min(n, count)) / lanes) + L, "
                                    "L = ceil(log2(lanes)) + L_lane + L_exp + recip_bits + d_v"
                                    f" + 7 = {self.latency}")
        self.ctx_layout, self.q_layout, self.out_layout = self.layouts(config)
        super().__init__({
            "ctx_stream": In(stream.Signature(self.ctx_layout)),
            "q_stream": In(stream.Signature(self.q_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    @classmethod
    def latency_constant(cls, cfg) -> int:
        """The constant L of the per-query cycle count (see the module docstring)."""
        tail = cls.lane_latency(cfg) + cls.exp_latency(cfg) + cfg.recip_bits + cfg.d_v
        if cls.sparse:
            return tail + 5
        return clog2(cfg.lanes) + tail + 7

    @classmethod
    def cycles(cls, cfg, n_eff: int) -> int:
        """Cycles from query acceptance to output valid for ``n_eff`` attended entries."""
        rows = -(-max(1, n_eff) // cfg.lanes)
        if cls.sparse:
            return rows + cfg.top_k + cls.latency_constant(cfg)
        return 2 * rows + cls.latency_constant(cfg)

    @classmethod
    def layouts(cls, cfg):
        """Payload layouts of ``ctx_stream``, ``q_stream`` and ``o_stream``."""
        key = cls.key_layout(cfg)
        ctx = data.StructLayout({"clear": 1, "key": key,
                                 "value": data.ArrayLayout(signed(8), cfg.d_v)})
        q = data.StructLayout({"q": key, "n": cfg.count_width})
        fields = {"out": data.ArrayLayout(signed(cfg.out_width), cfg.d_v)}
        if cls.sparse:
            fields.update({
                "index": data.ArrayLayout(cfg.index_width, cfg.top_k),
                "score": data.ArrayLayout(signed(cfg.score_width), cfg.top_k),
                "sel": cfg.top_k,
            })
        return ctx, q, data.StructLayout(fields)

    # -- elaboration -------------------------------------------------------------------------

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.config
        lanes = cfg.lanes
        kb = Shape.cast(self.key_layout(cfg)).width
        rows = -(-cfg.n_max // lanes)
        vb = 8 * cfg.d_v
        l_lane = self.lane_latency(cfg)

        keys = Memory(shape=lanes * kb, depth=rows, init=[])
        if self.sparse:  # one selected row per cycle, as in the HAD core
            values = Memory(shape=vb, depth=cfg.n_max, init=[])
        else:  # lanes rows per cycle
            values = Memory(shape=lanes * vb, depth=rows, init=[])
        m.submodules.key_mem = keys
        m.submodules.value_mem = values
        k_wr = keys.write_port(granularity=kb)
        k_rd = keys.read_port()
        v_wr = values.write_port() if self.sparse else values.write_port(granularity=vb)
        v_rd = values.read_port()

        # -- context writes ---------------------------------------------------------------
        count = Signal(cfg.count_width)
        wr_row = Signal(range(rows + 1))
        wr_lane = Signal(range(max(lanes, 2)))  # at least 1 bit (no zero-width wire)
        idle = Signal(init=1)
        ctx = self.ctx_stream.payload
        lane_en = Signal(lanes)
        m.d.comb += [
            self.ctx_stream.ready.eq(idle),
            lane_en.eq((Const(1, lanes) << wr_lane)[:lanes]),
            k_wr.addr.eq(wr_row),
            k_wr.data.eq(Value.cast(ctx.key).replicate(lanes)),
        ]
        if self.sparse:
            m.d.comb += [v_wr.addr.eq(count), v_wr.data.eq(Value.cast(ctx.value))]
        else:
            m.d.comb += [v_wr.addr.eq(wr_row),
                         v_wr.data.eq(Value.cast(ctx.value).replicate(lanes))]
        ctx_take = Signal()
        m.d.comb += ctx_take.eq(self.ctx_stream.valid & idle)
        with m.If(ctx_take):
            with m.If(ctx.clear):
                m.d.sync += [count.eq(0), wr_row.eq(0), wr_lane.eq(0)]
            with m.Elif(count < cfg.n_max):
                m.d.comb += [k_wr.en.eq(lane_en), v_wr.en.eq(1 if self.sparse else lane_en)]
                m.d.sync += count.eq(count + 1)
                with m.If(wr_lane == lanes - 1):
                    m.d.sync += [wr_lane.eq(0), wr_row.eq(wr_row + 1)]
                with m.Else():
                    m.d.sync += wr_lane.eq(wr_lane + 1)

        # -- query acceptance and key scan(s) ---------------------------------------------
        m.d.comb += self.q_stream.ready.eq(idle & ~self.ctx_stream.valid)
        q_take = Signal()
        m.d.comb += q_take.eq(self.q_stream.valid & self.q_stream.ready)
        q_reg = Signal(kb)
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

        # Tags of each row: the key row arrives one cycle after its address, the lanes add
        # l_lane cycles; 'depth' stages later the scores are at the lanes' outputs.
        depth = 1 + l_lane
        t_valid = _delay(m, scanning, depth, "p_valid")[-1]
        t_mask = _delay(m, mask, depth, "p_mask", data=True)[-1]
        t_last = _delay(m, scan_last, depth, "p_last", data=True)[-1]
        scores = [self.make_lane(m, f"lane{j}", q_reg, k_rd.data[j * kb:(j + 1) * kb])
                  for j in range(lanes)]

        if self.sparse:
            wsum = self._sparse_weighting(m, scores, t_valid, t_mask, t_last, v_rd)
            den, num, done = wsum.den, wsum.num, wsum.done
        else:
            t_row = _delay(m, rd_row, depth, "p_row", data=True)[-1]
            den, num, done = self._dense_weighting(m, scores, t_valid, t_mask, t_last, t_row,
                                                   v_rd, n_eff, q_take)

        # -- one reciprocal, then one output column per cycle ------------------------------
        div = Divider(cfg)
        m.submodules.divider = div
        m.d.comb += [div.start.eq(done), div.den.eq(den)]
        col = Signal(range(cfg.d_v + 1))
        scaling = Signal()
        num_sel = Signal(signed(cfg.num_width))
        m.d.comb += num_sel.eq(num[0])
        for c in range(1, cfg.d_v):
            with m.If(col == c):
                m.d.comb += num_sel.eq(num[c])
        scaler = Scaler(cfg)
        m.submodules.scale = scaler
        m.d.comb += [scaler.num.eq(num_sel), scaler.recip.eq(div.recip)]
        out_valid = Signal()
        out_regs = Signal(data.ArrayLayout(signed(cfg.out_width), cfg.d_v))
        with m.If(div.done):
            m.d.sync += [scaling.eq(1), col.eq(0)]
        with m.If(scaling):
            for c in range(cfg.d_v):
                with m.If(col == c):
                    m.d.sync += out_regs[c].eq(scaler.out)
            m.d.sync += col.eq(col + 1)
            with m.If(col == cfg.d_v - 1):
                m.d.sync += [scaling.eq(0), out_valid.eq(1)]
        m.d.comb += [self.o_stream.valid.eq(out_valid), self.o_stream.payload.out.eq(out_regs)]
        if self.sparse:
            m.d.comb += [self.o_stream.payload.index.eq(wsum.index),
                         self.o_stream.payload.score.eq(wsum.score),
                         self.o_stream.payload.sel.eq(wsum.sel)]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += [out_valid.eq(0), idle.eq(1)]
        return m

    def _sparse_weighting(self, m, scores, t_valid, t_mask, t_last, v_rd):
        """HAD's datapath: the sparsifier, then one selected slot per cycle."""
        topk = TopK(self.topk_config)
        m.submodules.topk = topk
        for j, s in enumerate(scores):
            m.d.comb += topk.i_stream.payload.score[j].eq(s)
        # The sparsifier collects while a scan is in flight (it emits only after 'last'), so
        # its input is ready for every beat: no stall path is needed.
        m.d.comb += [
            topk.i_stream.valid.eq(t_valid),
            topk.i_stream.payload.mask.eq(t_mask),
            topk.i_stream.payload.last.eq(t_last),
        ]
        wsum = SlotWeightedSum(self.config, topk.out_layout, self.make_exp())
        m.submodules.wsum = wsum
        wiring.connect(m, topk.o_stream, wsum.slot)
        m.d.comb += [v_rd.addr.eq(wsum.v_addr), wsum.v_data.eq(v_rd.data)]
        return wsum

    def _dense_weighting(self, m, scores, t_valid, t_mask, t_last, t_row, v_rd, n_eff, q_take):
        """The score buffer, the maximum and the weighting pass (module docstring, 1 and 2)."""
        cfg = self.config
        lanes, sw = cfg.lanes, cfg.score_width
        rows = -(-cfg.n_max // lanes)

        # Score pass: buffer the scores, track the maximum.
        buf = Memory(shape=lanes * sw, depth=rows, init=[])
        m.submodules.score_buf = buf
        buf_wr = buf.write_port()
        buf_rd = buf.read_port()
        m.d.comb += [buf_wr.addr.eq(t_row), buf_wr.data.eq(Cat(*scores)), buf_wr.en.eq(t_valid)]
        tree = MaxTree(lanes, sw)
        m.submodules.max_tree = tree
        for j, s in enumerate(scores):
            m.d.comb += [tree.s[j].eq(s), tree.mask[j].eq(t_mask[j] & t_valid)]
        tree_valid = _delay(m, t_valid, tree.latency, "max_valid")[-1]
        tree_last = _delay(m, t_last, tree.latency, "max_last", data=True)[-1]
        smax = Signal(signed(sw), reset_less=True)  # read only once smax_any is set
        smax_any = Signal()
        with m.If(q_take):
            m.d.sync += smax_any.eq(0)
        with m.If(tree_valid & tree.any & (~smax_any | (tree.max > smax))):
            m.d.sync += [smax.eq(tree.max), smax_any.eq(1)]

        # Weighting pass: starts the cycle after the last row has left the tree (s_max is
        # final then, and every buffer row has been written).
        weighing = Signal()
        w_row = Signal(range(rows + 1))
        w_base = Signal(cfg.count_width + 8)
        with m.If(tree_valid & tree_last):
            m.d.sync += [weighing.eq(1), w_row.eq(0), w_base.eq(0)]
        w_last = Signal()
        w_mask = Signal(lanes)
        m.d.comb += [buf_rd.addr.eq(w_row), w_last.eq(w_base + lanes >= n_eff)]
        for j in range(lanes):
            m.d.comb += w_mask[j].eq(w_base + j < n_eff)
        with m.If(weighing):
            m.d.sync += [w_row.eq(w_row + 1), w_base.eq(w_base + lanes)]
            with m.If(w_last):
                m.d.sync += weighing.eq(0)
        # Buffer data one cycle after its address; the value row L_exp cycles later.
        b_valid = _delay(m, weighing, 1, "b_valid")[-1]
        b_mask = _delay(m, w_mask, 1, "b_mask", data=True)[-1]
        b_last = _delay(m, w_last, 1, "b_last", data=True)[-1]
        b_first = _delay(m, w_row == 0, 1, "b_first", data=True)[-1]
        m.d.comb += v_rd.addr.eq(_delay(m, w_row, self.exp_latency(cfg), "v_row",
                                        data=True)[-1])
        wlanes = []
        for j in range(lanes):
            wl = WeightLane(cfg, self.make_exp())
            m.submodules[f"wsum{j}"] = wl
            diff = Signal(signed(sw + 1), name=f"diff{j}")
            m.d.comb += [
                diff.eq(smax - buf_rd.data[j * sw:(j + 1) * sw].as_signed()),
                wl.delta.eq(diff[:len(wl.delta)]),  # >= 0 for every valid key
                wl.mask.eq(b_mask[j] & b_valid),
                wl.v.eq(v_rd.data[j * 8 * cfg.d_v:(j + 1) * 8 * cfg.d_v]),
            ]
            wlanes.append(wl)
        lat = wlanes[0].latency
        acc_en = _delay(m, b_valid, lat, "acc_en")[-1]
        acc_first = _delay(m, b_first, lat, "acc_first", data=True)[-1]
        acc_last = _delay(m, b_last, lat, "acc_last", data=True)[-1]

        den_sum = ColumnSum(lanes, cfg.exp_width, cfg.den_width)
        m.submodules.wsum_den = den_sum
        m.d.comb += [den_sum.en.eq(acc_en), den_sum.first.eq(acc_first)]
        for j, wl in enumerate(wlanes):
            m.d.comb += den_sum.x[j].eq(wl.e)
        num = Signal(data.ArrayLayout(signed(cfg.num_width), cfg.d_v))
        for c in range(cfg.d_v):
            col_sum = ColumnSum(lanes, signed(cfg.exp_width + 9), signed(cfg.num_width))
            m.submodules[f"wsum_num{c}"] = col_sum
            m.d.comb += [col_sum.en.eq(acc_en), col_sum.first.eq(acc_first),
                         num[c].eq(col_sum.acc)]
            for j, wl in enumerate(wlanes):
                m.d.comb += col_sum.x[j].eq(wl.p[c])
        done = Signal()
        m.d.sync += done.eq(acc_en & acc_last)
        return den_sum.acc, num, done


class BinaryDenseAttention(BaselineCore):
    """The binarized dense attention baseline (see the module docstring).

    Parameters
    ----------
    config : BinaryDenseAttentionConfig

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`BinaryDenseAttentionConfig`.
    """

    config_class = BinaryDenseAttentionConfig
    sparse = False

    @classmethod
    def key_layout(cls, cfg):
        return cfg.d

    @classmethod
    def lane_latency(cls, cfg) -> int:
        return score_unit_latency(ScoreUnitConfig(d=cfg.d, lanes=1))

    @classmethod
    def exp_latency(cls, cfg) -> int:
        return TableExp.latency

    def make_lane(self, m: Module, name: str, q: Value, k: Value) -> Value:
        # The HAD lane; the core never stalls its lanes, so the enable is tied high.
        lane = ScoreLane(self.config.d, self.config.score_width)
        m.submodules[name] = lane
        m.d.comb += [lane.q.eq(q), lane.k.eq(k), lane.en.eq(1)]
        return lane.s

    def make_exp(self) -> wiring.Component:
        return TableExp(self.config)
