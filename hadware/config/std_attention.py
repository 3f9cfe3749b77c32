"""Configuration of the standard (int8, dense) attention baseline.

:class:`Int8AttentionFields` holds the fields, the checks and the derived numbers that the two
int8 baselines share (``std_attention`` and ``int8_topk_attention``): int8 dot-product scores and
the fixed-point exponential of :mod:`hadware.golden.std_attention`. Both use the same
exponential unit, so that comparing them isolates what the sparsifier saves.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from hadware.config.attention import signed_width, unsigned_width
from hadware.config.base import BlockConfig, check_int
from hadware.config.binary_dense_attention import SoftmaxSums, check_common

__all__ = ["Q_MAX", "Q_MIN", "Int8AttentionFields", "StdAttentionConfig"]

#: Range of a query or key element: int8.
Q_MIN = -128
Q_MAX = 127

#: Smallest temperature: keeps G below 64 (the golden model's int64 arithmetic). Smaller
#: scales would make ``temperature * s`` vanish for int8 scores anyway.
TEMPERATURE_MIN = 1e-9

#: Significant bits of the scale constant ``c`` (at least): its relative error is below 2**-24.
SCALE_BITS = 24


@dataclasses.dataclass(frozen=True)
class Int8AttentionFields(SoftmaxSums, BlockConfig):
    """Fields and derived numbers shared by the int8 attention baselines (not a block itself).

    Parameters
    ----------
    d : int
        Elements per query and key (int8); 1 to 1024.
    n_max : int
        Most keys (and value rows) per call; 1 to 65536.
    d_v : int
        Elements per value row (int8); 1 to 256.
    lanes : int
        Keys scored per cycle; 1 to ``min(n_max, 64)``. Changes timing and area only.
    temperature : float
        Logit scale tau (for int8 data quantized with scales ``sigma_q``, ``sigma_k``:
        ``sigma_q * sigma_k / sqrt(d)``); between 1e-9 and 1. The default ``2**-13``
        is scales of 1/32 at ``d = 64``.
    exp_frac_bits : int
        F, fractional bits of a softmax weight (``2**F`` stands for 1.0); 1 to 24.
    out_frac_bits : int
        O, fractional bits of the output (units of ``2**-O``); 0 to 16.
    exp_table_bits : int
        P: the table of ``2**(-f)`` has ``2**P + 1`` nodes over ``f`` in ``[0, 1]``; 1 to 10.
    exp_interp_bits : int
        Q, bits of the position between two nodes used by the linear interpolation; 0 (no
        interpolation: the table value at the rounded node) to 16.
    """

    d: int = 64
    n_max: int = 64
    d_v: int = 8
    lanes: int = 4
    temperature: float = 2.0**-13
    exp_frac_bits: int = 19
    out_frac_bits: int = 8
    exp_table_bits: int = 6
    exp_interp_bits: int = 10

    def validate(self) -> None:
        check_common(self, d_what="an integer between 1 and 1024", d_multiple=1,
                     temperature_min=TEMPERATURE_MIN, temperature_max=1.0)
        check_int("exp_table_bits", self.exp_table_bits, lo=1, hi=10)
        check_int("exp_interp_bits", self.exp_interp_bits, lo=0, hi=16)

    # -- scores ------------------------------------------------------------------------------

    @property
    def score_min(self) -> int:
        """Most negative score: ``-128 * 127 * d``."""
        return Q_MIN * Q_MAX * self.d

    @property
    def score_max(self) -> int:
        """Largest score: ``(-128) * (-128) * d = 16384 * d``."""
        return Q_MIN * Q_MIN * self.d

    @property
    def score_width(self) -> int:
        """Bits of a signed score ``s = q . k``."""
        return signed_width(self.score_min, self.score_max)

    @property
    def index_width(self) -> int:
        """Bits of an unsigned key index in ``[0, n_max - 1]``."""
        return unsigned_width(self.n_max - 1)

    @property
    def count_width(self) -> int:
        """Bits of an unsigned key count in ``[0, n_max]``."""
        return unsigned_width(self.n_max)

    @property
    def delta_max(self) -> int:
        """Largest score difference ``s_max - s_j``: ``score_max - score_min = 32640 * d``."""
        return self.score_max - self.score_min

    @property
    def delta_width(self) -> int:
        """Bits of an unsigned score difference."""
        return unsigned_width(self.delta_max)

    # -- the exponential ---------------------------------------------------------------------

    @property
    def exp_index_bits(self) -> int:
        """H = P + Q, fractional bits of the scaled difference ``t``."""
        return self.exp_table_bits + self.exp_interp_bits

    @property
    def exp_scale_shift(self) -> int:
        """G, fractional bits of the scale constant:
        ``max(H + 1, 23 - floor(log2(temperature / ln 2)))``, so that ``c`` has at least 24
        significant bits and the rounding constant ``2**(G - H - 1)`` is an integer."""
        _, e = math.frexp(self.temperature / math.log(2.0))  # value = m * 2**e, 0.5 <= m < 1
        return max(self.exp_index_bits + 1, SCALE_BITS - e)

    @property
    def exp_scale(self) -> int:
        """c = ``floor(temperature / ln(2) * 2**G + 0.5)``, evaluated in float64 exactly as
        ``math.floor(temperature / math.log(2.0) * 2.0**G + 0.5)``."""
        return math.floor(self.temperature / math.log(2.0) * 2.0**self.exp_scale_shift + 0.5)

    @property
    def exp_scale_error(self) -> float:
        """Relative error of ``c / 2**G`` as ``temperature / ln 2`` (below ``2**-24``)."""
        exact = self.temperature / math.log(2.0)
        return abs(self.exp_scale / 2.0**self.exp_scale_shift / exact - 1.0)

    @property
    def exp_table(self) -> tuple[int, ...]:
        """The ``2**P + 1`` nodes ``T[i] = floor(2**F * 2**(-i / 2**P) + 0.5)``, ``i = 0..2**P``,
        evaluated in float64 as ``math.floor(2.0**F * 2.0**(-i / 2**P) + 0.5)``.
        ``T[0] = 2**F`` and ``T[2**P] = 2**(F-1)``; the RTL embeds this tuple."""
        f, n = self.exp_frac_bits, 2**self.exp_table_bits
        return tuple(math.floor(2.0**f * 2.0 ** (-i / n) + 0.5) for i in range(n + 1))

    @property
    def exp_table_width(self) -> int:
        """Bits of a node: ``F + 1``."""
        return self.exp_width

    @property
    def exp_slope_width(self) -> int:
        """Bits of the largest node difference ``T[i] - T[i+1]``."""
        t = self.exp_table
        return unsigned_width(max(a - b for a, b in itertools.pairwise(t)))

    @property
    def exp_shift_max(self) -> int:
        """The integer part of the scaled difference saturates at ``F + 2``: any larger value
        gives a weight of 0 (as ``F + 2`` itself does)."""
        return self.exp_frac_bits + 2

    @property
    def exp_relative_error(self) -> float:
        """Bound eps on the relative error of a weight before the absolute roundings.

        A weight stands for ``w = 2**F * 2**(-u)``, ``u = temperature * delta / ln 2``. Three
        factors: the scale constant (``u`` is off by at most ``u * exp_scale_error``, and weights
        that can be nonzero have ``u < F + 3``); the rounding of ``t`` to ``H`` fractional bits
        (``2**-(H+1)`` in ``u``); the linear interpolation of ``2**(-f)`` between nodes spaced
        ``h = 2**-P`` apart (convex: at most ``(ln 2)**2 / 8 * h**2 * 2**h`` relative; none with
        ``Q = 0``, where ``t`` is rounded to a node). Their product minus 1.
        """
        p, q = self.exp_table_bits, self.exp_interp_bits
        shift = (self.exp_frac_bits + 3) * self.exp_scale_error + 2.0 ** -(self.exp_index_bits + 1)
        h = 2.0**-p
        interp = 0.0 if q == 0 else math.log(2.0) ** 2 / 8.0 * h * h * 2.0**h
        return (1.0 + interp) * 2.0**shift - 1.0

    @property
    def error_bound_ulp(self) -> float:
        """Proven bound on ``|out - reference|`` in units of ``2**-O``; the reference is the exact
        softmax of ``temperature * s`` over the same weighed keys, applied to ``v``.

        Each weight satisfies ``|e_j - w_j| <= eps * w_j + 1`` (eps is
        :attr:`exp_relative_error`; the 1 covers the rounding of the node, 1/2, and of the final
        shift, 1/2); the row maximum weighs ``2**F`` exactly. With ``W = sum w_j`` and
        ``den = sum e_j >= 2**F``: ``sum |e_j - w_j| <= eps * W + n - 1`` and
        ``W <= den + sum |e_j - w_j|``, so
        ``sum |e_j - w_j| / den <= (eps + (n - 1) / 2**F) / (1 - eps)`` with ``n = n_weights``.
        """
        eps = self.exp_relative_error
        ratio = (eps + (self.n_weights - 1) / 2.0**self.exp_frac_bits) / (1.0 - eps)
        return self._bound_from_weight_errors(ratio)


@dataclasses.dataclass(frozen=True)
class StdAttentionConfig(Int8AttentionFields):
    """Configuration of the standard attention baseline: int8 dot-product scores, a softmax over
    all ``n_valid`` scores with the fixed-point exponential, the weighted sum over all value rows.
    The arithmetic is specified in :mod:`hadware.golden.std_attention`; the fields are those of
    :class:`Int8AttentionFields`.

    Raises
    ------
    TypeError
        A parameter has the wrong type.
    ValueError
        A parameter is out of range; the message names it and shows the value.
    """

    block = "std_attention"

    @property
    def n_weights(self) -> int:
        """Entries weighed per query: every valid key, up to ``n_max``."""
        return self.n_max
