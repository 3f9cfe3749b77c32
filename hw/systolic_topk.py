"""Systolic top-k sparsifier for any signed scores: a drop-in for :class:`~hadware.hw.topk.TopK`.

Function
--------
Exactly :class:`~hadware.hw.topk.TopK`'s: the same ``i_stream`` / ``o_stream`` layouts
(:meth:`TopK.layouts`), candidate ``j`` of beat ``b`` has index ``b*lanes + j``, the beat with
``last`` ends the query, and ``top_k`` output beats follow, best first (score descending, ties
to the lower index), ``sel = 0`` on the slots beyond the number of valid candidates (their
index 0), ``last`` on the final one.

Method
------
Every candidate becomes a compare key ``{valid, score in offset binary, ~index}`` of
``key_width = 1 + score_width + index_width`` bits (valid in the top bit): one unsigned
comparison of two keys orders by validity, then score, then lower index, and masked lanes are
the key 0, below everything.

* **Insertion arrays**, one per lane (``lane0..``), each a chain of ``top_k`` cells
  (:class:`SystolicTopKCell`). Cell ``i`` holds one key; a key arriving from the cell before
  either replaces it (when greater: the held key moves on to the next cell) or moves on itself,
  one cell per cycle. A lane's keys thus stay sorted, best in cell 0, whatever the order they
  arrive in; the keys that fall off the end are beaten by ``top_k`` of the lane's own. Each
  input beat enters cell 0 of every lane one cycle after its transfer (a registered input).
* **The flush token** follows a query's last beat into cell 0: passing cell ``i`` it copies
  the cell's key into the lane's **drain register** ``i`` and empties the cell, so the next
  query's keys, one cycle or more behind it, find the cells empty. When it has passed the
  last cell the drain registers hold each lane's sorted ``top_k`` best keys.
* **Merge tree**: each lane's drain registers shift, one key a cycle, into a two-entry
  :class:`SystolicTopKBuffer` (``drain0..``) whenever it has room; a binary tree of
  :class:`SystolicTopKMerge` nodes (``merge0..``), built level by level over those buffers
  (an odd one out joins the next level), merges the lanes' sorted lists: a node compares the
  heads of its two inputs, sends the greater into its own two-entry buffer and pops it from
  its input. A buffer takes its input by its own registers' state alone, so a comparison
  never drives the shift of a whole lane, and no path runs through two levels. The root
  feeds ``o_stream``; the ``top_k``-th output transfer ends the query, frees the drain
  registers for the next token and, the next cycle, clears every buffer of the tree (the
  entries that were not needed are dropped).

Each cycle's logic is one key comparison and a two-way multiplexer between registers (a cell:
the arriving key against the held one; a node: its two heads; a buffer's room enabling a
lane's shift), so no path grows with
``top_k`` or ``lanes``. A query's keys are collected while the previous query's leave through
the tree (the drain registers are the second bank).

Area (as formulas): ``lanes * top_k`` cells of three ``key_width``-bit registers (held key,
the key moving on, drain) and one ``key_width``-bit comparator each; ``lanes - 1`` merge nodes
of one comparator; ``2 lanes - 1`` buffers of two ``key_width``-bit registers.

Timing
------
With ``B = max(1, ceil(n / lanes))`` the beats of a query and ``h = ceil(log2(lanes))`` the
levels of the merge tree:

* Input: one beat per cycle while collecting. ``i_stream.ready`` is low from the cycle after a
  ``last`` beat's transfer until the cycle the flush token enters (at least one cycle): the
  token enters as soon as the drain registers are free.
* Latency: with the ``last`` beat transferred in cycle ``t`` and the drain registers free in
  ``t + 1``, the first output beat is valid in cycle ``t + top_k + h + 3``: **latency =
  top_k + h + 3**. ``top_k`` output beats follow, one per cycle when ``o_stream.ready`` is
  high; the drain registers are free again the cycle after the final one.
* **Cycles per query** without stalls (queries back to back, consumer always ready):
  ``max(B + 1, 2 * top_k + h + 2)``, the period of the collection or of the drain, whichever
  is longer.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hadware.config.systolic_topk import SystolicTopKConfig
from hadware.hw.topk import TopK

__all__ = ["SystolicTopK", "SystolicTopKBuffer", "SystolicTopKCell", "SystolicTopKMerge"]


class SystolicTopKCell(wiring.Component):
    """One cell of a lane's insertion array, with its drain register.

    Members
    -------
    x_key, x_flush : In(key_width), In(1)
        What arrives from the cell before (or the input register): a key (0: nothing) or the
        flush token.
    y_key, y_flush : Out(key_width), Out(1)
        Registered: what moves on to the next cell.
    pop, d_next : In(1), In(key_width)
        Shift the drain register: it takes ``d_next`` (the next cell's drain register, 0 for
        the last cell).
    d : Out(key_width)
        The drain register.
    """

    def __init__(self, key_width: int):
        self._kw = key_width
        super().__init__({
            "x_key": In(key_width), "x_flush": In(1),
            "y_key": Out(key_width), "y_flush": Out(1),
            "pop": In(1), "d_next": In(key_width), "d": Out(key_width),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        kw = self._kw
        # Only the valid bits (a key's top bit) are reset: the rest of a key means nothing
        # while its valid bit is 0, and the drain register is read only after the token has
        # written it, so reset reaches lanes * top_k * 2 flip-flops, not the whole array.
        held_v, y_v = Signal(), Signal()
        held_r = Signal(kw - 1, reset_less=True)
        y_r = Signal(kw - 1, reset_less=True)
        d = Signal(kw, reset_less=True)
        held = Cat(held_r, held_v)
        m.d.comb += [self.y_key.eq(Cat(y_r, y_v)), self.d.eq(d)]
        m.d.sync += self.y_flush.eq(self.x_flush)
        with m.If(self.x_flush):
            m.d.sync += [d.eq(held), held_v.eq(0), y_v.eq(0)]
        with m.Elif(self.x_key > held):
            m.d.sync += [held.eq(self.x_key), Cat(y_r, y_v).eq(held)]
        with m.Else():
            m.d.sync += Cat(y_r, y_v).eq(self.x_key)
        with m.If(self.pop):
            m.d.sync += d.eq(self.d_next)
        return m


class SystolicTopKBuffer(wiring.Component):
    """A buffer of two keys whose input side is decided by registers only: it takes its input
    whenever that is valid and it holds fewer than two keys, whatever its consumer does this
    cycle, so no combinational path runs through it (one key a cycle in and out sustained).

    Members
    -------
    i_valid, i_key, i_take : In(1), In(key_width), Out(1)
        The input, taken (``i_take``) when valid and there is room.
    o_valid, o_key, o_pop : Out(1), Out(key_width), In(1)
        The head, popped by the consumer (only when valid).
    clear : In(1)
        Empty the buffer (and take nothing) this cycle.
    """

    def __init__(self, key_width: int):
        self._kw = key_width
        super().__init__({
            "i_valid": In(1), "i_key": In(key_width), "i_take": Out(1),
            "o_valid": Out(1), "o_key": Out(key_width), "o_pop": In(1),
            "clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        count = Signal(range(3))
        head = Signal(self._kw, reset_less=True)  # (meaningful only while count > 0)
        second = Signal(self._kw, reset_less=True)
        take = self.i_take
        m.d.comb += [
            take.eq(self.i_valid & ~count[1] & ~self.clear),
            self.o_valid.eq(count != 0),
            self.o_key.eq(head),
        ]
        with m.If(self.clear):
            m.d.sync += count.eq(0)
        with m.Elif(take & self.o_pop):  # count is 1: the new key becomes the head
            m.d.sync += head.eq(self.i_key)
        with m.Elif(take):
            with m.If(count == 0):
                m.d.sync += head.eq(self.i_key)
            with m.Else():
                m.d.sync += second.eq(self.i_key)
            m.d.sync += count.eq(count + 1)
        with m.Elif(self.o_pop):
            m.d.sync += [head.eq(second), count.eq(count - 1)]
        return m


class SystolicTopKMerge(wiring.Component):
    """A node of the merge tree: two sorted key streams in, the greater head into a
    :class:`SystolicTopKBuffer` (``buf``), popped from its input.

    Members
    -------
    a_valid, a_key, a_pop / b_valid, b_key, b_pop
        The two inputs: a head key when valid, popped when taken.
    o_valid, o_key, o_pop
        The output: the buffer's head, popped by the consumer (only when valid).
    clear : In(1)
        Empty the buffer (and take nothing) this cycle.
    """

    def __init__(self, key_width: int):
        self._kw = key_width
        super().__init__({
            "a_valid": In(1), "a_key": In(key_width), "a_pop": Out(1),
            "b_valid": In(1), "b_key": In(key_width), "b_pop": Out(1),
            "o_valid": Out(1), "o_key": Out(key_width), "o_pop": In(1),
            "clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.buf = buf = SystolicTopKBuffer(self._kw)
        take_a = Signal()
        m.d.comb += [
            take_a.eq(self.a_key > self.b_key),
            buf.i_valid.eq(self.a_valid & self.b_valid),
            buf.i_key.eq(Mux(take_a, self.a_key, self.b_key)),
            buf.clear.eq(self.clear),
            self.a_pop.eq(buf.i_take & take_a),
            self.b_pop.eq(buf.i_take & ~take_a),
            self.o_valid.eq(buf.o_valid),
            self.o_key.eq(buf.o_key),
            buf.o_pop.eq(self.o_pop),
        ]
        return m


class SystolicTopK(wiring.Component):
    """The systolic top-k sparsifier (see the module docstring).

    Members
    -------
    i_stream, o_stream
        :class:`~hadware.hw.topk.TopK`'s (:meth:`TopK.layouts`).
    """

    def __init__(self, config: SystolicTopKConfig):
        if not isinstance(config, SystolicTopKConfig):
            self._MustUse__silence = True
            raise TypeError(f"config must be a SystolicTopKConfig, not {config!r}")
        self.config = config
        self.latency = self.first_output_latency(config)
        self.latency_formula = (f"first output top_k + ceil(log2(lanes)) + 3 = {self.latency} "
                                "cycles after the last input beat; cycles per query = "
                                "max(ceil(n / lanes) + 1, 2 * top_k + ceil(log2(lanes)) + 2)")
        self.in_layout, self.out_layout = TopK.layouts(config)
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    # -- formulas (module docstring) ---------------------------------------------------------

    @staticmethod
    def beats(cfg: SystolicTopKConfig, n: int) -> int:
        """Input beats of a query over ``n`` candidates: ``max(1, ceil(n / lanes))``."""
        return max(1, -(-n // cfg.lanes))

    @staticmethod
    def first_output_latency(cfg: SystolicTopKConfig) -> int:
        """Cycles from the ``last`` input beat's transfer to the first output beat's valid,
        the drain registers free: ``top_k + ceil(log2(lanes)) + 3``."""
        return cfg.top_k + cfg.tree_levels + 3

    @classmethod
    def query_cycles(cls, cfg: SystolicTopKConfig, n: int) -> int:
        """Cycles per query without stalls, queries back to back over ``n`` candidates."""
        return max(cls.beats(cfg, n) + 1, 2 * cfg.top_k + cfg.tree_levels + 2)

    @staticmethod
    def worst_case_cycles(cfg: SystolicTopKConfig) -> int:
        """Most cycles from the later of a query's ``last`` input beat and the previous
        query's final output beat to the query's final output beat, consumer always ready,
        whatever the input: ``2 * top_k + ceil(log2(lanes)) + 2`` (the token enters the cycle
        after the later of the two, the first output follows ``top_k + h + 2`` cycles after
        that, the final one ``top_k - 1`` after the first)."""
        return 2 * cfg.top_k + cfg.tree_levels + 2

    # -- elaboration -------------------------------------------------------------------------

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.config
        k, lanes, w, iw, kw = cfg.top_k, cfg.lanes, cfg.score_width, cfg.index_width, \
            cfg.key_width
        inp = self.i_stream.payload

        flush_pending = Signal()  # a last beat was taken, its token has not entered yet
        filling = Signal()  # the token is on its way through the cells
        full = Signal()  # the drain registers hold a query, leaving through the tree
        inject = Signal()
        tree_done = Signal()  # the query's final output transfer
        base = Signal(iw + 1)  # index of lane 0 of the current beat
        take = Signal()
        m.d.comb += [
            self.i_stream.ready.eq(~flush_pending),
            take.eq(self.i_stream.valid & ~flush_pending),
            inject.eq(flush_pending & ~filling & ~full),
        ]

        # The registered input: cell 0's arriving key of each lane, and the token.
        x0_flush = Signal()
        m.d.sync += x0_flush.eq(inject)
        heads, pops = [], []
        for j in range(lanes):
            x0 = Signal(kw, name=f"x0_key{j}")
            score = inp.score[j]
            m.d.sync += x0.eq(Mux(take & inp.mask[j],
                                  Cat(~(base + j)[:iw], score[:-1], ~score[-1], 1), 0))
            cells = [SystolicTopKCell(kw) for _ in range(k)]
            for i, c in enumerate(cells):
                m.submodules[f"lane{j}_cell{i}"] = c
                prev_key, prev_flush = (x0, x0_flush) if i == 0 else \
                    (cells[i - 1].y_key, cells[i - 1].y_flush)
                m.d.comb += [c.x_key.eq(prev_key), c.x_flush.eq(prev_flush),
                             c.d_next.eq(cells[i + 1].d if i + 1 < k else 0)]
            pop = Signal(name=f"pop{j}")
            for c in cells:
                m.d.comb += c.pop.eq(pop)
            heads.append(cells[0].d)
            pops.append(pop)
            if j == 0:
                token_last = cells[-1].x_flush  # the token passes the last cell this cycle

        with m.If(take):
            m.d.sync += base.eq(Mux(inp.last, 0, base + lanes))
            with m.If(inp.last):
                m.d.sync += flush_pending.eq(1)
        with m.If(inject):
            m.d.sync += [flush_pending.eq(0), filling.eq(1)]
        with m.If(token_last):
            m.d.sync += [filling.eq(0), full.eq(1)]
        with m.If(tree_done):
            m.d.sync += full.eq(0)
        # The tree's buffers are emptied the cycle after the final output, from a register
        # (the output handshake drives no buffer of the tree); the root's leftovers are not
        # offered meanwhile.
        clearing = Signal()
        m.d.sync += clearing.eq(tree_done)

        root_valid, root_key, root_pop = self._tree(m, heads, pops, full, clearing)

        out_pos = Signal(range(max(k, 2)))
        o = self.o_stream.payload
        m.d.comb += [
            self.o_stream.valid.eq(root_valid & ~clearing),
            o.sel.eq(root_key[-1]),
            o.score.eq(Cat(root_key[iw:iw + w - 1], ~root_key[iw + w - 1])),
            # (an empty slot's index would be all ones, beyond n_max: 0 keeps a consumer's
            # memory read in range)
            o.index.eq(Mux(root_key[-1], ~root_key[:iw], 0)),
            o.last.eq(out_pos == k - 1),
            root_pop.eq(self.o_stream.valid & self.o_stream.ready),
            tree_done.eq(root_pop & o.last),
        ]
        with m.If(root_pop):
            m.d.sync += out_pos.eq(Mux(o.last, 0, out_pos + 1))
        return m

    def _tree(self, m, heads, pops, full, clear):
        """The merge tree over the lanes' drain registers; returns the root's (valid, key,
        pop)."""
        # Each lane's drain registers shift into a buffer (``drain{j}``): the shift of a whole
        # lane then follows the buffer's registers, not the tree's comparisons.
        level = []
        for j, (h, p) in enumerate(zip(heads, pops, strict=True)):
            buf = SystolicTopKBuffer(self.config.key_width)
            m.submodules[f"drain{j}"] = buf
            m.d.comb += [buf.i_valid.eq(full), buf.i_key.eq(h), p.eq(buf.i_take),
                         buf.clear.eq(clear)]
            level.append((buf.o_valid, buf.o_key, buf.o_pop))
        n = 0
        while len(level) > 1:
            nxt = []
            for a, b in zip(level[0::2], level[1::2], strict=False):
                node = SystolicTopKMerge(self.config.key_width)
                m.submodules[f"merge{n}"] = node
                n += 1
                m.d.comb += [node.a_valid.eq(a[0]), node.a_key.eq(a[1]), a[2].eq(node.a_pop),
                             node.b_valid.eq(b[0]), node.b_key.eq(b[1]), b[2].eq(node.b_pop),
                             node.clear.eq(clear)]
                nxt.append((node.o_valid, node.o_key, node.o_pop))
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return level[0]
