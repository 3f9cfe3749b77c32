"""Counting top-k sparsifier for binarized scores: a drop-in for :class:`~hadware.hw.topk.TopK`.

Function
--------
Exactly :class:`~hadware.hw.topk.TopK`'s: the same ``i_stream`` / ``o_stream`` layouts
(:meth:`TopK.layouts`), candidate ``j`` of beat ``b`` has index ``b*lanes + j``, the beat with
``last`` ends the query, and ``top_k`` output beats follow, best first (score descending, ties
to the lower index), ``sel = 0`` on the slots beyond the number of valid candidates, ``last``
on the final one. The scores must be binarized, ``s = 2*popcount - d``: the ``d + 1`` values
``-d, -d + 2, ..., d`` (:mod:`hadware.spec.counting_topk`). A score outside that set is an
input error: the unit maps it to the value ``clamp(floor((s + d) / 2), 0, d)`` and keeps to
the stream rules, but its output is then unspecified.

Method (a counting sort; no comparison of candidates against each other)
-------------------------------------------------------------------------
Let ``v = (s + d) / 2`` in ``[0, d]`` be a candidate's value. Sorted by (value descending,
index ascending), a candidate's position is ``above(v) + ties``: the number of valid candidates
with a higher value, plus those with the same value and a lower index. The keepers are exactly
the candidates whose position is below ``top_k``, and the position is their output slot, so
the output comes out sorted without a sorter. (The threshold ``T`` of the method is the value
with ``above(T) < top_k <= above(T) + count(T)``; its first ``top_k - above(T)`` ties are the
ones whose position is below ``top_k``. Neither is formed explicitly.)

* **Pass 1**, one input beat per cycle: the beat's values and mask are written into the score
  buffer (row ``b``), each lane's score decoded as a thermometer into a register (bit ``u`` set
  for ``v > u``, compared on the score itself: ``s >= 2 u + 2 - d``; all clear for a masked
  lane, so that no valid bit gates the counters' inputs); the next cycle, counter ``c[u]`` of
  every value ``u`` adds the number of the row's lanes with bit ``u`` set. After the last beat
  ``c[u] = above(u)``: the prefix of the histogram from the top, built while the scores stream
  in, so the threshold scan takes **zero cycles**.
* **Pass 2**, one buffered row per cycle (a synchronous read, transparent so that row 0 is
  read in the cycle of the last beat; the read register; the row register, with each lane's
  value decoded as a one-hot beside it; the lookup stage; the slot stage): lane ``j`` takes
  ``pos_j = c[v_j] + r_j``, ``r_j`` the number of earlier valid lanes of the row with the
  same value, and keeps its candidate if ``pos_j < top_k``; every counter ``c[u]`` adds the
  number of the row's valid lanes with ``v = u`` (so it moves past the ties already placed).
  The lookups ``c[v_j]`` are registered (the lookup stage), then, decoded from the positions,
  each lane's hit of each slot (the slot stage); a kept candidate is then written into slot
  ``pos_j`` (up to ``lanes`` writes per cycle, to distinct slots). The last row clears the
  counters for the next query.
* **Output**: the slots shift out one per cycle under ``o_stream.ready`` (slot 0 is the
  payload), as in :class:`TopK`; shifting empties them for the next query.

A position of ``top_k`` or more is dropped whatever its exact value, so a counter need only
be exact below ``top_k``: each cycle it adds its hits to ``min(count, top_k)`` (the clamp on the
register, in parallel with the hits' count, not after the sum), and holds at most
``top_k + lanes``. Each recurrence is one counter of ``ceil(log2(top_k + lanes + 1))`` bits
plus a ``lanes``-input count (a balanced tree) and one adder. No path grows with
``top_k * lanes``: each cycle's logic is one of a lane's value decoder (before the row
register), a lane's ``(d + 1)``-way one-hot lookup, a
counter's ``lanes``-input count, or a slot's ``lanes``-way write multiplexer, each between
registers (constant comparisons are written as logic, not as carry chains). Repeated structures
are submodules (``lane0..``: :class:`CountingTopKLane`; ``count0..``:
:class:`CountingTopKCounter`; ``slot0..``: :class:`CountingTopKSlot`), identical within each
kind, so hierarchical synthesis maps each kind once.

Overlapped passes (``overlap = True``)
--------------------------------------
The two passes run at once for successive queries, each on its own row register, lanes
(:class:`CountingTopKLane` in mode ``"above"``: ``p1_lane0..``; ``"equal"``: ``p2_lane0..``)
and counters (``p1_count0..``; ``p2_count0..``, presettable): the collector counts a query's
values above into its counters while writing its rows into one bank of a score buffer of
two; two cycles after its last beat the counts are complete, and as soon as pass 2 and the
slots are free they are **handed over** (pass 2's counters, which copy the collector's
every cycle while pass 2 is idle, keep the copy of that cycle; the collector's are cleared the
cycle after; the banks swap) and the collector takes the next query. Pass 2 reads the bank back
as above; when it has placed its last row, the slots are **published** into an output bank
(``top_k`` registers that shift out under ``o_stream.ready``) once the previous selections
have left it (the cycle after the last of them leaves, at the earliest), and emptied for the
next pass 2.

Timing
------
With ``B = ceil(n / lanes)`` the beats of a query (at least 1; the testbench sends
``max(1, ceil(n_valid / lanes))``), ``rows = ceil(n_max / lanes)`` and ``B' = min(B, rows)``
(the buffer keeps ``rows`` rows; a longer query is an input error):

* Input: one beat per cycle while collecting: ``i_stream.ready`` is high from the cycle after
  the previous query's pass 2 until the ``last`` beat's transfer (idle cycles of the producer
  are allowed), so a query is collected while the previous one's selections shift out.
* Latency: with the ``last`` beat transferred in cycle ``t`` and the slots empty by then (else
  ``t`` is the first cycle after the last beat in which they are), buffered row ``i`` is in the
  read register in cycle ``t + 2 + i``, in the row register in ``t + 3 + i``, in the lookup
  stage in ``t + 4 + i`` and in the slot stage in ``t + 5 + i``; the first output beat is
  valid in cycle ``t + B' + 5``: **latency = B' + 5**. ``top_k`` output beats follow,
  one per cycle when ``o_stream.ready`` is high; the input is ready again from that first
  output cycle.
* **Cycles per query** without stalls (queries back to back, consumer always ready):
  ``B' + 4 + max(B, top_k + 1)``: the next query's ``B`` beats are collected while the ``top_k``
  selections leave; its pass 2 starts at its last beat or, when that comes sooner, the cycle
  after the final output transfer. (:class:`TopK`: ``B + top_k``.)
* With ``overlap``: the first output beat of a query that finds pass 2 and the output bank
  free is valid ``B' + 8`` cycles after its last beat (counts complete at ``t + 2``, the
  hand-over then, the read and its register, the row, lookup and slot stages, the
  publication); back to back, a query every ``max(B + 2, B' + 5, top_k + 1)`` cycles (the
  collector, pass 2, the output bank and its publication).
* Worst case, consumer always ready, any input: the final output beat of a query comes at most
  ``rows + top_k + 5`` cycles after its ``last`` input beat or, when the slots still held the
  previous query then, after that query's final output beat (:meth:`worst_case_cycles`); two
  queries are in flight at most (one leaving the slots, one collected behind it).

Area (as formulas; ``V = d + 1`` values, ``L = lanes``, ``k = top_k``, ``w = score_width``,
``iw = index_width``, ``vw = ceil(log2(d + 1))`` value bits, ``cw = ceil(log2(k + L + 1))``
counter bits, ``pw = ceil(log2(k + 2 L))`` position bits, ``rw = ceil(log2(rows + 1))``)
----------------------------------------------------------------------------------------
* Counters: ``V`` clamped counters of ``cw`` bits, each with an ``L``-input population count.
* Comparators: ``2 * V * L`` constant comparisons of ``vw`` bits (each lane's thermometer and
  one-hot value decoders), ``L * (L - 1) / 2`` equality comparators of ``vw`` bits (tie
  ranks), ``L`` position adders (``cw`` + ``ceil(log2(L))`` bits) with a constant comparison
  ``< k``, ``k * L`` constant comparisons of ``pw`` bits (slot decoders), ``L`` input adders
  and clamps (``w + 1`` bits).
* Multiplexers: ``L`` one-hot ``V``-way lookups of ``cw`` bits; ``k`` one-hot ``(L + 1)``-way
  slot multiplexers of ``1 + w + iw`` bits (``L`` writes and the output shift); the row
  register's 2-way input (beat or buffered row).
* Flip-flops (register bits of the RTL, :meth:`CountingTopK.flip_flops`; synthesis removes
  the few that stay constant and adds the read port's transparency register):
  ``V * cw`` (counters) + ``k * (1 + w + iw)`` (slots) + ``L * (vw + 1 + V) + 3`` (row
  register and the lanes' decodes)
  + ``L * (vw + 1) + 2`` (the read register: a buffered row, its valid and last bits)
  + ``L * (vw + 1) + 1`` (the last beat held for a one-row query, the bypass bit)
  + ``L * (cw + lw + 1 + vw) + 2`` (lookup stage: each lane's lookup, rank and valid bit,
  ``lw = ceil(log2(L))`` rank bits (at least 1), its value, the pass and last bits)
  + ``L * (w + iw + k) + 1`` (slot stage register: each lane's entry and its hit of every
  slot) + ``2 + 3 + 1 + 3 * rw + (iw + 1)
  + ceil(log2(k))`` (read valid and last, phase and its collecting bit, slots full, beat and
  read-row counters, the read row plus one, row index, output position; ``ceil(log2(k))`` is
  at least 1).
* Memory: ``rows * L * (vw + 1)`` bits (``rows`` words of ``L`` values and the mask), one
  write port and one synchronous read port.
* With ``overlap``: the counters, the lanes' decodes and the slots twice (the output bank is
  the second set of slots; pass 1 needs no row register: its decodes take the beat's mask),
  the buffer twice as deep; flip-flops
  ``2 V cw + 2 k (1 + w + iw) + L (vw + 1 + 2 V) + 2 + L (vw + 1) + 2
  + L (cw + lw + 1 + vw) + 2 + L (w + iw + k) + 1 + 13 + 4 rw + (iw + 1)
  + ceil(log2(k))`` (the control: collector and pass-2 states, the collecting bit, banks,
  read valid and last, full, emitting, the last output position's bit, the hand-over
  delayed a cycle; beat, row and
  read-row counters, the read row plus one; no held beat: a row is never read as it is
  written).

Against :class:`TopK` (``k * L + L * (L - 1) / 2`` comparators of ``w + 1`` bits, rank adders
of up to ``k + L - 1`` inputs and a ``(2L + 1)``-way multiplexer per slot, all on one cycle's
path): the ``k * L`` compare array becomes ``V`` counters and constant decoders, at the price
of the score buffer and a second pass (``B' + 4`` more cycles of latency; back to back, the
second pass of a query overlaps the output of the one before).
"""

from __future__ import annotations

import operator

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hadware.config.counting_topk import CountingTopKConfig
from hadware.hw.arith import tree
from hadware.hw.topk import TopK

__all__ = ["CountingTopK", "CountingTopKCounter", "CountingTopKLane", "CountingTopKSlot"]


def _bits_for(n: int) -> int:
    return max(1, n.bit_length())


def _one_hot_or(terms) -> Value:
    """The OR of ``value`` over the ``(sel, value)`` terms whose ``sel`` is set (the selected
    value when at most one is), as a balanced tree: ``ceil(log2(terms))`` OR levels rather
    than a chain that synthesis would have to rebalance."""
    return tree([Mux(sel, value, 0) for sel, value in terms], operator.or_)


def _gt_const(x: Value, c: int) -> Value:
    """``x > c`` for an unsigned ``x`` and a constant ``c``, as AND/OR logic: synthesis maps it
    to lookup tables (a ``>`` operator becomes a carry chain on FPGAs, slow to route)."""
    if c < 0:
        return Const(1)
    if c >= 2 ** len(x) - 1:
        return Const(0)
    acc = Const(0)  # x[:i] > c[:i], from the least significant bit up
    for i in range(len(x)):
        acc = (x[i] & acc) if c >> i & 1 else (x[i] | acc)
    return acc


def _lt_const(x: Value, c: int) -> Value:
    """``x < c`` for an unsigned ``x`` and a constant ``c``, as AND/OR logic."""
    return ~_gt_const(x, c - 1)


class CountingTopKLane(wiring.Component):
    """One lane of a row against the value counters: the value decoder (registered with the
    row) and the count lookup.

    ``mode``: ``"both"`` (the decode chosen by ``next_above``, the lookup), ``"above"`` (pass
    1 only: the thermometer, no lookup; ``pos`` and ``keep`` are 0) or ``"equal"`` (pass 2
    only: the one-hot and the lookup), the last two for a unit whose passes run at once.

    Members
    -------
    next_value : In(vw)
        The value ``v = (s + d) / 2`` of the lane in the buffered row entering the row
        register (pass 2).
    next_score : In(signed(w))
        The lane's score ``s`` in the input beat (pass 1).
    next_above : In(1)
        1 (pass 1): decode ``next_score`` as a thermometer (bit ``u`` set for
        ``clamp(floor((s + d) / 2), 0, d) > u``, that is ``s >= 2 u + 2 - d`` for ``u < d``:
        constant comparisons of the score, with no adder before them); 0 (pass 2): decode
        ``next_value`` as a one-hot (``v`` itself).
    load : In(1)
        The row register takes a row this cycle: register the decode.
    next_mask : In(1)
        The lane's mask bit in that row: a masked lane's decode is registered as 0.
    valid : In(1)
        The lane of the row register's row takes part this cycle (the row is present and its
        mask bit is set).
    counts : In(n_values * cw)
        Every value's counter, value 0 in the low bits.
    rank : In(bits of lanes - 1)
        Earlier valid lanes of this row with the same value.
    hits : Out(n_values)
        The registered decode of the row register's lane, 0 when the lane is masked or no row
        was loaded: bit ``u`` increments counter ``u`` (the counters add the hits as they
        are, with no gate on a valid bit).
    pos : Out(pw)
        ``counts[v] + rank`` of the row the row register held the cycle before (pass 2:
        ``hits`` is the one-hot of ``v``; the lookup and ``rank`` are registered), the lane's
        slot when it is below ``top_k``; meaningless in pass 1.
    keep : Out(1)
        ``valid`` (of that cycle) and ``pos < top_k`` (used in pass 2 only).
    """

    def __init__(self, n_values: int, lanes: int, top_k: int, count_width: int, pos_width: int,
                 score_width: int, mode: str = "both"):
        self._nv, self._k, self._cw, self._mode = n_values, top_k, count_width, mode
        super().__init__({
            "next_value": In(_bits_for(n_values - 1)),
            "next_score": In(signed(score_width)),
            "next_above": In(1),
            "load": In(1),
            "next_mask": In(1),
            "valid": In(1),
            "counts": In(n_values * count_width),
            "rank": In(_bits_for(lanes - 1)),
            "hits": Out(n_values),
            "pos": Out(pos_width),
            "keep": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        nv, cw = self._nv, self._cw
        decode = Signal(nv)
        d, s = nv - 1, self.next_score
        offset = Cat(s[:-1], ~s[-1])  # s + 2**(w-1): the signed order as an unsigned one
        for u in range(nv):
            # s >= 2u + 2 - d, i.e. offset > 2u + 1 - d + 2**(w-1) (never for u = d)
            above = _gt_const(offset, 2 * u + 1 - d + 2 ** (len(s) - 1)) if u < d else Const(0)
            equal = self.next_value == u
            m.d.comb += decode[u].eq({"above": above, "equal": equal}.get(
                self._mode, Mux(self.next_above, above, equal)))
        m.d.sync += self.hits.eq(Mux(self.load & self.next_mask, decode, 0))
        if self._mode == "above":
            return m
        # The lookup is registered with the rank and valid bit (the lookup stage), then added
        # and compared: two short paths instead of one long one.
        mine = Signal(cw)
        rank = Signal.like(self.rank)
        valid = Signal()
        m.d.sync += [
            mine.eq(_one_hot_or((self.hits[u], self.counts[u * cw:(u + 1) * cw])
                                for u in range(nv))),
            rank.eq(self.rank), valid.eq(self.valid),
        ]
        m.d.comb += [
            self.pos.eq(mine + rank),
            self.keep.eq(valid & _lt_const(self.pos, self._k)),
        ]
        return m


class CountingTopKCounter(wiring.Component):
    """One value's counter: adds the lanes that hit it, clamped at ``top_k`` before adding.

    Members
    -------
    hits : In(lanes)
        Lanes that increment the counter this cycle.
    clear : In(1)
        Set the counter to 0 instead (takes precedence).
    preset, preset_value : In(1), In(cw)
        With ``presettable``: set the counter to ``preset_value`` instead (after ``clear``).
    count : Out(cw)
        The registered count, ``min(count, top_k) + popcount(hits)`` after each cycle: the
        number of hits so far while it is below ``top_k``, at least ``top_k`` from then on (at
        most ``top_k + lanes``, ``cw = ceil(log2(top_k + lanes + 1))``), which is all a
        position test ``< top_k`` needs.
    """

    def __init__(self, lanes: int, top_k: int, count_width: int, presettable: bool = False):
        self._lanes, self._k, self._preset = lanes, top_k, presettable
        members = {"hits": In(lanes), "clear": In(1), "count": Out(count_width)}
        if presettable:
            members.update(preset=In(1), preset_value=In(count_width))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        # The clamp acts on the register (beside the hits' count, not after the addition), so
        # the recurrence is one count tree and one adder.
        held = Mux(_lt_const(self.count, self._k), self.count, self._k)
        with m.If(self.clear):
            m.d.sync += self.count.eq(0)
        if self._preset:
            with m.Elif(self.preset):
                m.d.sync += self.count.eq(self.preset_value)
        with m.Else():
            m.d.sync += self.count.eq(held + tree([self.hits[j] for j in range(self._lanes)],
                                                  operator.add))
        return m


class CountingTopKSlot(wiring.Component):
    """One output slot: written by at most one lane per cycle, or shifted toward slot 0.

    Members
    -------
    hit : In(lanes)
        Bit ``j``: lane ``j`` writes this slot (at most one bit set).
    lane : In(lanes * ew)
        Each lane's entry ``{sel, score, index}`` (lane 0 in the low bits).
    shift : In(1)
        Take ``shift_in`` (the next slot's entry) instead (takes precedence).
    shift_in : In(ew)
    value : Out(ew)
        The registered entry; ``sel`` (bit 0) is 0 for an empty slot.
    """

    def __init__(self, lanes: int, entry_width: int):
        self._lanes, self._ew = lanes, entry_width
        super().__init__({"hit": In(lanes), "lane": In(lanes * entry_width), "shift": In(1),
                          "shift_in": In(entry_width), "value": Out(entry_width)})

    def elaborate(self, platform) -> Module:
        m = Module()
        ew = self._ew
        with m.If(self.shift):
            m.d.sync += self.value.eq(self.shift_in)
        with m.Elif(self.hit.any()):
            m.d.sync += self.value.eq(_one_hot_or(
                (self.hit[j], self.lane[j * ew:(j + 1) * ew]) for j in range(self._lanes)))
        return m


class CountingTopK(wiring.Component):
    """The counting top-k sparsifier (see the module docstring).

    Parameters
    ----------
    config : CountingTopKConfig

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"score": ArrayLayout(signed(w), lanes),
                                                 "mask": lanes, "last": 1})))
    o_stream : Out(stream.Signature(StructLayout({"score": signed(w), "index": index_width,
                                                  "sel": 1, "last": 1})))
        Both exactly :meth:`TopK.layouts`.

    Attributes
    ----------
    latency : int
        Cycles from the ``last`` input beat to the first output beat at ``n = n_max``
        (:meth:`first_output_latency`).
    latency_formula : str

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`CountingTopKConfig`.
    """

    def __init__(self, config: CountingTopKConfig):
        if not isinstance(config, CountingTopKConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a CountingTopKConfig, not {config!r}")
        self.config = config
        self.latency = self.first_output_latency(config, config.n_max)
        self.latency_formula = (
            "B = max(1, ceil(n / lanes)) input beats, B' = min(B, rows); first output B' + 5 "
            "cycles after the last input beat; cycles per query back to back = "
            "B' + 4 + max(B, top_k + 1)")
        self.in_layout, self.out_layout = self.layouts(config)
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    layouts = staticmethod(TopK.layouts)

    # -- formulas (module docstring) ----------------------------------------------------------

    @staticmethod
    def beats(cfg: CountingTopKConfig, n: int) -> int:
        """Input beats of a query over ``n`` candidates: ``max(1, ceil(n / lanes))``."""
        return max(1, -(-n // cfg.lanes))

    @classmethod
    def first_output_latency(cls, cfg: CountingTopKConfig, n: int) -> int:
        """Cycles from the ``last`` input beat's transfer to the first output beat's valid
        (the stages after the collector free): ``B' + 5``, or ``B' + 8`` with ``overlap``."""
        return min(cls.beats(cfg, n), cfg.rows) + (8 if cfg.overlap else 5)

    @classmethod
    def query_cycles(cls, cfg: CountingTopKConfig, n: int) -> int:
        """Cycles per query without stalls, queries back to back (the next query collected
        while the selections leave)."""
        b = cls.beats(cfg, n)
        if cfg.overlap:
            return max(b + 2, min(b, cfg.rows) + 5, cfg.top_k + 1)
        return min(b, cfg.rows) + 4 + max(b, cfg.top_k + 1)

    @staticmethod
    def worst_case_cycles(cfg: CountingTopKConfig) -> int:
        """Most cycles from the later of a query's ``last`` input beat and the previous
        query's final output beat to the query's final output beat, consumer always ready,
        whatever the input (longer queries than ``n_max`` included): ``rows + top_k + 4``
        from the last beat when the slots are empty, one more from the previous output (pass 2
        starts the cycle after it); with ``overlap``, ``rows + top_k + 7`` from the last beat."""
        return cfg.rows + cfg.top_k + (7 if cfg.overlap else 5)

    @staticmethod
    def flip_flops(cfg: CountingTopKConfig) -> int:
        """Register bits of the RTL (module docstring, Area)."""
        lanes, k, w, iw = cfg.lanes, cfg.top_k, cfg.score_width, cfg.index_width
        vw, cw, rw = cfg.value_width, cfg.count_width, cfg.row_width
        lookup = lanes * (vw + 1) + 2 + lanes * (cw + _bits_for(lanes - 1) + 1 + vw) + 2
        if cfg.overlap:
            return (2 * cfg.n_values * cw + 2 * k * (1 + w + iw) + lookup
                    + lanes * (vw + 1 + 2 * cfg.n_values) + 2 + lanes * (w + iw + k) + 1
                    + 13 + 4 * rw + (iw + 1) + _bits_for(k - 1))
        return (cfg.n_values * cw + k * (1 + w + iw) + lanes * (vw + 1 + cfg.n_values) + 3
                + lookup + lanes * (vw + 1) + 1 + lanes * (w + iw + k) + 1 + 2 + 3 + 1
                + 3 * rw + (iw + 1) + _bits_for(k - 1))

    # -- elaboration --------------------------------------------------------------------------

    def _row_layout(self):
        cfg = self.config
        return data.StructLayout({"value": data.ArrayLayout(cfg.value_width, cfg.lanes),
                                  "mask": cfg.lanes})

    def elaborate(self, platform) -> Module:
        if self.config.overlap:
            return self._elaborate_overlapped()
        m = Module()
        cfg = self.config
        row_layout = self._row_layout()
        m.submodules.buf = buf = Memory(shape=row_layout, depth=cfg.rows, init=[])
        wr = buf.write_port()
        # (Row 0 is read as the last beat arrives: when that beat is row 0 itself, the read
        # register takes the beat instead of the read data. A transparent port would do the
        # same, but synthesis folds the read register into such a port's memory block.)
        rd = buf.read_port()

        take = Signal()  # an input beat transfers
        rd_valid, rd_last = Signal(), Signal()  # rd.data holds a buffered row (pass 2)
        row = Signal(row_layout)  # the row the lanes count: an input beat or a buffered row
        r_valid, r_pass2, r_last = Signal(), Signal(), Signal()
        c_last = Signal()  # the slot stage writes the query's last row
        nrows = Signal(cfg.row_width)  # beats of the query so far, saturating at rows
        rd_row = Signal(cfg.row_width)
        rd_next = Signal(cfg.row_width)  # rd_row + 1 in the read phase, a register of its own
        out_pos = Signal(_bits_for(cfg.top_k - 1))
        m.d.comb += take.eq(self.i_stream.valid & self.i_stream.ready)

        # Phases: collect (pass 1), wait (the last beat is in but the slots still hold the
        # previous query's selections), read (pass 2 reads the buffered rows; row 0 is read in
        # the cycle pass 2 starts), finish (the last rows go through the stages). The slots
        # empty themselves ('full', under o_stream.ready) while the next query is collected.
        collect, wait, read, finish = range(4)
        phase = Signal(2)
        # phase == collect as a register of its own: the input handshake, and with it each
        # lane's choice of decode and the hits' load, start at a flip-flop, not a comparison.
        collecting = Signal(init=1)
        full = Signal()  # the slots hold a query's selections, not all shifted out

        def start_pass2(rows):
            # (rd.addr is 0 outside the read phase: row 0 arrives the next cycle; in the cycle
            # of the last beat the read is transparent to that beat's write)
            m.d.sync += [rd_valid.eq(1), rd_last.eq(rows == 1), rd_row.eq(1), rd_next.eq(2),
                         phase.eq(Mux(rows == 1, finish, read))]

        m.d.sync += rd_valid.eq(0)
        with m.If(collecting):
            beats = Mux(nrows == cfg.rows, nrows, nrows + 1)
            m.d.comb += self.i_stream.ready.eq(1)
            with m.If(take):
                m.d.sync += nrows.eq(beats)
                with m.If(self.i_stream.payload.last):
                    m.d.sync += collecting.eq(0)
                    with m.If(full):
                        m.d.sync += phase.eq(wait)
                    with m.Else():
                        start_pass2(beats)
        with m.Elif(phase == wait), m.If(~full):
            start_pass2(nrows)
        with m.Elif(phase == read):
            # (rows >= 2 here, and rd_row counts up from 1: rd_row + 1 meets nrows exactly, so an
            # equality of two registers finds the last row, with no adder before it)
            last_row = rd_next == nrows
            m.d.comb += rd.addr.eq(rd_row)
            m.d.sync += [rd_valid.eq(1), rd_last.eq(last_row), rd_row.eq(rd_next),
                         rd_next.eq(rd_next + 1)]
            with m.If(last_row):
                m.d.sync += phase.eq(finish)
        with m.Else(), m.If(c_last):
            # (the beat counter is cleared here, on the way back to collecting, and nowhere
            # else: its enable is the input handshake or this one condition)
            m.d.sync += [phase.eq(collect), collecting.eq(1), full.eq(1), nrows.eq(0)]
        m.d.comb += self.o_stream.valid.eq(full)
        with m.If(full & self.o_stream.ready):
            m.d.sync += out_pos.eq(out_pos + 1)
            with m.If(out_pos == cfg.top_k - 1):
                m.d.sync += [out_pos.eq(0), full.eq(0)]

        # The lanes register their decodes of the input beat (pass 1) or of the buffered row read
        # (pass 2, through the read register); the row register keeps the pass-2 row beside
        # them.
        beat = self._input_values(m, wr, nrows, take)
        bypass, beat_held = Signal(), Signal(row_layout)
        m.d.sync += bypass.eq(take & self.i_stream.payload.last & (nrows == 0))
        with m.If(take):
            m.d.sync += beat_held.eq(beat)
        q_valid, q_last, q_data = self._read_register(m, rd, rd_valid, rd_last,
                                                      bypass=(bypass, beat_held))
        # (pass 1 decodes the beat's scores, pass 2 the buffered values: only pass 2 needs the
        # row itself, and the mask is the beat's or the row's)
        nxt = Signal(row_layout)
        m.d.comb += [nxt.value.eq(q_data.value),
                     nxt.mask.eq(Mux(take, self.i_stream.payload.mask, q_data.mask))]
        m.d.sync += [r_valid.eq(take | q_valid), r_pass2.eq(~take), r_last.eq(q_last)]
        with m.If(q_valid):
            m.d.sync += row.eq(q_data)

        lanes, _ = self._lanes(m, row, nxt, take, take | q_valid, r_valid,
                               r_valid & r_pass2 & r_last)
        shift = Signal()
        m.d.comb += shift.eq(self.o_stream.valid & self.o_stream.ready)
        slots = self._slots(m, shift)
        self._slot_stage(m, row, lanes, slots, r_valid & r_pass2, r_last, c_last, full)
        head = slots[0].value
        m.d.comb += [
            self.o_stream.payload.sel.eq(head[0]),
            self.o_stream.payload.score.eq(head[1:1 + cfg.score_width]),
            self.o_stream.payload.index.eq(head[1 + cfg.score_width:]),
            self.o_stream.payload.last.eq(out_pos == cfg.top_k - 1),
        ]
        return m

    def _elaborate_overlapped(self) -> Module:
        """Both passes at once, for successive queries (module docstring, Overlapped passes)."""
        m = Module()
        cfg = self.config
        k, rows = cfg.top_k, cfg.rows
        row_layout = self._row_layout()
        m.submodules.buf = buf = Memory(shape=row_layout, depth=2 * rows, init=[])
        wr = buf.write_port()
        rd = buf.read_port()  # (a row is read two cycles after its write at the earliest)

        # Pass 1: the collector writes its query's rows into bank 'wbank' and counts them.
        take = Signal()
        m.d.comb += take.eq(self.i_stream.valid & self.i_stream.ready)
        collect, drain, counted = range(3)  # counted: the counts are complete
        c_state = Signal(2)
        nrows = Signal(cfg.row_width)
        wbank = Signal()
        handoff = Signal()  # the counted query goes to pass 2; the collector is free again
        collecting = Signal(init=1)  # c_state == collect, a register (see the single unit)
        with m.If(collecting):
            m.d.comb += self.i_stream.ready.eq(1)
            with m.If(take):
                m.d.sync += nrows.eq(Mux(nrows == rows, nrows, nrows + 1))
                with m.If(self.i_stream.payload.last):
                    m.d.sync += [c_state.eq(drain), collecting.eq(0)]
        with m.Elif(c_state == drain):  # (the last row's counts are added this cycle)
            m.d.sync += c_state.eq(counted)
        with m.Elif(handoff):
            m.d.sync += [c_state.eq(collect), collecting.eq(1), nrows.eq(0), wbank.eq(~wbank)]
        beat = self._input_values(m, wr, nrows, take, base=Mux(wbank, rows, 0))
        # (no row register: the lanes register their thermometers of the beat, its mask folded
        # in, and the counters add them the next cycle.) The collector's counters are cleared
        # the cycle after the hand-over, from a register: the next query's first hits reach
        # them a cycle later still.
        handoff_q = Signal()
        m.d.sync += handoff_q.eq(handoff)
        _, above = self._lanes(m, beat, beat, 1, take, 0, handoff_q, mode="above",
                               prefix="p1_")

        # Pass 2: reads the counted query's bank, its counters preset to the counts above.
        idle, read, finish = range(3)
        p2_state = Signal(2)
        rbank, rd_valid, rd_last = Signal(), Signal(), Signal()
        rows2 = Signal(cfg.row_width)
        rd_row = Signal(cfg.row_width)
        rd_next = Signal(cfg.row_width)  # rd_row + 1 in the read state (see the single unit)
        c_last = Signal()  # the slot stage writes the query's last row
        full = Signal()  # the slots hold a query's selections, not yet published
        emitting = Signal()  # the output bank holds selections that have not all left
        out_pos = Signal(_bits_for(k - 1))
        # out_pos == k - 1 as a register of its own: 'final' starts at a flip-flop
        at_last = Signal(init=int(k == 1))
        o_take, final, publish = Signal(), Signal(), Signal()
        # Publication waits for an empty output bank, the cycle after its final transfer at the
        # earliest: 'publish', which empties every slot, and the hand-over depend on registers
        # only, not on the consumer's ready.
        m.d.comb += [
            o_take.eq(self.o_stream.valid & self.o_stream.ready),
            final.eq(o_take & at_last),
            publish.eq(full & ~emitting),
            handoff.eq((c_state == counted) & (p2_state == idle) & (~full | publish)),
        ]
        m.d.sync += rd_valid.eq(0)
        with m.If(handoff):  # row 0 of the bank just written is read now
            m.d.comb += rd.addr.eq(Mux(wbank, rows, 0))
            m.d.sync += [rbank.eq(wbank), rows2.eq(nrows), rd_row.eq(1), rd_next.eq(2),
                         rd_valid.eq(1), rd_last.eq(nrows == 1),
                         p2_state.eq(Mux(nrows == 1, finish, read))]
        with m.Elif(p2_state == read):
            last_row = rd_next == rows2
            m.d.comb += rd.addr.eq(Mux(rbank, rows, 0) + rd_row)
            m.d.sync += [rd_valid.eq(1), rd_last.eq(last_row), rd_row.eq(rd_next),
                         rd_next.eq(rd_next + 1)]
            with m.If(last_row):
                m.d.sync += p2_state.eq(finish)
        with m.Elif((p2_state == finish) & c_last):
            m.d.sync += [p2_state.eq(idle), full.eq(1)]
        q_valid, q_last, q_data = self._read_register(m, rd, rd_valid, rd_last)
        row2 = Signal(row_layout)
        r2_valid, r2_last = Signal(), Signal()
        m.d.sync += [r2_valid.eq(q_valid), r2_last.eq(q_last)]
        with m.If(q_valid):
            m.d.sync += row2.eq(q_data)
        # Pass 2's counters copy the collector's while pass 2 is idle, so the copy that counts,
        # the one at the hand-over (the counts complete), needs no path from the hand-over's
        # conditions (the output handshake among them) to the counters.
        lanes, _ = self._lanes(m, row2, q_data, 0, q_valid, r2_valid, 0, mode="equal",
                               prefix="p2_", preset=(p2_state == idle, above))
        slots = self._slots(m, publish, chain=False)  # (published: emptied for the next)
        self._slot_stage(m, row2, lanes, slots, r2_valid, r2_last, c_last, full)

        # The output bank: the slots' selections, published once the previous ones have left.
        ew = 1 + cfg.score_width + cfg.index_width
        out = [Signal(ew, name=f"out{p}") for p in range(k)]
        with m.If(publish):
            m.d.sync += [full.eq(0), emitting.eq(1)]
            m.d.sync += [o.eq(slot.value) for o, slot in zip(out, slots, strict=True)]
        with m.Elif(o_take):
            m.d.sync += [out[p].eq(out[p + 1] if p + 1 < k else 0) for p in range(k)]
            with m.If(final):
                m.d.sync += emitting.eq(0)
        with m.If(o_take):
            m.d.sync += [out_pos.eq(Mux(at_last, 0, out_pos + 1)),
                         at_last.eq(Mux(at_last, int(k == 1), out_pos == k - 2))]
        head = out[0]
        m.d.comb += [
            self.o_stream.valid.eq(emitting),
            self.o_stream.payload.sel.eq(head[0]),
            self.o_stream.payload.score.eq(head[1:1 + cfg.score_width]),
            self.o_stream.payload.index.eq(head[1 + cfg.score_width:]),
            self.o_stream.payload.last.eq(at_last),
        ]
        return m

    def _read_register(self, m, rd, rd_valid, rd_last, bypass=None):
        """The buffer's read data registered (a memory read and a value decode do not share a
        cycle); ``bypass = (en, row)``: take ``row`` instead when ``en``. Returns the
        registered (valid, last, row)."""
        q_valid, q_last = Signal(name="q_valid"), Signal(name="q_last")
        q_data = Signal(self._row_layout(), name="q_data", reset_less=True)
        m.d.sync += [q_valid.eq(rd_valid), q_last.eq(rd_last)]
        with m.If(rd_valid):
            m.d.sync += q_data.eq(rd.data if bypass is None else Mux(bypass[0], bypass[1],
                                                                     rd.data))
        return q_valid, q_last, q_data

    def _input_values(self, m, wr, nrows, take, base=0) -> Value:
        """The input beat's values ``clamp(floor((s + d) / 2), 0, d)`` and mask, written into
        row ``nrows`` of the buffer (the last row again once it is full), from row ``base``."""
        cfg = self.config
        p = self.i_stream.payload
        beat = Signal(wr.data.shape())
        for j in range(cfg.lanes):
            t = Signal(signed(cfg.score_width + 1), name=f"in_sum{j}")
            m.d.comb += [t.eq(p.score[j] + cfg.d),
                         beat.value[j].eq(Mux(t[-1], 0, Mux(_gt_const(t[1:-1], cfg.d), cfg.d,
                                                             t[1:-1])))]
        m.d.comb += [beat.mask.eq(p.mask),
                     wr.addr.eq(base + Mux(nrows == cfg.rows, cfg.rows - 1, nrows)),
                     wr.data.eq(beat), wr.en.eq(take)]
        return beat

    def _lanes(self, m, row, nxt, above, load, r_valid, clear, *, mode="both", prefix="",
               preset=None) -> tuple[list[CountingTopKLane], Value]:
        """The lanes and the value counters on a row register (submodules ``{prefix}lane{j}``
        and ``{prefix}count{u}``): pass 1 counts the values above (``above`` high), pass 2 the
        value itself and ranks ties within the row; ``clear`` empties the counters and
        ``preset = (en, counts)`` loads them. Returns the lanes and the counts."""
        cfg = self.config
        lanes = [CountingTopKLane(cfg.n_values, cfg.lanes, cfg.top_k, cfg.count_width,
                                  cfg.position_width, cfg.score_width, mode)
                 for _ in range(cfg.lanes)]
        counters = [CountingTopKCounter(cfg.lanes, cfg.top_k, cfg.count_width,
                                        presettable=preset is not None)
                    for _ in range(cfg.n_values)]
        # (The counters' inputs are formed by logic here, not wired from the lanes' outputs:
        # wired through, Amaranth names each instance's ports after the lanes' nets, and the
        # identical counters would become distinct Verilog modules.)
        counts = Signal(cfg.n_values * cfg.count_width)
        m.d.comb += counts.eq(Cat(c.count for c in counters))
        for j, lane in enumerate(lanes):
            m.submodules[f"{prefix}lane{j}"] = lane
            m.d.comb += [
                lane.next_value.eq(nxt.value[j]), lane.next_above.eq(above),
                lane.next_score.eq(self.i_stream.payload.score[j] if mode != "equal" else 0),
                lane.load.eq(load), lane.next_mask.eq(nxt.mask[j]),
                lane.valid.eq(r_valid & row.mask[j]),
            ]
            if mode != "above":
                rank = Signal(len(lane.rank), name=f"{prefix}rank{j}")
                m.d.comb += [
                    rank.eq(sum(row.mask[i] & (row.value[i] == row.value[j])
                                for i in range(j))),
                    lane.counts.eq(counts), lane.rank.eq(rank),
                ]
        for u, counter in enumerate(counters):
            m.submodules[f"{prefix}count{u}"] = counter
            m.d.comb += [counter.hits.eq(Cat(lane.hits[u] for lane in lanes)),
                         counter.clear.eq(clear)]
            if preset is not None:
                m.d.comb += [counter.preset.eq(preset[0]),
                             counter.preset_value.eq(
                                 preset[1][u * cfg.count_width:(u + 1) * cfg.count_width])]
        return lanes, counts

    def _slots(self, m, shift, *, chain=True) -> list[CountingTopKSlot]:
        """The ``top_k`` slots; ``shift`` moves each toward slot 0 (``chain``) or empties
        them all."""
        cfg = self.config
        ew = 1 + cfg.score_width + cfg.index_width
        slots = [CountingTopKSlot(cfg.lanes, ew) for _ in range(cfg.top_k)]
        for p, slot in enumerate(slots):
            m.submodules[f"slot{p}"] = slot
            m.d.comb += [slot.shift.eq(shift),
                         slot.shift_in.eq(slots[p + 1].value if chain and p + 1 < cfg.top_k
                                          else 0)]
        return slots

    def _slot_stage(self, m, row, lanes, slots, pass2, r_last, c_last, full) -> None:
        """Positions of the pass-2 row -> a register -> one slot write per kept lane (none
        while the slots are ``full``: pass 2 never runs then, and the output stays stable
        even from a state that reset cannot reach)."""
        cfg = self.config
        ew = 1 + cfg.score_width + cfg.index_width
        # The lookup stage: the row register's row, one cycle on (the lanes register their
        # lookups beside it).
        l_pass2, l_last = Signal(), Signal()
        l_value = [Signal.like(row.value[j], name=f"l_value{j}") for j in range(cfg.lanes)]
        m.d.sync += [l_pass2.eq(pass2), l_last.eq(r_last)]
        m.d.sync += [v.eq(row.value[j]) for j, v in enumerate(l_value)]
        base = Signal(cfg.index_width + 1)  # index of lane 0 of the lookup stage's row
        with m.If(l_pass2):
            m.d.sync += base.eq(Mux(l_last, 0, base + cfg.lanes))
        m.d.sync += c_last.eq(l_pass2 & l_last)
        # The slot stage registers each slot's hits (lane j writes slot p) rather than the
        # positions: a slot's write enables come straight from registers.
        entries = Signal(cfg.lanes * ew)
        hits = [Signal(cfg.lanes, name=f"slot_hit{p}") for p in range(cfg.top_k)]
        for j, lane in enumerate(lanes):
            keep = Signal(name=f"c_keep{j}")
            score = Signal(signed(cfg.score_width), name=f"c_score{j}")
            entry = entries[j * ew:(j + 1) * ew]
            m.d.comb += [score.eq(Cat(Const(0, 1), l_value[j]) - cfg.d),
                         keep.eq(l_pass2 & lane.keep & ~full)]
            m.d.sync += entry.eq(Cat(Const(1, 1), score, (base + j)[:cfg.index_width]))
            for p in range(cfg.top_k):
                m.d.sync += hits[p][j].eq(keep & (lane.pos == p))
        for p, slot in enumerate(slots):
            m.d.comb += [slot.hit.eq(hits[p]), slot.lane.eq(entries)]
