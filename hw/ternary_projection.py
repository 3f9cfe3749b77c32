"""Ternary projection datapath: ``lanes`` ternary weights per cycle into a pipelined adder tree.

This is the multiplier-free core of a BitLinear layer (step L7 of :mod:`hadware.golden.mlp`):
``acc_j = sum_i T[j, i] * q_i``. Every cycle the unit takes ``lanes`` 2-bit weight codes and
``lanes`` signed activations; each code selects ``+q``, ``-q`` or nothing (a multiplexer, no
multiplier), a pipelined binary adder tree sums the ``lanes`` selections, and an accumulator
adds the group sums of one output row.

Codes are decoded with the constants of packing layout v1
(:data:`hadware.spec.ternary.LAYOUT_V1`): lane ``l`` reads bits
``[CODE_BITS*l + CODE_BITS - 1 : CODE_BITS*l]`` (slot order of a ROM word), ``CODE_PLUS``
selects ``+q``, ``CODE_MINUS`` selects ``-q``; ``CODE_ZERO`` and the invalid code select 0.

Timing
------
Latency ``2 + ceil(log2(lanes))`` enabled cycles from the last group of a row to ``acc_valid``:
one register after the selection, one per adder-tree level, one for the accumulator. Every
register loads only while ``en`` is high, so the whole pipeline stalls with ``en``; one group
per enabled cycle.

Activations must lie in ``[-(2**(act_bits-1) - 1), 2**(act_bits-1) - 1]`` (the BitLinear
quantizer guarantees ``|q| <= 127``), so that ``-q`` fits and ``|acc| < 2**(acc_bits-1)`` with
``acc_bits = act_bits + ceil(log2(fan_in))``.

:func:`hadware.synth.projection.synthesize_projection` synthesizes this unit alone (Yosys, iCE40
and ECP5 cells and the generic CMOS area), which shows that the projection maps to no DSP
multiplier block.
"""

from __future__ import annotations

from typing import Any

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hadware.spec.ternary import CODE_BITS, CODE_MINUS, CODE_PLUS

__all__ = ["Int8Projection", "TernaryProjection", "decode_code", "projection_for"]


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r} ({type(value).__name__})")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer between {lo} and {hi}, not {value!r}")


def decode_code(code) -> tuple:
    """``(plus, minus)`` selection bits of one ``CODE_BITS``-bit code (Amaranth values)."""
    return code == CODE_PLUS, code == CODE_MINUS


class TernaryProjection(wiring.Component):
    """``lanes`` ternary weights per cycle: selection, pipelined adder tree, row accumulator.

    Parameters
    ----------
    lanes : int
        Weights (and activations) per cycle, 1 to 64.
    fan_in : int
        Inputs per output row; a multiple of ``lanes``, at most 65536. Sets ``acc_bits``.
    act_bits : int
        Signed width of an activation, 2 to 24 (8 for the BitLinear ``q``).

    Members
    -------
    en : In(1)
        Pipeline enable (every register of the unit loads only when it is high).
    valid, first, last : In(1)
        The inputs hold a group; it is the first / last group of an output row.
    codes : In(CODE_BITS * lanes)
        Packed weight codes, lane ``l`` at bits ``[CODE_BITS*l + CODE_BITS - 1 : CODE_BITS*l]``.
    act : In(ArrayLayout(signed(act_bits), lanes))
        The activations of the group.
    acc : Out(signed(acc_bits))
        The row sum; valid while ``acc_valid`` is high.
    acc_valid : Out(1)
        High for one enabled cycle when ``acc`` holds a complete row.

    Raises
    ------
    TypeError, ValueError
        For a parameter of the wrong type or out of range (the message names it).
    """

    #: Bits of one weight code, and the signed width of one lane's ``code * q``.
    code_bits = CODE_BITS

    def product_bits(self, act_bits: int) -> int:
        """Signed width of one lane's selection for activations of ``act_bits`` bits."""
        return act_bits

    def select(self, m: Module, lane: int, code, q, en) -> Signal:
        """Lane ``lane``'s registered ``code * q``: ``+q``, ``-q`` or 0 (a multiplexer)."""
        plus, minus = decode_code(code)
        sel = Signal(signed(self.act_bits), name=f"sel{lane}", reset_less=True)
        with m.If(en):
            m.d.sync += sel.eq(Mux(plus, q, Mux(minus, -q, 0)))
        return sel

    def __init__(self, lanes: int, fan_in: int, act_bits: int = 8):
        try:
            _check_int("lanes", lanes, 1, 64)
            _check_int("fan_in", fan_in, lanes, 65536)
            if fan_in % lanes:
                raise ValueError(f"fan_in must be a multiple of lanes ({lanes}), not {fan_in!r}")
            _check_int("act_bits", act_bits, 2, 24)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never elaborated: no "unused" warning
            raise
        self.lanes = lanes
        self.fan_in = fan_in
        self.act_bits = act_bits
        self.tree_depth = ceil_log2(lanes)
        self.acc_bits = self.product_bits(act_bits) + ceil_log2(fan_in)
        #: Enabled cycles from the last group of a row to ``acc_valid``.
        self.latency = 2 + self.tree_depth
        super().__init__({
            "en": In(1),
            "valid": In(1),
            "first": In(1),
            "last": In(1),
            "codes": In(self.code_bits * lanes),
            "act": In(data.ArrayLayout(signed(act_bits), lanes)),
            "acc": Out(signed(self.acc_bits)),
            "acc_valid": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lanes, ab = self.lanes, self.act_bits
        en = self.en

        # Control bits travel beside the data, one register per level.
        depth = 1 + self.tree_depth
        valid = [Signal(name=f"valid{i}") for i in range(depth)]
        first = [Signal(name=f"first{i}", reset_less=True) for i in range(depth)]
        last = [Signal(name=f"last{i}", reset_less=True) for i in range(depth)]
        with m.If(en):
            m.d.sync += [valid[0].eq(self.valid), first[0].eq(self.first),
                         last[0].eq(self.last)]
            for i in range(1, depth):
                m.d.sync += [valid[i].eq(valid[i - 1]), first[i].eq(first[i - 1]),
                             last[i].eq(last[i - 1])]

        # Selection: code * q per lane, registered.
        cb = self.code_bits
        level = [self.select(m, lane, self.codes[cb * lane: cb * (lane + 1)], self.act[lane], en)
                 for lane in range(lanes)]
        pb = self.product_bits(ab)

        # Adder tree: pairwise sums, one register level each; an odd leftover passes through.
        d = 0
        while len(level) > 1:
            d += 1
            nxt: list[Signal] = []
            for i in range(0, len(level), 2):
                pair = level[i: i + 2]
                width = pb + d
                r = Signal(signed(width), name=f"sum{d}_{i // 2}", reset_less=True)
                with m.If(en):
                    m.d.sync += r.eq(pair[0] + pair[1] if len(pair) == 2 else pair[0])
                nxt.append(r)
            level = nxt
        group_sum = level[0]

        acc = Signal(signed(self.acc_bits), reset_less=True)
        acc_valid = Signal()
        with m.If(en):
            m.d.sync += acc_valid.eq(valid[-1] & last[-1])
            with m.If(valid[-1]):
                m.d.sync += acc.eq(Mux(first[-1], group_sum, acc + group_sum))
        m.d.comb += [self.acc.eq(acc), self.acc_valid.eq(acc_valid)]
        return m


class Int8Projection(TernaryProjection):
    """The standard baseline's projection: ``lanes`` int8 weight codes (8-bit two's
    complement, :data:`hadware.spec.weights.INT8_LAYOUT`) per cycle, each multiplying its
    activation (one ``8 x act_bits`` multiplier per lane), then the same adder tree and
    accumulator, the same latency. ``acc_bits = act_bits + 7 + ceil(log2(fan_in))``."""

    code_bits = 8

    def product_bits(self, act_bits: int) -> int:
        return act_bits + 7

    def select(self, m: Module, lane: int, code, q, en) -> Signal:
        sel = Signal(signed(self.product_bits(self.act_bits)), name=f"mul{lane}",
                     reset_less=True)
        with m.If(en):
            m.d.sync += sel.eq(code.as_signed() * q)
        return sel


def projection_for(weights: str) -> type[TernaryProjection]:
    """The projection class of a weight format (``"ternary"`` or ``"int8"``)."""
    return {"ternary": TernaryProjection, "int8": Int8Projection}[weights]
