"""Configuration of the HAD attention core (binarized scores, top-k, table softmax, weighted sum).

The derived properties below are the numbers the hardware needs: widths of every register, the
exponential table, and the reciprocal precision. They are part of the specification written out in
:mod:`hadware.golden.attention`; the golden model and the RTL both read them from here.
"""

from __future__ import annotations

import dataclasses
import math

from hadware.config.base import BlockConfig, check_float, check_int

__all__ = ["AttentionConfig", "signed_width", "unsigned_width"]

#: Range of a value element: ``v`` is int8.
V_MIN = -128
V_MAX = 127


def unsigned_width(hi: int) -> int:
    """Bits of an unsigned register that holds every integer in ``[0, hi]`` (at least 1)."""
    return max(1, hi.bit_length())


def signed_width(lo: int, hi: int) -> int:
    """Bits of a two's complement register that holds every integer in ``[lo, hi]``."""
    # -2^(w-1) <= lo needs w-1 >= bit_length(-lo-1); hi <= 2^(w-1)-1 needs w-1 >= bit_length(hi).
    return 1 + max((-lo - 1).bit_length() if lo < 0 else 0, max(hi, 0).bit_length())


@dataclasses.dataclass(frozen=True)
class AttentionConfig(BlockConfig):
    """Configuration of the HAD attention core.

    One query row attends to up to ``n_max`` keys: binary scores by XNOR and popcount, the
    ``top_k`` best kept, softmax numerators from a table, and one reciprocal per query scaling the
    weighted sum of the selected value rows. The arithmetic is specified in
    :mod:`hadware.golden.attention`.

    Parameters
    ----------
    d : int
        Bits per query and key (elements in {-1, +1}); a positive multiple of 8, at most 1024.
    n_max : int
        Most keys (and value rows) per call; 1 to 65536.
    top_k : int
        Scores kept per query; 1 to ``n_max``.
    d_v : int
        Elements per value row (int8); 1 to 256.
    lanes : int
        Keys scored in parallel per cycle; 1 to ``min(n_max, 64)``. Changes timing only, never
        a result.
    temperature : float
        Logit scale tau: the softmax runs over ``tau * s`` for the integer score ``s``. Finite
        and greater than 0. Stored as a float (``1`` becomes ``1.0``, so the hash is the same).
    exp_frac_bits : int
        F, fractional bits of the exponential table: ``LUT[0] = 2**F`` stands for 1.0; 1 to 24.
    out_frac_bits : int
        O, fractional bits of the output: ``out`` is in units of ``2**-O``; 0 to 16.

    Accuracy: the output stays within :attr:`error_bound_ulp` units of its last place of the exact
    softmax average over the same selected keys. The bound is at most 1 when
    ``exp_frac_bits >= out_frac_bits + log2(291.5 * (top_k - 1))`` (see :attr:`error_bound_ulp`);
    the default ``exp_frac_bits = 19`` meets it for ``top_k = 8, out_frac_bits = 8``.

    Raises
    ------
    TypeError
        A parameter has the wrong type.
    ValueError
        A parameter is out of range; the message names it and shows the value.
    """

    block = "attention"

    d: int = 64
    n_max: int = 64
    top_k: int = 8
    d_v: int = 8
    lanes: int = 4
    temperature: float = 0.125
    exp_frac_bits: int = 19
    out_frac_bits: int = 8

    def validate(self) -> None:
        check_int("d", self.d, lo=8, hi=1024, multiple_of=8,
                  what="a positive multiple of 8, at most 1024")
        check_int("n_max", self.n_max, lo=1, hi=65536)
        check_int("top_k", self.top_k, lo=1, hi=self.n_max,
                  what=f"an integer between 1 and n_max ({self.n_max})")
        check_int("d_v", self.d_v, lo=1, hi=256)
        lanes_max = min(self.n_max, 64)
        check_int("lanes", self.lanes, lo=1, hi=lanes_max,
                  what=f"an integer between 1 and min(n_max, 64) ({lanes_max})")
        tau = check_float("temperature", self.temperature, lo=0.0, lo_open=True)
        # Normalise 1 to 1.0 so that equal configurations have equal JSON and hash.
        object.__setattr__(self, "temperature", tau)
        check_int("exp_frac_bits", self.exp_frac_bits, lo=1, hi=24)
        check_int("out_frac_bits", self.out_frac_bits, lo=0, hi=16)

    # -- scores and indices ------------------------------------------------------------------

    @property
    def score_width(self) -> int:
        """Bits of a signed score in ``[-d, d]``."""
        return signed_width(-self.d, self.d)

    @property
    def index_width(self) -> int:
        """Bits of an unsigned key index in ``[0, n_max - 1]`` (at least 1)."""
        return unsigned_width(self.n_max - 1)

    @property
    def count_width(self) -> int:
        """Bits of an unsigned key count in ``[0, n_max]`` (``n`` and ``n_valid``)."""
        return unsigned_width(self.n_max)

    @property
    def topk_count_width(self) -> int:
        """Bits of an unsigned count of selected entries in ``[0, top_k]``."""
        return unsigned_width(self.top_k)

    @property
    def top_k_log2(self) -> int:
        """``ceil(log2(top_k))`` (0 for ``top_k = 1``)."""
        return (self.top_k - 1).bit_length()

    # -- exponential table -------------------------------------------------------------------

    @property
    def lut_depth(self) -> int:
        """Entries of the exponential table: ``d + 1`` (addresses 0..d)."""
        return self.d + 1

    @property
    def lut_address_width(self) -> int:
        """Bits of a table address in ``[0, d]``."""
        return unsigned_width(self.d)

    @property
    def lut(self) -> tuple[int, ...]:
        """The exponential table, ``d + 1`` unsigned integers.

        ``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)`` for ``a = 0..d``: round half
        up, evaluated in IEEE float64 exactly as the Python expression
        ``math.floor(2.0**F * math.exp(-2.0 * temperature * a) + 0.5)``. ``LUT[0] = 2**F``; the
        entries never increase with ``a`` and may reach 0. The RTL embeds this tuple rather than
        recomputing it, so model and hardware share every entry.
        """
        scale = 2.0 ** self.exp_frac_bits
        tau = self.temperature
        return tuple(math.floor(scale * math.exp(-2.0 * tau * a) + 0.5)
                     for a in range(self.d + 1))

    @property
    def lut_width(self) -> int:
        """Bits of an unsigned table entry: ``F + 1`` (``LUT[0] = 2**F`` is the largest)."""
        return unsigned_width(2 ** self.exp_frac_bits)

    # -- weighted sum and reciprocal ---------------------------------------------------------

    @property
    def den_min(self) -> int:
        """Smallest denominator: ``2**F`` (the first selected entry always weighs ``LUT[0]``)."""
        return 2 ** self.exp_frac_bits

    @property
    def den_max(self) -> int:
        """Largest denominator: ``top_k * 2**F``."""
        return self.top_k * 2 ** self.exp_frac_bits

    @property
    def den_width(self) -> int:
        """Bits of the unsigned denominator ``den = sum(e_i)`` in ``[2**F, top_k * 2**F]``."""
        return unsigned_width(self.den_max)

    @property
    def num_min(self) -> int:
        """Most negative numerator: ``-128 * den_max``."""
        return V_MIN * self.den_max

    @property
    def num_max(self) -> int:
        """Largest numerator: ``127 * den_max``."""
        return V_MAX * self.den_max

    @property
    def num_width(self) -> int:
        """Bits of a signed numerator ``num_c = sum(e_i * v[idx_i, c])``."""
        return signed_width(self.num_min, self.num_max)

    @property
    def recip_bits(self) -> int:
        """R, fractional bits of the reciprocal: ``O + F + ceil(log2(top_k)) + 10``."""
        return self.out_frac_bits + self.exp_frac_bits + self.top_k_log2 + 10

    @property
    def out_shift(self) -> int:
        """S, the final right shift: ``R - O = F + ceil(log2(top_k)) + 10`` (at least 11)."""
        return self.recip_bits - self.out_frac_bits

    @property
    def recip_max(self) -> int:
        """Largest reciprocal, at ``den = 2**F``: exactly ``2**(R - F)``."""
        return self._recip_of(self.den_min)

    @property
    def recip_min(self) -> int:
        """Smallest reciprocal, at ``den = top_k * 2**F``."""
        return self._recip_of(self.den_max)

    @property
    def recip_width(self) -> int:
        """Bits of the unsigned reciprocal: ``R - F + 1``."""
        return unsigned_width(self.recip_max)

    def _recip_of(self, den: int) -> int:
        return ((1 << self.recip_bits) + den // 2) // den

    @property
    def product_max_magnitude(self) -> int:
        """Bound on ``den * recip``: ``2**R + den_max // 2``.

        ``recip = floor((2**R + floor(den/2)) / den)`` gives ``den * recip <= 2**R + den // 2``,
        and ``|num_c| <= 128 * den`` (127 on the positive side) because ``num_c`` is a weighted
        sum of int8 values with weights summing to ``den``.
        """
        return (1 << self.recip_bits) + self.den_max // 2

    @property
    def product_min(self) -> int:
        """Most negative ``num_c * recip``: ``-128 * (2**R + den_max // 2)``."""
        return V_MIN * self.product_max_magnitude

    @property
    def product_max(self) -> int:
        """Largest ``num_c * recip``: ``127 * (2**R + den_max // 2)``."""
        return V_MAX * self.product_max_magnitude

    @property
    def product_width(self) -> int:
        """Bits of the signed product ``num_c * recip`` and of the product plus the rounding
        constant ``2**(S-1)`` (one register holds both without overflow)."""
        return signed_width(self.product_min, self.product_max + (1 << (self.out_shift - 1)))

    # -- output ------------------------------------------------------------------------------

    @property
    def out_min(self) -> int:
        """Most negative output, ``-128 * 2**O`` (the int8 minimum in units of ``2**-O``)."""
        return (self.product_min + (1 << (self.out_shift - 1))) >> self.out_shift

    @property
    def out_max(self) -> int:
        """Largest output, ``127 * 2**O``."""
        return (self.product_max + (1 << (self.out_shift - 1))) >> self.out_shift

    @property
    def out_width(self) -> int:
        """Bits of a signed output element: ``8 + O``."""
        return signed_width(self.out_min, self.out_max)

    @property
    def error_bound_ulp(self) -> float:
        """Proven bound on ``|out - reference|`` in units of ``2**-O``, where the reference is the
        exact softmax of ``temperature * s`` over the same selected keys, applied to ``v``.

        The bound is the sum of three terms:

        * final rounding: ``1/2``;
        * reciprocal rounding: ``|recip - 2**R/den| <= 1/2`` and ``|num_c| <= 128 * den``, so
          at most ``2**O * 128 * den / 2 / 2**R <= top_k * 2**(O+F+6-R) <= 1/16``;
        * table rounding: each ``e_i`` is off by at most ``1/2`` from ``2**F * exp(...)``, except
          the top entries (``LUT[0]`` is exact); the weighted mean then moves by at most
          ``sum |delta_i| * (max v - min v) / den <= (top_k - 1) / 2 * 255 / 2**F``, times ``2**O``.

        It is at most 1 when ``127.5 * (top_k - 1) * 2**(O - F) <= 7/16``, that is
        ``2**(F - O) >= 291.43 * (top_k - 1)``.
        """
        o, f, r = self.out_frac_bits, self.exp_frac_bits, self.recip_bits
        recip_term = self.top_k * 2.0 ** (o + f + 6 - r)
        lut_term = (self.top_k - 1) * 0.5 * (V_MAX - V_MIN) * 2.0 ** (o - f)
        return 0.5 + recip_term + lut_term
