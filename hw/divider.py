"""The project's one divider: sequential restoring division, one quotient bit per cycle.

Used for the attention cores' per-query reciprocal and for the MLP's BitLinear (the
reciprocal of the absmax and the output scale).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RestoringDivider"]


class RestoringDivider(wiring.Component):
    """Sequential restoring division ``quotient = floor((rem0 * 2**q_bits + low) / divisor)``.

    Parameters
    ----------
    width : int
        Bits of ``rem0`` and ``divisor``.
    q_bits : int
        Quotient bits computed (cycles of work).
    quotient_width : int, optional
        Bits of the ``quotient`` register (default ``q_bits``): the low bits of the quotient are
        kept, so the caller guarantees that the quotient fits.

    Timing: ``start`` loads the operands; the unit then makes one quotient bit per cycle, most
    significant first, and ``done`` pulses ``q_bits + 1`` cycles after ``start`` with
    ``quotient`` valid (held until the next ``start``). Precondition ``rem0 < divisor`` (so the
    quotient fits ``q_bits``). A zero divisor gives all ones.

    Raises
    ------
    ValueError
        If a width is not a positive integer or ``quotient_width`` exceeds ``q_bits``.
    """

    def __init__(self, width: int, q_bits: int, quotient_width: int | None = None):
        quotient_width = q_bits if quotient_width is None else quotient_width
        for name, value in (("width", width), ("q_bits", q_bits),
                            ("quotient_width", quotient_width)):
            if not isinstance(value, int) or value < 1:
                self._MustUse__silence = True
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if quotient_width > q_bits:
            self._MustUse__silence = True
            raise ValueError(f"quotient_width must be at most q_bits ({q_bits}), "
                             f"not {quotient_width}")
        self.width = width
        self.q_bits = q_bits
        self.latency = q_bits + 1
        super().__init__({
            "start": In(1),
            "rem0": In(width),
            "low": In(q_bits),
            "divisor": In(width),
            "quotient": Out(quotient_width),
            "done": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        w, qb = self.width, self.q_bits
        rem = Signal(w, reset_less=True)
        low = Signal(qb, reset_less=True)
        divisor = Signal(w, reset_less=True)
        steps = Signal(range(qb + 1))
        trial = Signal(w + 1)
        fits = Signal()
        m.d.comb += [trial.eq(Cat(low[-1], rem)), fits.eq(trial >= divisor)]
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [rem.eq(self.rem0), low.eq(self.low), divisor.eq(self.divisor),
                         steps.eq(qb)]
        with m.Elif(steps != 0):
            m.d.sync += [
                rem.eq(Mux(fits, trial - divisor, trial)),
                low.eq(low << 1),
                self.quotient.eq(Cat(fits, self.quotient[:-1])),
                steps.eq(steps - 1),
            ]
            with m.If(steps == 1):
                m.d.sync += self.done.eq(1)
        return m
