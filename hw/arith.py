"""Arithmetic units and small helpers of the MLP datapath (:mod:`hadware.hw.bitlinear`,
:mod:`hadware.hw.glu`): the pipelined DSP-sized multiplier, the sequential integer square root,
and the bit-length, rounding and saturation expressions of the specification
(:mod:`hadware.golden.mlp`). The divider is :class:`hadware.hw.divider.RestoringDivider`."""

from __future__ import annotations

from typing import Any

from amaranth import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hadware.spec.widths import DSP_PIECE

__all__ = ["IntSqrt", "Multiplier", "bitlen", "rhu_const", "saturate", "upto"]


def upto(n: int) -> range:
    """Shape of a counter or address below ``n``, at least one bit wide (Verilog has no
    zero-width vectors)."""
    return range(max(n, 2))


def bitlen(v):
    """``bitlen(v)`` (position of the leading one plus one, 0 for 0) as a log-depth tree."""
    w = len(v)
    if w == 1:
        return v[0]
    h = 1 << ((w - 1).bit_length() - 1)  # largest power of two below w
    return Mux(v[h:].any(), bitlen(v[h:]) + h, bitlen(v[:h]))


def tree(terms: list, op):
    """``terms`` combined pairwise by ``op`` level by level, a balanced tree of
    ``ceil(log2(len(terms)))`` levels (an odd term passes up to the next level) rather than the
    chain a left fold would build for synthesis to rebalance."""
    level = list(terms)
    while len(level) > 1:
        level = [op(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def saturate(v, v_bits: int, bits: int):
    """``SAT(v, bits)`` of a signed ``v_bits``-bit value (no logic when it always fits)."""
    if bits >= v_bits:
        return v
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(v > hi, hi, Mux(v < lo, lo, v))


def saturates(v, v_bits: int, bits: int):
    """1 when ``SAT(v, bits)`` of a signed ``v_bits``-bit value differs from ``v`` (a constant
    0 when it always fits)."""
    if bits >= v_bits:
        return Const(0, 1)
    return (v > (1 << (bits - 1)) - 1) | (v < -(1 << (bits - 1)))


def rhu_const(v, s: int):
    """``RHU(v, s)`` for a constant shift ``s >= 0``."""
    return v if s == 0 else (v + (1 << (s - 1))) >> s


class Multiplier(wiring.Component):
    """A pipelined multiplier ``p = a * b`` in its own module (hierarchical synthesis keeps it
    apart).

    Each operand is cut into pieces that fit an 18 x 18 DSP multiplier (17-bit unsigned low
    pieces, the rest with the operand's signedness); the partial products are registered while
    ``en`` is high, and ``p`` is their shifted sum: the product of the ``a``, ``b`` presented at
    the previous enabled cycle. ``p`` is ``a_width + b_width`` bits, signed when either operand
    is, which holds every product exactly.
    """

    #: Widest operand piece (an 18 x 18 signed DSP multiplier takes 17 unsigned bits + sign).
    PIECE = DSP_PIECE

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        width = a_shape.width + b_shape.width
        p_shape = signed(width) if (a_shape.signed or b_shape.signed) else unsigned(width)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "en": In(1, init=1),
                          "p": Out(p_shape)})

    @classmethod
    def piece_count(cls, width: int, piece: int = PIECE) -> int:
        """Pieces of a ``width``-bit operand cut into ``piece``-bit pieces: 1 up to ``piece + 1``
        bits, else ``1 + ceil((width - piece - 1) / piece)``."""
        return 1 if width <= piece + 1 else 1 - (-(width - piece - 1) // piece)

    @classmethod
    def pieces(cls, v, piece: int = PIECE) -> list[tuple[Any, int]]:
        """``v`` cut into ``(value, shift)`` pieces, lowest first: unsigned ``piece``-bit pieces,
        the top one up to ``piece + 1`` bits with ``v``'s signedness, so that
        ``v == sum(value << shift)`` (:meth:`piece_count` of them)."""
        shape = v.shape()
        if shape.width <= piece + 1:
            return [(v, 0)]
        out = []
        pos = 0
        while shape.width - pos > piece + 1:
            out.append((v[pos:pos + piece], pos))
            pos += piece
        top = v[pos:]
        out.append((top.as_signed() if shape.signed else top, pos))
        return out

    def elaborate(self, platform) -> Module:
        m = Module()
        total = 0
        for i, (pa, sa) in enumerate(self.pieces(self.a)):
            for j, (pb, sb) in enumerate(self.pieces(self.b)):
                prod = pa * pb
                r = Signal(prod.shape(), name=f"pp{i}_{j}", reset_less=True)
                with m.If(self.en):
                    m.d.sync += r.eq(prod)
                total = total + (r << (sa + sb))
        m.d.comb += self.p.eq(total)
        return m


class IntSqrt(wiring.Component):
    """Sequential integer square root ``root = floor(sqrt(value))`` of a ``2*width``-bit value,
    digit by digit (two input bits, one root bit per cycle). ``done`` pulses ``width + 1``
    cycles after ``start``; ``root`` is held until the next ``start``."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "start": In(1),
            "value": In(2 * width),
            "root": Out(width),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        w = self.width
        rest = Signal(2 * w, reset_less=True)  # input bits not yet used, top first
        rem = Signal(w + 2, reset_less=True)   # value so far - root**2, at most 2*root
        steps = Signal(range(w + 1))
        cand = Signal(w + 3)
        trial = Signal(w + 3)
        fits = Signal()
        m.d.comb += [
            cand.eq(Cat(rest[-2:], rem)),
            trial.eq(Cat(Const(1, 1), Const(0, 1), self.root)),
            fits.eq(cand >= trial),
        ]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rest.eq(self.value), rem.eq(0), self.root.eq(0), steps.eq(w)]
        with m.Elif(steps != 0):
            m.d.sync += [
                rem.eq(Mux(fits, cand - trial, cand)),
                rest.eq(rest << 2),
                self.root.eq(Cat(fits, self.root[:-1])),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += self.done.eq(1)
        return m
