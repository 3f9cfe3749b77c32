"""The softmax tables and constants the attention cores embed, and the golden models read.

Two exponentials exist (``exp`` part of an attention variant):

* ``table``: the HAD table over half score differences of binarized scores,
  :func:`had_table`;
* ``fixed``: the fixed-point ``2**(-u)`` of the int8 designs, from the scale constant
  :func:`exp2_scale` and the nodes :func:`exp2_nodes` (its arithmetic is specified in
  :mod:`hadware.golden.attention_core`).

Every table is evaluated in IEEE float64 exactly as the expression quoted in its docstring, so
that the RTL (which embeds the integers) and the golden models share every entry.
"""

from __future__ import annotations

import math

__all__ = ["SCALE_BITS", "exp2_nodes", "exp2_scale", "exp2_scale_shift", "had_table"]

#: Significant bits of the fixed exponential's scale constant ``c`` (at least): its relative
#: error is below ``2**-24``.
SCALE_BITS = 24


def had_table(d: int, temperature: float, frac_bits: int) -> tuple[int, ...]:
    """``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)`` for ``a = 0..d``.

    Evaluated as ``math.floor(2.0**F * math.exp(-2.0 * temperature * a) + 0.5)``: round half
    up. ``LUT[0] = 2**F``; the entries never increase with ``a`` and may reach 0. ``a`` is half
    the difference of two binarized scores, ``(s_max - s) / 2``.
    """
    scale = 2.0**frac_bits
    return tuple(math.floor(scale * math.exp(-2.0 * temperature * a) + 0.5)
                 for a in range(d + 1))


def exp2_scale_shift(temperature: float, index_bits: int) -> int:
    """G, fractional bits of the scale constant:
    ``max(H + 1, 24 - e)`` where ``temperature / ln 2 = m * 2**e``, ``0.5 <= m < 1``, so that
    ``c`` has at least 24 significant bits and ``2**(G - H - 1)`` is an integer."""
    _, e = math.frexp(temperature / math.log(2.0))
    return max(index_bits + 1, SCALE_BITS - e)


def exp2_scale(temperature: float, shift: int) -> int:
    """c = ``floor(temperature / ln(2) * 2**G + 0.5)``, evaluated in float64 exactly as
    ``math.floor(temperature / math.log(2.0) * 2.0**G + 0.5)``."""
    return math.floor(temperature / math.log(2.0) * 2.0**shift + 0.5)


def exp2_nodes(frac_bits: int, table_bits: int) -> tuple[int, ...]:
    """The ``2**P + 1`` nodes ``T[i] = floor(2**F * 2**(-i / 2**P) + 0.5)``, ``i = 0..2**P``,
    evaluated as ``math.floor(2.0**F * 2.0 ** (-i / 2**P) + 0.5)``.
    ``T[0] = 2**F`` and ``T[2**P] = 2**(F-1)``."""
    n = 2**table_bits
    return tuple(math.floor(2.0**frac_bits * 2.0 ** (-i / n) + 0.5) for i in range(n + 1))
