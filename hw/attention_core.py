"""The attention core: one head over a stored context, queries overlapped in stages, built from
parts.

Every attention design of hadware is this datapath with three parts chosen by its config
class (:mod:`hadware.config.attention_core`):

* the **scorer** (:data:`SCORERS`): ``"hamming"``, XNOR-popcount lanes
  (:class:`~hadware.hw.score_unit.ScoreLane`), or ``"int8"``, int8 dot-product lanes
  (:class:`~hadware.hw.int8_lane.Int8Lane`);
* the **exponential** (:data:`EXPS`): ``"table"`` (:class:`~hadware.hw.softmax_exp.TableExp`)
  or ``"fixed"`` (:class:`~hadware.hw.softmax_exp.Exp2Unit`);
* the **sparsifier**: ``"topk"`` (a top-k unit, then one selected slot per cycle through
  :class:`~hadware.hw.weighted_sum.SlotWeightedSum`) or ``None`` (a dense softmax: a score
  pass that buffers the scores and finds the maximum, then a weighting pass). The top-k unit
  is the config's ``topk_unit``: ``"merge"`` (:class:`~hadware.hw.topk.TopK`, its first
  selection the cycle after the last score beat) or, for binarized scores, ``"counting"``
  (:class:`~hadware.hw.counting_topk.CountingTopK`, a counting sort: ``rows + 5`` cycles
  after the last score beat, no path that grows with ``top_k * lanes``) or, for any scores,
  ``"systolic"`` (:class:`~hadware.hw.systolic_topk.SystolicTopK`, an insertion array per lane
  and a merge tree: one key comparison per path; ``top_k + ceil(log2(lanes)) + 3`` cycles
  after the last score beat). All select exactly the same entries.

A variant is a subclass that names its config class (``config_class``); nothing else. The
arithmetic is exactly :mod:`hadware.golden.attention_core`.

Streams
-------
* ``ctx_stream`` (in): ``{clear, key, value}``. ``clear = 1`` empties the context; otherwise
  the beat appends entry ``count`` (a binarized key: element j at bit j, 1 = +1; an int8 key:
  ``d`` signed bytes; ``d_v`` signed int8 values). Appends beyond ``n_max`` entries are
  accepted and dropped.
* ``q_stream`` (in): ``{q, n}``: a query and the number of context entries it attends over.
  The core uses ``min(n, count)`` entries; with none, every weight is 0 and ``out`` is 0.
  Top-k cores add ``k``, the query's own number of kept entries: the first ``k`` of the
  ``top_k`` selected slots (sorted, so exactly the query's top ``k``) are weighed, the others
  weigh 0 and leave their ``sel`` bit clear. ``k = 0`` and ``k > top_k`` mean ``top_k`` (the
  vector files refuse both). The cycle count does not depend on ``k``.
* ``tab_stream`` (in, ``runtime_temperature`` cores only): sets the softmax temperature of
  the following queries. Table exponential: ``{addr, data}`` writes entry ``addr`` of the
  table (every copy of it: a dense core has one per lane); beats with ``addr > d`` are
  accepted and dropped; ``cfg.table_for(t)`` is the whole table of temperature ``t``,
  ``d + 1`` beats. Fixed exponential: ``{scale, shift}``, one beat, ``(c, G) =
  cfg.table_for(t)`` (``G`` must exceed ``H = exp_index_bits``, as every temperature's
  does). Until written the core runs at the config's temperature; reset does not restore it.
* ``o_stream`` (out): ``{out}``, ``d_v`` outputs in units of ``2**-out_frac_bits``; top-k
  cores add ``{index, score, sel}``, the ``top_k`` selected slots (best first) with ``sel``
  bit p set where slot p holds a selection.

Context and table writes are served only while no query is in flight, and a pending one
holds new queries back (context writes first, then table writes, then queries, when several
are valid), so a query always sees the context and the table as written before it was
accepted.

Storage
-------
Keys: ``ceil(n_max / lanes)`` rows of ``lanes`` keys (``key_bits`` each: ``d`` binarized,
``8 d`` int8), one row feeding every lane in one cycle. Values: a top-k core reads one
selected row per cycle, so it stores ``n_max`` rows of ``8 d_v`` bits; a dense core weighs
``lanes`` rows per cycle, so it stores the same bits as ``ceil(n_max / lanes)`` rows of
``lanes * 8 d_v`` bits, and keeps a score buffer of ``ceil(n_max / lanes)`` rows of
``lanes * score_width`` bits. All memories are synchronous-read.

Dense datapath
--------------
1. **Score pass.** Every key row goes through the score lanes once; the ``lanes`` scores of a
   row are written into the score buffer, and a registered tree of pairwise maxima
   (:class:`~hadware.hw.weighted_sum.MaxTree`, ``ceil(log2(lanes))`` levels) with a running
   maximum gives ``s_max``. (Scoring the keys a second time instead would save the buffer but
   run every dot product twice per query.)
2. **Weighting pass**, as soon as ``s_max`` is final: the buffer is read back one row per cycle;
   each lane computes ``e_j = E(s_max - s_j)`` and the ``d_v`` products ``e_j * v[j, c]``
   (:class:`~hadware.hw.weighted_sum.WeightLane`); per column a tree adds the ``lanes``
   products and an accumulator the rows (:class:`~hadware.hw.weighted_sum.ColumnSum`).

Stages and overlapped queries
-----------------------------
A query passes through stages, each holding one query at a time, so that several queries are
in flight (:meth:`AttentionCore.max_in_flight`):

* the **front**: the key scan and what must see its rows (top-k: until the sparsifier has the
  last score beat; dense: the score pass, the maximum and the weighting pass, until the sums
  are handed on, because both passes use the one score buffer);
* top-k only, the **sparsifier** (it collects the next query while its slots hold the
  previous one's selections: see :mod:`~hadware.hw.counting_topk`) and the **weighting**
  (:class:`~hadware.hw.weighted_sum.SlotWeightedSum`: one query from its first slot until
  its sums are taken; each query's ``k`` waits in a queue until then);
* the **output stage**: it takes the sums when it is free (the selections and ``num`` into
  its own registers; the divider keeps ``den``) and holds the query until its output
  transfer.

A new query is accepted when the front is free, the sparsifier can take its rows and no
context or table write is pending.

Output path (both): one reciprocal per query (:class:`~hadware.hw.divider.RestoringDivider`,
``recip = floor((2**R + floor(den/2)) / den)`` in ``R + 2`` cycles from the last weight), then
one output column per cycle through one pipelined multiplier (:class:`Scaler`, DSP-sized
partial products and a registered adder tree).

Timing (per query, no output stall)
-----------------------------------
From the cycle the query is accepted to the cycle its output is valid, with
``n_eff = max(1, min(n, count))``, ``rows = ceil(n_eff / lanes)``, ``L_lane`` the scorer's
latency (``1 + ceil(log2(d / 8))`` for hamming, ``max(1, ceil(log2(d)))`` for int8), ``L_exp``
the exponential's (1 table, 4 fixed), ``R = recip_bits`` and ``L_scale`` the output
scaler's pipeline (:meth:`Scaler.latency_of`: 2 plus the levels of its adder tree)::

    top-k, merge:     cycles = rows + top_k + L_lane + L_exp + R + d_v + L_scale + 10
    top-k, counting:  cycles = 2 * rows + top_k + L_lane + L_exp + R + d_v + L_scale + 14
      counting_overlapped: cycles = the same with + 17 (the counts completed, the output bank)
    top-k, systolic:  cycles = rows + 2 * top_k + ceil(log2(lanes)) + L_lane + L_exp + R + d_v
                               + L_scale + 12
    dense:            cycles = 2 * rows + 2 * ceil(log2(lanes)) + L_lane + L_exp + R + d_v
                               + L_scale + 12

(a dense core's ``ceil(log2(lanes))`` appears twice: the tree of maxima in the score pass
and the registered adder trees of the column sums in the weighting pass)

This is the latency of a query that finds every stage free; :meth:`AttentionCore.cycles`
gives it. Back to back, queries over ``n_eff`` entries each, output always ready, leave one
every ``interval`` cycles (:meth:`AttentionCore.interval`), the period of the slowest stage::

    output    = R + d_v + L_scale + 4
    merge:    interval = max(rows + L_lane + top_k + 3, top_k + L_exp + 5, output)
    counting: interval = max(rows + 5 + max(rows + L_lane + 2, top_k), top_k + L_exp + 5,
                             output)
    counting_overlapped:
              interval = max(rows + L_lane + 5, top_k + L_exp + 5, output)
    systolic: interval = max(rows + L_lane + 4, 2 * top_k + ceil(log2(lanes)) + 2,
                             top_k + L_exp + 5, output)
    dense:    interval = max(cycles - (R + d_v + L_scale) - 2, output)

(merge: the sparsifier takes the next query's rows once its slots are out; counting: the second
pass of a query waits for the previous one's slots to leave; counting_overlapped: the
sparsifier takes the next query's rows three cycles after the last one's, while that one is in
its second pass; systolic: the next query's rows the cycle after the flush token entered, a
token once the previous query's selections have left its drain registers; dense: the next query
enters the front the cycle after the sums are handed on.)
"""

from __future__ import annotations

from typing import ClassVar

from amaranth import Cat, Const, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.config.attention_core import AttentionCoreConfig
from hadware.config.counting_topk import CountingTopKConfig
from hadware.config.systolic_topk import SystolicTopKConfig
from hadware.config.topk import TopKConfig
from hadware.hw.arith import Multiplier
from hadware.hw.counting_topk import CountingTopK
from hadware.hw.divider import RestoringDivider
from hadware.hw.int8_lane import Int8Lane, int8_lane_latency
from hadware.hw.score_unit import ScoreLane, score_lane_latency
from hadware.hw.softmax_exp import Exp2Unit, TableExp
from hadware.hw.systolic_topk import SystolicTopK
from hadware.hw.topk import TopK
from hadware.hw.weighted_sum import ColumnSum, MaxTree, SlotWeightedSum, WeightLane, delay

__all__ = ["EXPS", "SCORERS", "AttentionCore", "Scaler", "Scorer"]


class Scorer:
    """A scorer part: how a key is stored and how a lane scores it.

    Parameters
    ----------
    key_shape : callable(cfg) -> shape
        Shape of one stored key and of the query.
    latency : callable(cfg) -> int
        Cycles from a key at a lane's input to its score.
    lane : callable(cfg) -> Component
        A new lane with members ``q``, ``k`` (in) and ``s`` (out, one score per cycle).
    enable : bool
        The lane has a pipeline enable ``en``, tied high (the core never stalls its lanes).
    """

    def __init__(self, key_shape, latency, lane, *, enable: bool = False):
        self.key_shape, self.latency, self.lane, self.enable = key_shape, latency, lane, enable


#: The scorer parts by name (``cfg.scorer``).
SCORERS: dict[str, Scorer] = {
    "hamming": Scorer(lambda cfg: cfg.d, lambda cfg: score_lane_latency(cfg.d),
                      lambda cfg: ScoreLane(cfg.d, cfg.score_width), enable=True),
    "int8": Scorer(lambda cfg: data.ArrayLayout(signed(8), cfg.d),
                   lambda cfg: int8_lane_latency(cfg.d),
                   lambda cfg: Int8Lane(cfg.d, cfg.score_width)),
}

#: The exponential parts by name (``cfg.exp``): components taking the config, with members
#: ``delta``, ``mask``, ``e`` and a class attribute ``latency``.
EXPS: dict[str, type] = {"table": TableExp, "fixed": Exp2Unit}


class Scaler(wiring.Component):
    """``out = (num * recip + 2**(S-1)) >> S`` for one value column, pipelined: the one wide
    multiplication of the output normalisation, in its own module.

    The operands are registered, cut into ``cfg.scale_piece``-bit pieces (:meth:`Multiplier.pieces
    <hadware.hw.arith.Multiplier.pieces>`; the default, 17, fits an 18 x 18 DSP multiplier, a
    smaller piece makes each partial product a small multiplier in logic), the partial products
    are registered, and the shifted partial products and the rounding constant are added by
    a tree of two-input adders with a register after each level, so that no cycle holds more
    than one multiplier piece or one adder. One column per cycle; ``out`` is the result for the
    ``num``, ``recip`` presented :attr:`latency` cycles earlier (``2 + ceil(log2(terms))``,
    ``terms`` the partial products plus the constant).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.latency = self.latency_of(cfg)
        super().__init__({
            "num": In(signed(cfg.num_width)),
            "recip": In(cfg.recip_width),
            "out": Out(signed(cfg.out_width)),
        })

    @staticmethod
    def latency_of(cfg) -> int:
        """``2 + ceil(log2(pieces(num_width) * pieces(recip_width) + 1))``, ``pieces(w)`` the
        pieces of a ``w``-bit operand (``P = scale_piece``): 1 up to ``P + 1`` bits, else
        ``1 + ceil((w - P - 1) / P)``."""
        p = cfg.scale_piece
        terms = (Multiplier.piece_count(cfg.num_width, p)
                 * Multiplier.piece_count(cfg.recip_width, p))
        return 2 + ceil_log2(terms + 1)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.cfg
        # Datapath registers: no reset (the core's valid bits say when the output matters).
        num = Signal(signed(cfg.num_width), reset_less=True)
        recip = Signal(cfg.recip_width, reset_less=True)
        m.d.sync += [num.eq(self.num), recip.eq(self.recip)]
        # The terms as (value, shift): the rounding constant 2**(S-1) and the partial products.
        # A sum keeps the lower shift of its two terms and only the bits its terms can reach.
        terms: list[tuple[Value, int]] = [(Const(1, 1), cfg.out_shift - 1)]
        for i, (pa, sa) in enumerate(Multiplier.pieces(num, cfg.scale_piece)):
            for j, (pb, sb) in enumerate(Multiplier.pieces(recip, cfg.scale_piece)):
                pp = Signal((pa * pb).shape(), name=f"pp{i}_{j}", reset_less=True)
                m.d.sync += pp.eq(pa * pb)
                terms.append((pp, sa + sb))
        depth = 0
        while len(terms) > 1:
            depth += 1
            terms.sort(key=lambda t: t[1])  # neighbours in weight, so that the sums stay narrow
            nxt: list[tuple[Value, int]] = []
            for k in range(0, len(terms), 2):
                if k + 1 == len(terms):
                    total, shift = terms[k]
                else:
                    (va, sa), (vb, sb) = terms[k], terms[k + 1]
                    shift = min(sa, sb)
                    total = (va << (sa - shift)) + (vb << (sb - shift))
                r = Signal(total.shape(), name=f"sum{depth}_{k // 2}", reset_less=True)
                m.d.sync += r.eq(total)
                nxt.append((r, shift))
            terms = nxt
        total, shift = terms[0]
        m.d.comb += self.out.eq(total >> (cfg.out_shift - shift))
        return m


class AttentionCore(wiring.Component):
    """The attention core (see the module docstring for streams, storage and timing).

    Parameters
    ----------
    config
        An instance of the variant's :attr:`config_class` (exactly that class).

    Attributes
    ----------
    latency : int
        The constant ``L`` of the per-query cycle count.
    latency_formula : str

    Raises
    ------
    TypeError
        If ``config`` is not an instance of :attr:`config_class`.
    ValueError
        If ``top_k`` exceeds what the sparsifier supports (256).
    """

    #: The variant's configuration class (a subclass of AttentionCoreConfig).
    config_class: ClassVar[type] = AttentionCoreConfig

    def __init__(self, config):
        cls = self.config_class
        if type(config) is not cls or cls is AttentionCoreConfig:
            self._MustUse__silence = True
            article = "an" if cls.__name__[0] in "AEIOU" else "a"
            raise TypeError(f"config must be {article} {cls.__name__}, not {config!r}")
        self.config = config
        self.sparse = config.sparsifier == "topk"
        self.scorer = SCORERS[config.scorer]
        self.exp_class = EXPS[config.exp]
        if self.sparse:
            try:
                fields = dict(top_k=config.top_k, lanes=config.lanes, n_max=config.n_max,
                              score_width=config.score_width)
                if config.topk_unit == "systolic":
                    self.topk_class = SystolicTopK
                    self.topk_config = SystolicTopKConfig(**fields)
                elif config.counting_topk:
                    self.topk_class = CountingTopK
                    self.topk_config = CountingTopKConfig(
                        **fields, d=config.d, overlap=config.topk_unit == "counting_overlapped")
                else:
                    self.topk_class = TopK
                    self.topk_config = TopKConfig(**fields)
            except ValueError as e:
                self._MustUse__silence = True
                raise ValueError(f"{config.block} hardware: {e}") from None
        self.latency = self.latency_constant(config)
        c = self._extra(config)  # the constant of L, from the one place that defines it
        if self.sparse and config.topk_unit == "systolic":
            self.latency_formula = ("cycles from query accepted to output valid = "
                                    "ceil(max(1, min(n, count)) / lanes) + 2 * top_k + L, "
                                    "L = ceil(log2(lanes)) + L_lane + L_exp + recip_bits + d_v"
                                    f" + L_scale + {c} = {self.latency}")
        elif self.sparse and config.counting_topk:
            self.latency_formula = ("cycles from query accepted to output valid = "
                                    "2 * ceil(max(1, min(n, count)) / lanes) + top_k + L, "
                                    f"L = L_lane + L_exp + recip_bits + d_v + L_scale + {c} = "
                                    f"{self.latency}")
        elif self.sparse:
            self.latency_formula = ("cycles from query accepted to output valid = "
                                    "ceil(max(1, min(n, count)) / lanes) + top_k + L, "
                                    f"L = L_lane + L_exp + recip_bits + d_v + L_scale + {c} = "
                                    f"{self.latency}")
        else:
            self.latency_formula = ("cycles from query accepted to output valid = "
                                    "2 * ceil(max(1, min(n, count)) / lanes) + L, "
                                    "L = 2 * ceil(log2(lanes)) + L_lane + L_exp + recip_bits + d_v"
                                    f" + L_scale + {c} = {self.latency}")
        self.ctx_layout, self.q_layout, self.out_layout = self.layouts(config)
        self.runtime_table = config.runtime_temperature
        members = {
            "ctx_stream": In(stream.Signature(self.ctx_layout)),
            "q_stream": In(stream.Signature(self.q_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        }
        if self.runtime_table:
            members["tab_stream"] = In(stream.Signature(self.tab_layout(config)))
        super().__init__(members)

    # -- formulas and layouts ----------------------------------------------------------------

    @classmethod
    def latency_constant(cls, cfg) -> int:
        """The constant L of the per-query cycle count (see the module docstring)."""
        tail = (SCORERS[cfg.scorer].latency(cfg) + EXPS[cfg.exp].latency + cfg.recip_bits
                + cfg.d_v + Scaler.latency_of(cfg))
        if cfg.sparsifier == "topk" and cfg.topk_unit == "systolic":
            return tail + ceil_log2(cfg.lanes) + cls._extra(cfg)
        if cfg.sparsifier == "topk":
            return tail + cls._extra(cfg)
        return 2 * ceil_log2(cfg.lanes) + tail + cls._extra(cfg)

    @staticmethod
    def _extra(cfg) -> int:
        """The control, handshake and pipeline-register cycles of L (module docstring)."""
        if cfg.sparsifier != "topk":
            return 12
        return {"systolic": 12, "counting": 14, "counting_overlapped": 17}.get(cfg.topk_unit, 10)

    @classmethod
    def cycles(cls, cfg, n_eff: int) -> int:
        """Cycles from query acceptance to output valid for ``n_eff`` attended entries."""
        rows = -(-max(1, n_eff) // cfg.lanes)
        if cfg.sparsifier == "topk":
            # the counting top-k reads its buffered scores back: rows cycles more
            rows_again = rows if cfg.counting_topk else 0
            # the systolic top-k's token passes its top_k cells before the first selection
            top_k_again = cfg.top_k if cfg.topk_unit == "systolic" else 0
            return rows + rows_again + cfg.top_k + top_k_again + cls.latency_constant(cfg)
        return 2 * rows + cls.latency_constant(cfg)

    @staticmethod
    def max_in_flight(cfg) -> int:
        """Most queries accepted and not yet answered: dense, the front and the output stage
        (2); merge, the sparsifier (the front feeds it), the weighting and the output stage
        (3); counting, one more collected while the slots hold the one before (4);
        counting_overlapped, its collector, second pass, slots and output bank, the weighting
        and the output stage (6); systolic, one collected in the insertion arrays while one
        leaves the drain registers, the weighting and the output stage (4)."""
        if cfg.sparsifier != "topk":
            return 2
        return {"counting": 4, "counting_overlapped": 6, "systolic": 4}.get(cfg.topk_unit, 3)

    @classmethod
    def interval(cls, cfg, n_eff: int) -> int:
        """Cycles between successive outputs of back-to-back queries over ``n_eff`` entries
        each, in the steady state, output always ready (module docstring): the slowest
        stage's period."""
        rows = -(-max(1, n_eff) // cfg.lanes)
        l_lane = SCORERS[cfg.scorer].latency(cfg)
        tail = cfg.recip_bits + cfg.d_v + Scaler.latency_of(cfg)
        output = tail + 4
        if cfg.sparsifier != "topk":
            return max(cls.cycles(cfg, n_eff) - tail - 2, output)
        weighting = cfg.top_k + EXPS[cfg.exp].latency + 5
        if cfg.topk_unit == "systolic":
            front = max(rows + l_lane + 4, 2 * cfg.top_k + ceil_log2(cfg.lanes) + 2)
        elif cfg.topk_unit == "counting_overlapped":
            front = rows + l_lane + 5
        elif cfg.topk_unit == "counting":
            front = rows + 5 + max(rows + l_lane + 2, cfg.top_k)
        else:
            front = rows + l_lane + 3 + cfg.top_k
        return max(front, weighting, output)

    @classmethod
    def layouts(cls, cfg):
        """Payload layouts of ``ctx_stream``, ``q_stream`` and ``o_stream``."""
        key = SCORERS[cfg.scorer].key_shape(cfg)
        ctx = data.StructLayout({"clear": 1, "key": key,
                                 "value": data.ArrayLayout(signed(8), cfg.d_v)})
        q_fields = {"q": key, "n": cfg.count_width}
        if cfg.sparsifier == "topk":
            q_fields["k"] = range(cfg.top_k + 1)
        q = data.StructLayout(q_fields)
        fields = {"out": data.ArrayLayout(signed(cfg.out_width), cfg.d_v)}
        if cfg.sparsifier == "topk":
            fields.update({
                "index": data.ArrayLayout(cfg.index_width, cfg.top_k),
                "score": data.ArrayLayout(signed(cfg.score_width), cfg.top_k),
                "sel": cfg.top_k,
            })
        return ctx, q, data.StructLayout(fields)

    @classmethod
    def tab_layout(cls, cfg):
        """Payload layout of ``tab_stream`` (``runtime_temperature`` cores): one table entry
        ``{addr, data}`` (table exponential) or the scale and its shift ``{scale, shift}``
        (fixed exponential)."""
        if cfg.exp == "table":
            return data.StructLayout({"addr": cfg.lut_address_width, "data": cfg.lut_width})
        return data.StructLayout({"scale": cfg.exp_scale_width,
                                  "shift": range(cfg.exp_scale_shift_max + 1)})

    # -- elaboration -------------------------------------------------------------------------

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.config
        lanes, rows = cfg.lanes, -(-cfg.n_max // cfg.lanes)
        kb = Shape.cast(self.scorer.key_shape(cfg)).width
        vb = 8 * cfg.d_v
        keys = Memory(shape=lanes * kb, depth=rows, init=[])
        if self.sparse:  # one selected row per cycle
            values = Memory(shape=vb, depth=cfg.n_max, init=[])
        else:  # lanes rows per cycle
            values = Memory(shape=lanes * vb, depth=rows, init=[])
        m.submodules.key_mem = keys
        m.submodules.value_mem = values
        # Queries accepted and not yet answered (at most one per stage: front, sparsifier,
        # weighting, output); the context and the table change only when there are none.
        inflight = Signal(range(self.max_in_flight(cfg) + 1))
        idle = Signal()
        m.d.comb += idle.eq(inflight == 0)
        count = self._context_writes(m, idle, keys, values, kb)
        scan = self._scan(m, count, keys.read_port(), kb)
        v_rd = values.read_port()
        exp_units: list[wiring.Component] = []
        handoff = Signal()  # the weighting stage's sums go to the output stage
        if self.sparse:
            wsum = self._sparse_weighting(m, scan, v_rd, exp_units)
            den, num, done = wsum.den, wsum.num, wsum.done
            m.d.comb += wsum.release.eq(handoff)
        else:
            den, num, done = self._dense_weighting(m, scan, v_rd, exp_units)
        if self.runtime_table:
            self._table_writes(m, idle, exp_units)
        handoff_late = self._output(m, den, num, done, handoff)
        if self.sparse:  # the selections, kept for the output stage
            for name in ("index", "score", "sel"):
                held = Signal.like(getattr(wsum, name), name=f"out_{name}", reset_less=True)
                with m.If(handoff_late):
                    m.d.sync += held.eq(getattr(wsum, name))
                m.d.comb += getattr(self.o_stream.payload, name).eq(held)
        else:  # the front holds the sums until they are handed on
            m.d.comb += scan["front_done"].eq(handoff)
        o_take = Signal()
        m.d.comb += o_take.eq(self.o_stream.valid & self.o_stream.ready)
        m.d.sync += inflight.eq(inflight + scan["q_take"] - o_take)
        return m

    def _context_writes(self, m, idle, keys, values, kb):
        """The context stream: clear, or append one key and value row; returns ``count``."""
        cfg = self.config
        lanes, rows = cfg.lanes, -(-cfg.n_max // cfg.lanes)
        k_wr = keys.write_port(granularity=kb)
        v_wr = values.write_port() if self.sparse else values.write_port(granularity=8 * cfg.d_v)
        count = Signal(cfg.count_width)
        wr_row = Signal(range(rows + 1))
        wr_lane = Signal(range(max(lanes, 2)))  # at least 1 bit (no zero-width wire)
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
        with m.If(self.ctx_stream.valid & idle):
            with m.If(ctx.clear):
                m.d.sync += [count.eq(0), wr_row.eq(0), wr_lane.eq(0)]
            with m.Elif(count < cfg.n_max):
                m.d.comb += [k_wr.en.eq(lane_en), v_wr.en.eq(1 if self.sparse else lane_en)]
                m.d.sync += count.eq(count + 1)
                with m.If(wr_lane == lanes - 1):
                    m.d.sync += [wr_lane.eq(0), wr_row.eq(wr_row + 1)]
                with m.Else():
                    m.d.sync += wr_lane.eq(wr_lane + 1)
        return count

    def _table_writes(self, m, idle, exp_units):
        """The table stream, between queries and after pending context writes: one entry into
        every copy of the table per beat, or the scale and shift registers that every fixed
        exponential unit reads (initial values: the config's; reset keeps them)."""
        cfg = self.config
        tab = self.tab_stream
        take = Signal()
        m.d.comb += [tab.ready.eq(idle & ~self.ctx_stream.valid), take.eq(tab.valid & tab.ready)]
        if cfg.exp == "table":
            for unit in exp_units:
                m.d.comb += [unit.wr_en.eq(take & (tab.payload.addr <= cfg.d)),
                             unit.wr_addr.eq(tab.payload.addr),
                             unit.wr_data.eq(tab.payload.data)]
            return
        scale = Signal(cfg.exp_scale_width, init=cfg.exp_scale, reset_less=True)
        shift = Signal(range(cfg.exp_scale_shift_max + 1), init=cfg.exp_scale_shift,
                       reset_less=True)
        with m.If(take):
            m.d.sync += [scale.eq(tab.payload.scale), shift.eq(tab.payload.shift)]
        for unit in exp_units:
            m.d.comb += [unit.scale.eq(scale), unit.shift.eq(shift)]

    def _scan(self, m, count, k_rd, kb):
        """Query acceptance and the key scan through the score lanes. Returns a dict of the
        lanes' ``scores`` and their row tags ``valid``, ``mask``, ``last``, ``row``, plus
        ``n_eff``, ``k_eff`` (the accepted query's k, valid in the cycle of ``q_take``),
        ``q_take`` and two inputs for the caller to drive: ``front_ready`` (the stage after
        the scan can take a new query's rows) and ``front_done`` (the front is free again)."""
        cfg = self.config
        lanes = cfg.lanes
        busy = self.ctx_stream.valid | (self.tab_stream.valid if self.runtime_table else 0)
        front_busy = Signal()  # a query is in the front (its scan, and what must follow it)
        front_ready, front_done = Signal(), Signal()
        m.d.comb += self.q_stream.ready.eq(~front_busy & front_ready & ~busy)
        q_take = Signal()
        m.d.comb += q_take.eq(self.q_stream.valid & self.q_stream.ready)
        with m.If(front_done):
            m.d.sync += front_busy.eq(0)
        q_reg = Signal(kb)
        n_eff = Signal(cfg.count_width)
        k_eff = Signal(range(cfg.top_k + 1)) if self.sparse else None
        with m.If(q_take):
            n_req = self.q_stream.payload.n
            m.d.sync += [
                front_busy.eq(1),
                q_reg.eq(self.q_stream.payload.q),
                n_eff.eq(Mux(n_req < count, n_req, count)),
            ]
        if self.sparse:
            k_req = self.q_stream.payload.k
            out_of_range = k_req == 0
            if cfg.top_k < 2 ** len(k_req) - 1:  # (else no k above top_k fits the field)
                out_of_range = out_of_range | (k_req > cfg.top_k)
            m.d.comb += k_eff.eq(Mux(out_of_range, cfg.top_k, k_req))
        scanning, rd_row, mask, scan_last = self._row_walk(m, q_take, n_eff, "scan")
        m.d.comb += k_rd.addr.eq(rd_row)
        # The key row arrives one cycle after its address and is registered (a memory block's
        # read and a lane's first stage do not share a cycle), the lanes add their latency.
        depth = 2 + self.scorer.latency(cfg)
        k_row = Signal(lanes * kb, reset_less=True)
        m.d.sync += k_row.eq(k_rd.data)
        scores = []
        for j in range(lanes):
            lane = self.scorer.lane(cfg)
            m.submodules[f"lane{j}"] = lane
            m.d.comb += [lane.q.eq(q_reg), lane.k.eq(k_row[j * kb:(j + 1) * kb])]
            if self.scorer.enable:
                m.d.comb += lane.en.eq(1)
            scores.append(lane.s)
        return {
            "scores": scores,
            "valid": delay(m, scanning, depth, "p_valid")[-1],
            "mask": delay(m, mask, depth, "p_mask", data=True)[-1],
            "last": delay(m, scan_last, depth, "p_last", data=True)[-1],
            "row": None if self.sparse else delay(m, rd_row, depth, "p_row", data=True)[-1],
            "n_eff": n_eff,
            "k_eff": k_eff,
            "q_take": q_take,
            "front_ready": front_ready,
            "front_done": front_done,
        }

    def _row_walk(self, m, start, n_eff, name):
        """A walk over the first ``n_eff`` entries, one row of ``lanes`` per cycle, from the
        cycle after ``start``. Returns ``(active, row, mask, last)``: the walk is on, the row
        it reads, which of the row's lanes hold an entry, and the row is the last."""
        cfg = self.config
        lanes, rows = cfg.lanes, -(-cfg.n_max // cfg.lanes)
        active = Signal(name=f"{name}_active")
        row = Signal(range(rows + 1), name=f"{name}_row")
        base = Signal(cfg.count_width + 8, name=f"{name}_base")
        last = Signal(name=f"{name}_last")
        mask = Signal(lanes, name=f"{name}_mask")
        with m.If(start):
            m.d.sync += [active.eq(1), row.eq(0), base.eq(0)]
        m.d.comb += last.eq(base + lanes >= n_eff)
        for j in range(lanes):
            m.d.comb += mask[j].eq(base + j < n_eff)
        with m.If(active):
            m.d.sync += [row.eq(row + 1), base.eq(base + lanes)]
            with m.If(last):
                m.d.sync += active.eq(0)
        return active, row, mask, last

    def _sparse_weighting(self, m, scan, v_rd, exp_units):
        """The sparsifier, then one selected slot per cycle (its exponential unit appended to
        ``exp_units``)."""
        topk = self.topk_class(self.topk_config)
        m.submodules.topk = topk
        for j, s in enumerate(scan["scores"]):
            m.d.comb += topk.i_stream.payload.score[j].eq(s)
        # A query is accepted only while the sparsifier collects and no other query is in the
        # front, and the sparsifier keeps collecting until the 'last' beat: it is ready for
        # every beat of the scan, so no stall path is needed.
        m.d.comb += [
            topk.i_stream.valid.eq(scan["valid"]),
            topk.i_stream.payload.mask.eq(scan["mask"]),
            topk.i_stream.payload.last.eq(scan["last"]),
            scan["front_ready"].eq(topk.i_stream.ready),
            scan["front_done"].eq(scan["valid"] & scan["last"]),
        ]
        exp_units.append(self.exp_class(self.config))
        wsum = SlotWeightedSum(self.config, topk.out_layout, exp_units[-1])
        m.submodules.wsum = wsum
        wiring.connect(m, topk.o_stream, wsum.slot)
        # Each query's k waits in a queue from its acceptance until the cycle after its last
        # slot (queries in the front, the sparsifier and the weighting: fewer than
        # max_in_flight). The pop is registered, so the sparsifier's output handshake does not
        # reach the queue's pointers; the weighting takes no slot of the next query before
        # the finished one is released, several cycles later.
        m.submodules.k_queue = k_queue = SyncFIFO(width=len(scan["k_eff"]),
                                                  depth=self.max_in_flight(self.config))
        k_pop = Signal()
        m.d.sync += k_pop.eq(wsum.slot.valid & wsum.slot.ready & wsum.slot.payload.last)
        m.d.comb += [k_queue.w_en.eq(scan["q_take"]), k_queue.w_data.eq(scan["k_eff"]),
                     k_queue.r_en.eq(k_pop), wsum.k.eq(k_queue.r_data)]
        m.d.comb += [v_rd.addr.eq(wsum.v_addr), wsum.v_data.eq(v_rd.data)]
        return wsum

    def _dense_weighting(self, m, scan, v_rd, exp_units):
        """The score buffer and the maximum, then the weighting pass (module docstring)."""
        cfg = self.config
        lanes, sw = cfg.lanes, cfg.score_width
        rows = -(-cfg.n_max // lanes)
        scores, t_valid, n_eff = scan["scores"], scan["valid"], scan["n_eff"]
        m.d.comb += scan["front_ready"].eq(1)

        # Score pass: buffer the scores, track the maximum.
        buf = Memory(shape=lanes * sw, depth=rows, init=[])
        m.submodules.score_buf = buf
        buf_wr = buf.write_port()
        buf_rd = buf.read_port()
        m.d.comb += [buf_wr.addr.eq(scan["row"]), buf_wr.data.eq(Cat(*scores)),
                     buf_wr.en.eq(t_valid)]
        tree = MaxTree(lanes, sw)
        m.submodules.max_tree = tree
        for j, s in enumerate(scores):
            m.d.comb += [tree.s[j].eq(s), tree.mask[j].eq(scan["mask"][j] & t_valid)]
        tree_valid = delay(m, t_valid, tree.latency, "max_valid")[-1]
        tree_last = delay(m, scan["last"], tree.latency, "max_last", data=True)[-1]
        smax = Signal(signed(sw), reset_less=True)  # read only once smax_any is set
        smax_any = Signal()
        with m.If(scan["q_take"]):
            m.d.sync += smax_any.eq(0)
        with m.If(tree_valid & tree.any & (~smax_any | (tree.max > smax))):
            m.d.sync += [smax.eq(tree.max), smax_any.eq(1)]

        # Weighting pass: starts the cycle after the last row has left the tree (s_max is
        # final then, and every buffer row has been written).
        weighing, w_row, w_mask, w_last = self._row_walk(m, tree_valid & tree_last, n_eff, "w")
        m.d.comb += buf_rd.addr.eq(w_row)
        return self._weigh_rows(m, buf_rd, v_rd, smax, weighing, w_mask, w_last, w_row,
                                exp_units)

    def _weigh_rows(self, m, buf_rd, v_rd, smax, weighing, w_mask, w_last, w_row, exp_units):
        """Weighting pass of a dense core: weight lanes (their exponential units appended to
        ``exp_units``) and column sums; returns ``(den, num, done)``."""
        cfg = self.config
        lanes, sw = cfg.lanes, cfg.score_width
        # Buffer data one cycle after its address, registered, then the differences
        # registered (three cycles in all); the value row is addressed L_exp + 2 cycles after
        # the buffer row, so that it arrives with the weights.
        b_valid = delay(m, weighing, 3, "b_valid")[-1]
        b_mask = delay(m, w_mask, 3, "b_mask", data=True)[-1]
        b_last = delay(m, w_last, 3, "b_last", data=True)[-1]
        b_first = delay(m, w_row == 0, 3, "b_first", data=True)[-1]
        m.d.comb += v_rd.addr.eq(delay(m, w_row, self.exp_class.latency + 2, "v_row",
                                       data=True)[-1])
        b_row = Signal(lanes * sw, reset_less=True)
        m.d.sync += b_row.eq(buf_rd.data)
        wlanes = []
        for j in range(lanes):
            exp_units.append(self.exp_class(cfg))
            wl = WeightLane(cfg, exp_units[-1])
            m.submodules[f"wsum{j}"] = wl
            diff = Signal(signed(sw + 1), name=f"diff{j}", reset_less=True)
            m.d.sync += diff.eq(smax - b_row[j * sw:(j + 1) * sw].as_signed())
            m.d.comb += [
                wl.delta.eq(diff[:len(wl.delta)]),  # >= 0 for every valid key
                wl.mask.eq(b_mask[j] & b_valid),
                wl.v.eq(v_rd.data[j * 8 * cfg.d_v:(j + 1) * 8 * cfg.d_v]),
            ]
            wlanes.append(wl)
        lat = wlanes[0].latency
        acc_en = delay(m, b_valid, lat, "acc_en")[-1]
        acc_first = delay(m, b_first, lat, "acc_first", data=True)[-1]
        acc_last = delay(m, b_last, lat, "acc_last", data=True)[-1]

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
        m.d.sync += done.eq(delay(m, acc_en & acc_last, den_sum.latency, "sum_last")[-1])
        return den_sum.acc, num, done

    def _output(self, m, den, num, done, handoff):
        """The output stage: takes the weighting's sums (``handoff``: at ``done``, or once
        the stage is free), one reciprocal, then one output column per cycle; the output
        handshake. Returns ``handoff`` one cycle late, the enable of the copies of the sums
        and selections."""
        cfg = self.config
        r = cfg.recip_bits
        o_busy = Signal()  # the stage holds a query until its output transfer
        waiting = Signal()  # the sums of a finished query wait for the stage
        m.d.comb += handoff.eq((done | waiting) & ~o_busy)
        with m.If(done & o_busy):
            m.d.sync += waiting.eq(1)
        with m.If(handoff):
            m.d.sync += [waiting.eq(0), o_busy.eq(1)]
        # The sums and selections are copied the cycle after the hand-off, from a register (the
        # copy enables reach some two thousand flip-flops; the weighting stage keeps its sums
        # and selections until the next query's first slot has passed its exponential).
        handoff_late = Signal()
        m.d.sync += handoff_late.eq(handoff)
        # The held sums shift toward column 0 while they are scaled, so the scaler takes
        # num_held[0] and no d_v-way selection stands before it.
        num_held = Signal.like(num, name="num_held", reset_less=True)
        scaling = Signal()
        with m.If(handoff_late):
            m.d.sync += num_held.eq(num)
        with m.Elif(scaling):
            m.d.sync += [num_held[c].eq(num_held[c + 1]) for c in range(cfg.d_v - 1)]
        div = RestoringDivider(cfg.den_width, r + 1, quotient_width=cfg.recip_width)
        m.submodules.divider = div
        # recip = floor((2**R + floor(den / 2)) / den): dividend 2**R + floor(den/2), R+1 bits
        # (the divider keeps its operands from the start).
        m.d.comb += [div.start.eq(handoff), div.rem0.eq(0), div.divisor.eq(den),
                     div.low.eq((Const(1, r + 1) << r) | (den >> 1))]
        col = Signal(range(cfg.d_v + 1))
        scaler = Scaler(cfg)
        m.submodules.scale = scaler
        m.d.comb += [scaler.num.eq(num_held[0]), scaler.recip.eq(div.quotient)]
        out_valid = Signal()
        out_regs = Signal(data.ArrayLayout(signed(cfg.out_width), cfg.d_v))
        with m.If(div.done):
            m.d.sync += [scaling.eq(1), col.eq(0)]
        with m.If(scaling):
            m.d.sync += col.eq(col + 1)
            with m.If(col == cfg.d_v - 1):
                m.d.sync += scaling.eq(0)
        # The column's result leaves the scaler's pipeline scaler.latency cycles later.
        s_valid = delay(m, scaling, scaler.latency, "scaled")[-1]
        s_col = delay(m, col, scaler.latency, "scaled_col", data=True)[-1]
        with m.If(s_valid):
            for c in range(cfg.d_v):
                with m.If(s_col == c):
                    m.d.sync += out_regs[c].eq(scaler.out)
            with m.If(s_col == cfg.d_v - 1):
                m.d.sync += out_valid.eq(1)
        m.d.comb += [self.o_stream.valid.eq(out_valid), self.o_stream.payload.out.eq(out_regs)]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += [out_valid.eq(0), o_busy.eq(0)]
        return handoff_late
