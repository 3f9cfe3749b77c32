"""XNOR-popcount score unit: the scoring datapath of binarized Hamming attention.

Every cycle the unit takes one d-bit query and ``lanes`` d-bit keys and produces ``lanes``
scores ``s = 2*popcount(XNOR(q, k)) - d``, the dot product of the two vectors read as +-1
vectors (bit 1 = +1, bit 0 = -1, element j at bit j).

Structure
---------
Each lane is a :class:`ScoreLane` submodule (so hierarchical synthesis reports one lane and
multiplies it by ``lanes``). The unit's lanes first register the XNOR vector (one lookup table
per bit: an input, or a key read from block RAM, reaches a register through one level of
logic); then a lane splits it into ``d/8`` bytes and registers the signed byte score
``2*popcount(byte) - 8`` (in [-8, 8], each bit a function of eight register outputs); each
following stage adds pairs of partial sums (a signed binary adder tree, an odd leftover passing
through a register), until one sum, the score, is left. (The attention cores build their lanes
without the XNOR register, ``xnor_stage = False``: their critical paths lie elsewhere, and
its ``lanes * d`` flip-flops would cost them area and some 8 % of their switching energy.)

Timing
------
* Latency: ``L = 2 + ceil(log2(d / 8))`` cycles from the input transfer to the output being
  valid, independent of ``lanes`` (the lanes work side by side).
* Throughput: one input beat (one query, ``lanes`` keys) per cycle when the output is not
  stalled. ``N`` back-to-back beats leave the unit in ``N + L - 1`` cycles after the first
  transfer.
* Backpressure: the whole pipeline holds while the output is valid and not ready
  (``i_stream.ready = ~o_stream.valid | o_stream.ready``, a combinational path from
  ``o_stream.ready``). Nothing is dropped or duplicated.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.config.score_unit import ScoreUnitConfig

__all__ = ["ScoreLane", "ScoreUnit", "score_lane_latency", "score_unit_latency"]


def score_lane_latency(d: int, xnor_stage: bool = False) -> int:
    """Cycles of a :class:`ScoreLane` of ``d`` bits: ``1 + ceil(log2(d / 8))``, one more with
    ``xnor_stage``."""
    return 1 + int(xnor_stage) + ceil_log2(d // 8)


def score_unit_latency(cfg: ScoreUnitConfig) -> int:
    """Cycles from input transfer to output valid: ``2 + ceil(log2(d / 8))``."""
    return score_lane_latency(cfg.d, xnor_stage=True)


class ScoreLane(wiring.Component):
    """One lane: a pipelined XNOR-popcount of two d-bit vectors.

    Members
    -------
    q, k : In(d)
        Query and key bits.
    en : In(1)
        Pipeline enable; every register of the lane loads only when it is high.
    s : Out(signed(score_width))
        The score of the inputs presented ``latency`` enabled cycles earlier.

    With ``xnor_stage`` the XNOR vector is registered before the byte scores (one more cycle).
    """

    def __init__(self, d: int, score_width: int, xnor_stage: bool = False):
        self._d = d
        self._sw = score_width
        self._xnor_stage = xnor_stage
        super().__init__({
            "q": In(d),
            "k": In(d),
            "en": In(1),
            "s": Out(signed(score_width)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self._d
        # With xnor_stage, the XNOR vector is a register of its own.
        x = Signal(d, reset_less=True)
        if self._xnor_stage:
            with m.If(self.en):
                m.d.sync += x.eq(~(self.q ^ self.k))
        else:
            m.d.comb += x.eq(~(self.q ^ self.k))

        # Signed byte scores 2*popcount - 8, in [-8, 8].
        level: list[Signal] = []
        for b in range(d // 8):
            byte = x[8 * b: 8 * b + 8]
            pc = sum(byte[i] for i in range(8))
            r = Signal(signed(5), name=f"byte{b}", reset_less=True)
            with m.If(self.en):
                m.d.sync += r.eq(Cat(0, pc) - 8)  # 2*pc - 8
            level.append(r)

        # Following stages: pairwise signed sums, one register level each.
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt: list[Signal] = []
            for i in range(0, len(level), 2):
                pair = level[i: i + 2]
                width = max(p.shape().width for p in pair) + (len(pair) == 2)
                r = Signal(signed(width), name=f"sum{depth}_{i // 2}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += r.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                nxt.append(r)
            level = nxt
        m.d.comb += self.s.eq(level[0])
        return m


class ScoreUnit(wiring.Component):
    """``lanes`` parallel XNOR-popcount lanes behind valid/ready streams.

    Parameters
    ----------
    config : ScoreUnitConfig
        ``d`` (bits per vector) and ``lanes``.

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"q": d, "k": ArrayLayout(d, lanes)})))
        One query and ``lanes`` keys per beat.
    o_stream : Out(stream.Signature(StructLayout({"s": ArrayLayout(signed(w), lanes)})))
        The ``lanes`` scores, ``w = bit_length(d) + 1``; lane ``i`` scores key ``k[i]``.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`ScoreUnitConfig`.

    See the module docstring for latency, throughput and backpressure.
    """

    def __init__(self, config: ScoreUnitConfig):
        if not isinstance(config, ScoreUnitConfig):
            self._MustUse__silence = True  # never elaborated: no "unused" warning
            raise TypeError(f"config must be a ScoreUnitConfig, not {config!r}")
        self.config = config
        self.latency = score_unit_latency(config)
        self.latency_formula = "2 + ceil(log2(d / 8)); one beat per cycle"
        self.in_layout, self.out_layout = self.layouts(config)
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    @staticmethod
    def layouts(config: ScoreUnitConfig) -> tuple[data.StructLayout, data.StructLayout]:
        """Input and output payload layouts (for testbenches, without building the unit)."""
        return (
            data.StructLayout({"q": config.d, "k": data.ArrayLayout(config.d, config.lanes)}),
            data.StructLayout({"s": data.ArrayLayout(signed(config.score_width),
                                                     config.lanes)}),
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self.config
        advance = Signal()
        m.d.comb += advance.eq(~self.o_stream.valid | self.o_stream.ready)
        m.d.comb += self.i_stream.ready.eq(advance)

        # Valid bits travel beside the data, one per pipeline register level.
        valid = Signal(self.latency)
        with m.If(advance):
            m.d.sync += valid.eq(Cat(self.i_stream.valid, valid[:-1]))
        m.d.comb += self.o_stream.valid.eq(valid[-1])

        for i in range(cfg.lanes):
            lane = ScoreLane(cfg.d, cfg.score_width, xnor_stage=True)
            m.submodules[f"lane{i}"] = lane
            m.d.comb += [
                lane.q.eq(self.i_stream.payload.q),
                lane.k.eq(self.i_stream.payload.k[i]),
                lane.en.eq(advance),
                self.o_stream.payload.s[i].eq(lane.s),
            ]
        return m

