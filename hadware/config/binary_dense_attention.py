"""Configuration of the binarized dense attention baseline (HAD scores and table, no top-k).

It also holds :class:`SoftmaxSums`, the widths of the softmax sums, the reciprocal and the
output shared by the three attention baselines (``binary_dense_attention``, ``std_attention``,
``int8_topk_attention``). They follow the HAD core's arithmetic (:mod:`hadware.golden.attention`,
steps 5 to 7) with ``top_k`` replaced by the number of entries a query weighs, ``n_weights``.
"""

from __future__ import annotations

import dataclasses
import math

from hadware.config.attention import V_MAX, V_MIN, signed_width, unsigned_width
from hadware.config.base import BlockConfig, check_float, check_int

__all__ = ["BinaryDenseAttentionConfig", "SoftmaxSums"]


class SoftmaxSums:
    """Derived widths of ``den``, ``num``, the reciprocal and the output (a mixin).

    A block using it has ``exp_frac_bits`` (F), ``out_frac_bits`` (O), ``d_v`` and the property
    :attr:`n_weights`: the most entries one query weighs (``n_max`` for a dense softmax,
    ``top_k`` after the sparsifier). Every weight lies in ``[0, 2**F]`` and the largest weight of
    a query is exactly ``2**F``, so ``2**F <= den <= n_weights * 2**F``.
    """

    exp_frac_bits: int
    out_frac_bits: int

    @property
    def n_weights(self) -> int:  # pragma: no cover - every block overrides it
        raise NotImplementedError

    @property
    def weights_log2(self) -> int:
        """``ceil(log2(n_weights))`` (0 for one entry)."""
        return (self.n_weights - 1).bit_length()

    @property
    def exp_width(self) -> int:
        """Bits of an unsigned weight in ``[0, 2**F]``: ``F + 1``."""
        return unsigned_width(2 ** self.exp_frac_bits)

    @property
    def den_min(self) -> int:
        """Smallest denominator: ``2**F`` (the row maximum always weighs ``2**F``)."""
        return 2 ** self.exp_frac_bits

    @property
    def den_max(self) -> int:
        """Largest denominator: ``n_weights * 2**F``."""
        return self.n_weights * 2 ** self.exp_frac_bits

    @property
    def den_width(self) -> int:
        """Bits of the unsigned denominator."""
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
        """Bits of a signed numerator ``num_c = sum(e_j * v[j, c])``."""
        return signed_width(self.num_min, self.num_max)

    @property
    def recip_bits(self) -> int:
        """R, fractional bits of the reciprocal: ``O + F + ceil(log2(n_weights)) + 10``."""
        return self.out_frac_bits + self.exp_frac_bits + self.weights_log2 + 10

    @property
    def out_shift(self) -> int:
        """S, the final right shift: ``R - O``."""
        return self.recip_bits - self.out_frac_bits

    def _recip_of(self, den: int) -> int:
        return ((1 << self.recip_bits) + den // 2) // den

    @property
    def recip_max(self) -> int:
        """Largest reciprocal, at ``den = 2**F``: ``2**(R - F)``."""
        return self._recip_of(self.den_min)

    @property
    def recip_min(self) -> int:
        """Smallest reciprocal, at ``den = den_max``."""
        return self._recip_of(self.den_max)

    @property
    def recip_width(self) -> int:
        """Bits of the unsigned reciprocal."""
        return unsigned_width(self.recip_max)

    @property
    def product_max_magnitude(self) -> int:
        """Bound on ``den * recip``: ``2**R + den_max // 2``."""
        return (1 << self.recip_bits) + self.den_max // 2

    @property
    def product_min(self) -> int:
        """Most negative ``num_c * recip``."""
        return V_MIN * self.product_max_magnitude

    @property
    def product_max(self) -> int:
        """Largest ``num_c * recip``."""
        return V_MAX * self.product_max_magnitude

    @property
    def product_width(self) -> int:
        """Bits of the signed ``num_c * recip`` plus the rounding constant ``2**(S-1)``."""
        return signed_width(self.product_min, self.product_max + (1 << (self.out_shift - 1)))

    @property
    def out_min(self) -> int:
        """Most negative output, ``-128 * 2**O``."""
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
    def recip_error_ulp(self) -> float:
        """Bound on what the rounding of the reciprocal adds to ``out``, in units of ``2**-O``:
        ``|recip - 2**R / den| <= 1/2`` and ``|num_c| <= 128 * den`` give at most
        ``2**O * 64 * den / 2**R <= n_weights * 2**(O + F + 6 - R) <= 1/16``."""
        o, f, r = self.out_frac_bits, self.exp_frac_bits, self.recip_bits
        return self.n_weights * 2.0 ** (o + f + 6 - r)

    def _bound_from_weight_errors(self, ratio: float) -> float:
        """The output error bound when ``sum_j |e_j - w_j| <= ratio * den``.

        With ``w_j`` the exact weights and ``e_j`` the computed ones (both in units of
        ``2**-F``), the computed average minus the exact one is
        ``sum_j (e_j - w_j) * (v_j - exact) / den`` and ``|v_j - exact| <= 255``. Adding the final
        rounding (1/2) and :attr:`recip_error_ulp` gives the bound in units of ``2**-O``.
        """
        return 0.5 + self.recip_error_ulp + (V_MAX - V_MIN) * 2.0 ** self.out_frac_bits * ratio


def check_common(cfg, *, d_what: str, d_multiple: int, temperature_min: float | None = None,
                 temperature_max: float | None = None) -> None:
    """Validation of the fields every attention baseline has (d, n_max, d_v, lanes,
    temperature, exp_frac_bits, out_frac_bits), in that order, as the HAD core checks them.
    The temperature must be greater than 0, or at least ``temperature_min`` when given."""
    check_int("d", cfg.d, lo=d_multiple, hi=1024, multiple_of=d_multiple, what=d_what)
    check_int("n_max", cfg.n_max, lo=1, hi=65536)
    check_int("d_v", cfg.d_v, lo=1, hi=256)
    lanes_max = min(cfg.n_max, 64)
    check_int("lanes", cfg.lanes, lo=1, hi=lanes_max,
              what=f"an integer between 1 and min(n_max, 64) ({lanes_max})")
    if temperature_min is None:
        tau = check_float("temperature", cfg.temperature, lo=0.0, lo_open=True,
                          hi=temperature_max)
    else:
        tau = check_float("temperature", cfg.temperature, lo=temperature_min,
                          hi=temperature_max)
    # Normalise 1 to 1.0 so that equal configurations have equal JSON and hash.
    object.__setattr__(cfg, "temperature", tau)
    check_int("exp_frac_bits", cfg.exp_frac_bits, lo=1, hi=24)
    check_int("out_frac_bits", cfg.out_frac_bits, lo=0, hi=16)


@dataclasses.dataclass(frozen=True)
class BinaryDenseAttentionConfig(SoftmaxSums, BlockConfig):
    """Configuration of the binarized dense attention baseline.

    The HAD core without its sparsifier: XNOR-popcount scores, then the softmax over **all**
    ``n_valid`` scores of a query with the HAD table ``LUT[(s_max - s_j) / 2]``, and the weighted
    sum over all value rows. The arithmetic is specified in
    :mod:`hadware.golden.binary_dense_attention`.

    Parameters
    ----------
    d : int
        Bits per query and key (elements in {-1, +1}); a positive multiple of 8, at most 1024.
    n_max : int
        Most keys (and value rows) per call; 1 to 65536.
    d_v : int
        Elements per value row (int8); 1 to 256.
    lanes : int
        Keys scored and weighted in parallel per cycle; 1 to ``min(n_max, 64)``. Changes timing
        and area only, never a result.
    temperature : float
        Logit scale tau: the softmax runs over ``tau * s``. Finite and greater than 0.
    exp_frac_bits : int
        F, fractional bits of the exponential table (``LUT[0] = 2**F`` stands for 1.0); 1 to 24.
    out_frac_bits : int
        O, fractional bits of the output (units of ``2**-O``); 0 to 16.

    Raises
    ------
    TypeError
        A parameter has the wrong type.
    ValueError
        A parameter is out of range; the message names it and shows the value.
    """

    block = "binary_dense_attention"

    d: int = 64
    n_max: int = 64
    d_v: int = 8
    lanes: int = 4
    temperature: float = 0.125
    exp_frac_bits: int = 19
    out_frac_bits: int = 8

    def validate(self) -> None:
        check_common(self, d_what="a positive multiple of 8, at most 1024", d_multiple=8)

    @property
    def n_weights(self) -> int:
        """Entries weighed per query: every valid key, up to ``n_max``."""
        return self.n_max

    @property
    def score_width(self) -> int:
        """Bits of a signed score in ``[-d, d]``."""
        return signed_width(-self.d, self.d)

    @property
    def count_width(self) -> int:
        """Bits of an unsigned key count in ``[0, n_max]``."""
        return unsigned_width(self.n_max)

    @property
    def lut_depth(self) -> int:
        """Entries of the exponential table: ``d + 1``."""
        return self.d + 1

    @property
    def lut_address_width(self) -> int:
        """Bits of a table address in ``[0, d]``."""
        return unsigned_width(self.d)

    @property
    def lut(self) -> tuple[int, ...]:
        """The HAD table: ``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)``, ``a = 0..d``,
        evaluated in float64 as ``math.floor(2.0**F * math.exp(-2.0 * temperature * a) + 0.5)``
        (the same expression as :attr:`hadware.config.attention.AttentionConfig.lut`)."""
        scale = 2.0 ** self.exp_frac_bits
        tau = self.temperature
        return tuple(math.floor(scale * math.exp(-2.0 * tau * a) + 0.5)
                     for a in range(self.d + 1))

    @property
    def lut_width(self) -> int:
        """Bits of an unsigned table entry: ``F + 1``."""
        return self.exp_width

    @property
    def error_bound_ulp(self) -> float:
        """Proven bound on ``|out - reference|`` in units of ``2**-O``, the reference being the
        exact softmax of ``temperature * s`` over all valid keys applied to ``v``.

        Every table entry is within 1/2 of ``2**F * exp(...)`` and the row maximum weighs
        ``2**F`` exactly, so ``sum_j |e_j - w_j| <= (n_max - 1) / 2`` while ``den >= 2**F``:
        ``1/2 + recip_error_ulp + 255 * 2**O * (n_max - 1) / 2**(F + 1)``. The last term is a
        worst case (every rounding in the same direction); measured errors are far smaller.
        """
        return self._bound_from_weight_errors((self.n_max - 1) / 2.0 ** (self.exp_frac_bits + 1))
