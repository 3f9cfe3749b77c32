"""The weighting stages of the attention cores: weights, weighted sums, maxima.

* top-k cores: :class:`SlotWeightedSum` takes the sparsifier's selected slots, one per cycle;
* dense cores: :class:`MaxTree` finds the row maximum during the score pass, then each lane's
  :class:`WeightLane` weighs its buffered score and value row and :class:`ColumnSum` adds the
  lanes' terms per column.

Each weight comes from an exponential part (:mod:`hadware.hw.softmax_exp`) and is multiplied
by an int8 value in its own :class:`WeightMul` module, so that hierarchical synthesis maps each
multiplier separately.
"""

from __future__ import annotations

import operator

from amaranth import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.hw.arith import Multiplier, tree

__all__ = ["ColumnSum", "MaxTree", "SlotWeightedSum", "WeightLane", "WeightMul", "delay"]


def delay(m: Module, sig: Value, n: int, name: str, *, data: bool = False) -> list[Value]:
    """``[sig, sig delayed by 1, ..., sig delayed by n]`` through ``n`` registers; with
    ``data`` (a value only read together with a valid bit) the registers have no reset."""
    out = [sig]
    for i in range(n):
        r = Signal(Value.cast(sig).shape(), name=f"{name}{i + 1}", reset_less=data)
        m.d.sync += r.eq(out[-1])
        out.append(r)
    return out


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
        self.latency = ceil_log2(lanes)
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
    """``p = e * v``: an unsigned weight times an int8 value, in a module of its own (so that
    hierarchical synthesis maps each multiplier separately), with ``latency = 1``: the product
    of the ``e``, ``v`` presented the cycle before. Its partial products are registered and
    ``p`` is their shifted sum (a wide weight's multipliers and the adder of their products do
    not share a cycle):

    * ``adders = False``: the weight cut into pieces that fit a DSP multiplier
      (:meth:`Multiplier.pieces <hadware.hw.arith.Multiplier.pieces>`), each piece times ``v``;
    * ``adders = True``: ``v`` cut into its low four bits (unsigned) and its high four
      (signed), each half's product the sum of ``e`` shifted by the half's set bits (the sign
      bit's term subtracted), a balanced tree of two adder levels: no multiplication for
      synthesis to map onto a DSP block.
    """

    latency = 1

    def __init__(self, e_width: int, adders: bool = False):
        self.e_width = e_width
        self.adders = adders
        super().__init__({
            "e": In(e_width),
            "v": In(signed(8)),
            "p": Out(signed(e_width + 9)),
        })

    @staticmethod
    def _shift_add(e: Value, half: Value) -> Value:
        """``e * half`` as a balanced sum of ``e`` shifted by each set bit of ``half`` (the
        top bit's term negative when ``half`` is signed)."""
        top = len(half) - 1
        return tree([Mux(half[i], (-(e << i) if half.shape().signed and i == top else e << i), 0)
                     for i in range(len(half))], operator.add)

    def elaborate(self, platform) -> Module:
        m = Module()
        total = 0
        if self.adders:
            # e * [0, 15] fits e_width + 4 bits, e * [-8, 7] a signed e_width + 4
            parts = [(self._shift_add(self.e, half), shift,
                      signed(self.e_width + 4) if half.shape().signed else self.e_width + 4)
                     for half, shift in Multiplier.pieces(self.v, 4)]
        else:
            parts = [(piece * self.v, shift, (piece * self.v).shape())
                     for piece, shift in Multiplier.pieces(self.e)]
        for i, (prod, shift, shape) in enumerate(parts):
            pp = Signal(shape, name=f"pp{i}", reset_less=True)
            m.d.sync += pp.eq(prod)
            total = total + (pp << shift)
        m.d.comb += self.p.eq(total)
        return m


class WeightLane(wiring.Component):
    """One lane of the weighting pass: its weight and its ``d_v`` weighted values.

    ``delta`` and ``mask`` are presented at cycle t; the lane's value row ``v`` is sampled at
    cycle ``t + L_exp``; the weight and the row are registered, then multiplied
    (:class:`WeightMul`, one cycle): ``e`` (0 where masked) and ``p[c] = e * v[c]`` are
    registers valid at ``t + L_exp + 3`` (``latency = L_exp + 3``; neither a memory read nor
    the exponential shares a cycle with a multiplier, nor a multiplier with an adder).
    """

    def __init__(self, cfg, exp_unit: wiring.Component):
        self.cfg = cfg
        self.exp_unit = exp_unit
        self.latency = exp_unit.latency + 2 + WeightMul.latency
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
        v = Signal(data.ArrayLayout(signed(8), cfg.d_v), reset_less=True)
        m.d.sync += [e.eq(exp.e), v.eq(self.v)]
        m.d.comb += self.e.eq(delay(m, e, 1 + WeightMul.latency, "e", data=True)[-1])
        for c in range(cfg.d_v):
            mul = WeightMul(cfg.exp_width, adders=cfg.weight_mul == "adders")
            m.submodules[f"wsum_mul{c}"] = mul
            p = Signal(signed(cfg.exp_width + 9), name=f"p{c}", reset_less=True)
            m.d.comb += [mul.e.eq(e), mul.v.eq(v[c]), self.p[c].eq(p)]
            m.d.sync += p.eq(mul.p)
        return m


class ColumnSum(wiring.Component):
    """Accumulates the sum of ``lanes`` terms per cycle, pipelined: a tree of two-input
    adders with a register after each level (``latency = ceil(log2(lanes))`` levels), then
    the accumulator: the terms presented with ``en`` in cycle ``t`` are in ``acc`` from cycle
    ``t + latency + 1``, ``acc <= (0 if first else acc) + sum(x)`` (exact; ``first`` and
    ``en`` travel with the terms).

    Members
    -------
    x : In(ArrayLayout(shape, lanes)); en : In(1); first : In(1); acc : Out(acc_shape)
    """

    def __init__(self, lanes: int, shape, acc_shape):
        self.lanes = lanes
        self.acc_shape = acc_shape
        self.latency = ceil_log2(lanes)
        super().__init__({
            "x": In(data.ArrayLayout(shape, lanes)),
            "en": In(1),
            "first": In(1),
            "acc": Out(acc_shape),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        level = [self.x[j] for j in range(self.lanes)]
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for i in range(0, len(level), 2):
                r = Signal(self.acc_shape, name=f"sum{depth}_{i // 2}", reset_less=True)
                m.d.sync += r.eq(level[i] + level[i + 1] if i + 1 < len(level) else level[i])
                nxt.append(r)
            level = nxt
        en = delay(m, self.en, self.latency, "sum_en")[-1]
        first = delay(m, self.first, self.latency, "sum_first", data=True)[-1]
        acc = Signal(self.acc_shape, reset_less=True)  # 'first' starts every sum afresh
        with m.If(en):
            m.d.sync += acc.eq(Mux(first, 0, acc) + level[0])
        m.d.comb += self.acc.eq(acc)
        return m


class SlotWeightedSum(wiring.Component):
    """The HAD weighting of selected slots with a given exponential unit (the top-k core).

    One query at a time: from its first slot until ``release`` (the caller has taken ``den``,
    ``num`` and the selections, at ``done`` or later) the unit takes no other query's slots;
    within a query it takes a slot every cycle. Slot 0's score is ``s_max``; each
    selected slot weighs ``e = E(s_max - s)`` from the exponential unit (``L_exp`` cycles), its
    value row is read so that it arrives with the weight, and ``den`` / ``num`` accumulate
    exactly (the difference is registered before the exponential; the weight and the value row
    are registered, then multiplied, and the products registered before they are added: ``done``
    is high for one cycle ``L_exp + 4`` cycles after the last slot; the selections are written
    one cycle after their slots). Only the first
    ``k`` slots of a query count as selected (the query's own top-k: the slots come sorted);
    the later ones weigh 0 and leave their ``sel`` bit clear.

    Members
    -------
    slot : In(stream.Signature({score, index, sel, last}))
    k : In(range(1, top_k + 1))
        Slots kept of the current query (held by the caller while its slots stream in).
    release : In(1)
        The sums and selections of the finished query are taken: the next query's slots may
        come (from the next cycle).
    v_addr : Out(index_width); v_data : In(8 * d_v)
    den : Out(den_width); num : Out(ArrayLayout(signed(num_width), d_v))
    index, score : Out(ArrayLayout(...)); sel : Out(top_k); done : Out(1)
    """

    def __init__(self, cfg, slot_layout, exp_unit: wiring.Component):
        self.cfg = cfg
        self.exp_unit = exp_unit
        super().__init__({
            "slot": In(stream.Signature(slot_layout)),
            "k": In(range(cfg.top_k + 1)),
            "release": In(1),
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
        first = Signal(init=1)  # the next slot is slot 0 of a query
        busy = Signal()  # a query has come in and is not released
        take = Signal()
        m.d.comb += [self.slot.ready.eq(~busy | ~first), take.eq(self.slot.valid & self.slot.ready)]
        with m.If(take & first):
            m.d.sync += busy.eq(1)
        with m.If(self.release):
            m.d.sync += busy.eq(0)
        pos = Signal(range(k + 1))  # its position in the query's slots
        sel = Signal()  # selected, and within the query's k
        smax = Signal(signed(sw))
        top = Signal(signed(sw))
        diff = Signal(signed(sw + 1))
        m.d.comb += [
            sel.eq(s.sel & (pos < self.k)),
            top.eq(Mux(first, s.score, smax)),
            diff.eq(top - s.score),
        ]
        # The difference and the mask are registered before the exponential (a subtraction
        # and a table read do not share a cycle): the weight comes L_exp + 1 cycles after its
        # slot, and the value read (one cycle) is addressed L_exp cycles after the slot.
        delta = Signal(len(exp.delta), reset_less=True)
        mask = Signal(reset_less=True)
        m.d.sync += [delta.eq(diff[:len(exp.delta)]),  # >= 0 for every selected slot
                     mask.eq(sel)]
        m.d.comb += [exp.delta.eq(delta), exp.mask.eq(mask)]
        m.d.comb += self.v_addr.eq(delay(m, s.index, lat, "v_addr")[-1])
        st_valid = delay(m, take, lat + 1, "st_valid")[-1]
        st_first = delay(m, first, lat + 1, "st_first")[-1]
        st_last = delay(m, s.last, lat + 1, "st_last")[-1]

        # Slot p is written into entry p one cycle after it is taken, from registers: each
        # entry's enable is a register of its own (the decode of the position, one cycle
        # early), so no logic sits between the slot handshake and some 600 enables.
        cap = Signal(k)
        cap_index = Signal.like(s.index, reset_less=True)
        cap_score = Signal.like(s.score, reset_less=True)
        cap_sel = Signal(reset_less=True)
        m.d.sync += [cap.eq(Cat(take & (pos == p) for p in range(k))),
                     cap_index.eq(s.index), cap_score.eq(s.score), cap_sel.eq(sel)]
        for p in range(k):
            with m.If(cap[p]):
                m.d.sync += [self.index[p].eq(cap_index), self.score[p].eq(cap_score),
                             self.sel[p].eq(cap_sel)]
        with m.If(take):
            m.d.sync += [first.eq(s.last), pos.eq(Mux(s.last, 0, pos + 1))]
            with m.If(first):
                m.d.sync += smax.eq(s.score)

        # The weight and the value row are registered, multiplied, and the products registered
        # before they are accumulated: the memory read, the multiplier and the accumulator
        # each have a cycle of their own.
        wait = 2 + WeightMul.latency
        acc_valid = delay(m, st_valid, wait, "acc_valid")[-1]
        acc_first = delay(m, st_first, wait, "acc_first", data=True)[-1]
        acc_last = delay(m, st_last, wait, "acc_last", data=True)[-1]
        e = Signal(cfg.exp_width, reset_less=True)
        v = Signal(8 * cfg.d_v, reset_less=True)
        m.d.sync += [e.eq(exp.e), v.eq(self.v_data)]
        e_late = delay(m, e, 1 + WeightMul.latency, "e", data=True)[-1]
        with m.If(acc_valid):
            m.d.sync += self.den.eq(Mux(acc_first, 0, self.den) + e_late)
        for c in range(cfg.d_v):
            mul = WeightMul(cfg.exp_width, adders=cfg.weight_mul == "adders")
            m.submodules[f"wsum_mul{c}"] = mul
            p = Signal(signed(cfg.exp_width + 9), name=f"p{c}", reset_less=True)
            m.d.comb += [mul.e.eq(e), mul.v.eq(v[8 * c: 8 * c + 8])]
            m.d.sync += p.eq(mul.p)
            with m.If(acc_valid):
                m.d.sync += self.num[c].eq(Mux(acc_first, 0, self.num[c]) + p)
        m.d.sync += self.done.eq(acc_valid & acc_last)
        return m
