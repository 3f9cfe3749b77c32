"""Configuration of the ternary MatMul-free GLU MLP block.

The block computes ``y = BitLinear_down(SiLU(gate) * up)`` with
``gate, up = split(BitLinear_gate_up(x))`` for one token at a time. The integer arithmetic is
specified in :mod:`hadware.golden.mlp`; this module holds the parameters of that arithmetic
and derives from them the width of every intermediate register (see :class:`BitLinearGeometry`,
reached as :attr:`MlpConfig.gate_up` and :attr:`MlpConfig.down`).

Fixed-point formats are written ``(bits, frac)``: a two's-complement integer of ``bits`` bits
whose real value is ``integer / 2**frac``.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

from hadware.config.base import BlockConfig, check_float, check_int
from hadware.spec.weights import FORMATS, weight_format
from hadware.spec.widths import ceil_log2

__all__ = ["BitLinearGeometry", "MlpConfig", "check_weights_format"]

#: Largest d_model / d_hidden accepted.
MAX_DIM = 4096
#: Largest fixed-point width accepted anywhere; keeps every golden intermediate inside int64.
MAX_BITS = 24
#: Largest width of the sum of squares ``S`` (int64 in the golden model, with headroom).
MAX_SUMSQ_BITS = 62


def check_weights_format(value: object) -> None:
    """Refuse a ``weights`` field that names no weight format, in one line."""
    if not isinstance(value, str) or value not in FORMATS:
        raise ValueError(f"weights must be one of {', '.join(map(repr, FORMATS))}, "
                         f"not {value!r}")


@dataclasses.dataclass(frozen=True)
class BitLinearGeometry:
    """Register widths of one BitLinear layer of the MLP, derived from :class:`MlpConfig`.

    The names of the quantities (``P``, ``SS``, ``M``, ``A``, ``R``, ``q``, ``acc``, ``S_n``,
    ``U``, ``V``, ``C``, ``sh``) are those of the integer specification in
    :mod:`hadware.golden.mlp`. Widths of signed quantities include the sign bit.
    """

    name: str
    fan_in: int
    fan_out: int
    in_bits: int
    in_frac_bits: int
    gain_bits: int
    gain_frac_bits: int
    out_bits: int
    out_frac_bits: int
    mant_bits: int
    recip_frac_bits: int
    kappa_bits: int
    scale_bits: int
    rms_eps: float
    exp_bits: int = 0
    weights: str = "ternary"

    @property
    def exp_min(self) -> int:
        """Smallest per-token input exponent (``-2**(exp_bits-1)``; 0 without an exponent)."""
        return -(2 ** (self.exp_bits - 1)) if self.exp_bits else 0

    @property
    def exp_max(self) -> int:
        """Largest per-token input exponent (``2**(exp_bits-1) - 1``; 0 without an exponent)."""
        return 2 ** (self.exp_bits - 1) - 1 if self.exp_bits else 0

    def eps_for(self, exp: int) -> int:
        """The RMSNorm epsilon as the integer ``E(xe)`` added to the sum of squares of a token
        whose elements are ``X_i * 2**(xe - in_frac_bits)``:
        ``E(xe) = floor(rms_eps * fan_in * 2**(2 * (in_frac_bits - xe)) + 1/2)``, exact."""
        v = Fraction(self.rms_eps) * self.fan_in * Fraction(2) ** (2 * (self.in_frac_bits - exp))
        return math.floor(v + Fraction(1, 2))

    @property
    def eps_table(self) -> tuple[int, ...]:
        """``E(xe)`` for ``xe = exp_min .. exp_max`` (one entry without an exponent)."""
        return tuple(self.eps_for(e) for e in range(self.exp_min, self.exp_max + 1))

    @property
    def product_bits(self) -> int:
        """Signed width of ``P_i = X_i * G_i`` (the gain product), exact."""
        return self.in_bits + self.gain_bits

    @property
    def absmax_bits(self) -> int:
        """Unsigned width of ``M = max_i |P_i|`` (``|P| <= 2**(in_bits + gain_bits - 2)``)."""
        return self.in_bits + self.gain_bits - 1

    @property
    def eps_fx(self) -> int:
        """``E(0)``, the epsilon of a token with exponent 0 (:meth:`eps_for`)."""
        return self.eps_for(0)

    @property
    def eps_max(self) -> int:
        """The largest ``E(xe)``, that of the smallest exponent."""
        return self.eps_for(self.exp_min)

    @property
    def sumsq_bits(self) -> int:
        """Unsigned width of ``S = sum_i X_i**2 + E(xe)`` (worst case: every ``X_i`` at the
        negative limit, the smallest exponent)."""
        return (self.fan_in * 2 ** (2 * self.in_bits - 2) + self.eps_max).bit_length()

    @property
    def norm_shift_bits(self) -> int:
        """Unsigned width of the per-token exponent ``e = bitlen(M)`` (1 .. absmax_bits)."""
        return self.absmax_bits.bit_length()

    @property
    def recip_bits(self) -> int:
        """Unsigned width of the quantizer reciprocal ``R`` in ``(127 * 2**K, 254 * 2**K]``."""
        return self.recip_frac_bits + 8

    @property
    def quant_product_bits(self) -> int:
        """Unsigned width of ``A_i * R`` (``A_i < 2**mant_bits``)."""
        return self.mant_bits + self.recip_bits

    @property
    def acc_bits(self) -> int:
        """Signed width of the weighted sum ``acc_j``.

        ``|q_i| <= 127`` (never -128, see the specification) and ``|code| <= code_max`` (1
        ternary, 127 int8), so ``|acc_j| <= 127 code_max fan_in``: ``8 + ceil(log2(fan_in))``
        bits including the sign for ternary weights, ``15 + ceil(log2(fan_in))`` for int8
        (:attr:`hadware.spec.weights.WeightFormat.product_bits` plus the sum's growth)."""
        return weight_format(self.weights).product_bits + ceil_log2(self.fan_in)

    @property
    def sqrt_in_bits(self) -> int:
        """Unsigned width of the normalized sum of squares ``S_n`` in ``[2**(2W-2), 2**(2W))``."""
        return 2 * self.mant_bits

    @property
    def ratio_bits(self) -> int:
        """Unsigned width of ``V = floor(M_n * 2**W / U)`` in ``[2**(W-1), 2**(W+1))``."""
        return self.mant_bits + 1

    @property
    def scale_shift(self) -> int:
        """The constant right shift ``cs`` that turns ``Kc * V`` into the per-token scale ``C``."""
        return self.kappa_bits + self.mant_bits + 1 - self.scale_bits

    @property
    def scale_product_bits(self) -> int:
        """Signed width of ``acc_j * C`` (``C < 2**scale_bits``, unsigned)."""
        return self.acc_bits + self.scale_bits

    @property
    def tau_max(self) -> int:
        """Largest per-token half exponent ``tau = ceil(bitlen(S) / 2)``."""
        return (self.sumsq_bits + 1) // 2

    def shift0_min(self) -> int:
        """Smallest per-layer constant ``SH0`` that keeps every per-token shift ``sh >= 1``.

        ``sh = SH0 + tau - e`` and ``tau - e >= 1 - gain_bits`` for every token, so
        ``SH0 >= gain_bits`` suffices."""
        return self.gain_bits

    def shift0(self, kappa_exp: int) -> int:
        """The per-layer constant ``SH0 = ek + W + Fg - Fo - cs`` of a layer whose
        ``kappa = Kc * 2**-ek``."""
        return (kappa_exp + self.mant_bits + self.gain_frac_bits - self.out_frac_bits
                - self.scale_shift)


@dataclasses.dataclass(frozen=True)
class MlpConfig(BlockConfig):
    """Configuration of the ternary GLU MLP block (golden model :mod:`hadware.golden.mlp`).

    Parameters
    ----------
    d_model : int
        Width of the token (input and output); 1 to 4096.
    d_hidden : int
        Hidden width ``I``: ``gate`` and ``up`` have ``d_hidden`` elements each and the first
        BitLinear has ``2 * d_hidden`` outputs; 1 to 4096.
    lanes : int
        Elements moved per cycle on every vector stream of the block (x, gate/up, h, y);
        1 to 64, and it must divide both ``d_model`` and ``d_hidden``. The golden model does not
        depend on it.
    x_bits, x_frac_bits : int
        Format of the token input's mantissas ``X``. Default (20, 12). Every ``*_bits`` is 2
        to 24 and every ``*_frac_bits`` 0 to its ``*_bits`` - 1.
    x_exp_bits : int
        Width of the token's exponent ``xe`` (signed; 0 to 6, default 5): token element ``i``
        is ``X_i * 2**(xe - x_frac_bits)``, one ``xe`` per token (a block floating-point
        input), chosen by step 0 of the specification as the smallest exponent at which no
        element saturates. With the defaults, ``xe`` is -16 to 15: tokens up to
        ``max|x| < 2**22`` are taken (larger ones are refused), and every token with
        ``max|x| >= 2**-10`` keeps at least ``x_bits - 1`` significant bits in its largest
        element. 0: no exponent, the fixed format ``(x_bits, x_frac_bits)`` (range +-128 with
        the defaults), tokens beyond it refused.
    gain_bits, gain_frac_bits : int
        Format of the RMSNorm gains ``G`` of both BitLinears. Default (18, 14): range +-8.
    mant_bits : int
        ``W``, the width of the normalized per-token mantissas (absmax ``M_n``, square root
        ``U``); 8 to 24, default 18.
    recip_frac_bits : int
        ``K``, the extra fraction bits of the quantizer reciprocal ``R``; 0 to 16, default 10.
    kappa_bits : int
        ``Wb``, mantissa width of the per-layer constant ``kappa = beta * sqrt(fan_in) / 127``;
        8 to 24, default 18.
    scale_bits : int
        ``Wc``, width of the per-token output scale ``C``; 8 to
        ``min(24, kappa_bits + mant_bits + 1)``, default 20.
    act_bits, act_frac_bits : int
        Format of ``gate`` and ``up`` (outputs of the first BitLinear). Default (24, 16):
        range +-128.
    silu_range_log2 : int
        The SiLU table covers ``|gate| < 2**silu_range_log2``; outside it SiLU is taken as
        ``0`` (negative side) or the identity (positive side).
    silu_seg_frac_bits : int
        Segments of the piecewise-linear SiLU are ``2**-silu_seg_frac_bits`` wide; at most
        ``act_frac_bits``; the table has ``2**(silu_range_log2 + silu_seg_frac_bits) + 1``
        entries (at most 16385).
    silu_frac_bits : int
        Fraction bits of the SiLU table and of the SiLU output; ``act_frac_bits`` to
        ``min(24, act_frac_bits + 8)``.
    h_bits, h_frac_bits : int
        Format of ``h = SiLU(gate) * up`` (input of the second BitLinear). Default (24, 16);
        ``h_frac_bits`` at most ``silu_frac_bits + act_frac_bits``.
    y_bits, y_frac_bits : int
        Format of the block output ``Y``. Default (20, 12), the input's format.

    rms_eps : float
        Epsilon of both RMSNorms (``mean(x**2) + eps``); 0 to 1. 1e-6 as in the reference model.
        With the input exponent it enters as the table ``E(xe)``; a table whose largest entry
        would make the sum of squares wider than 62 bits is refused.
    weights : str
        The weight format of both BitLinears (:mod:`hadware.spec.weights`): ``"ternary"``
        (default; codes select ``+q``, ``-q`` or nothing, no multiplier) or ``"int8"`` (codes
        in [-127, 127], one multiplier per lane: the standard baseline).

    Notes
    -----
    The input is block floating point and the block is scale-invariant in it, so any token
    scale within the exponent range gives the same precision. The inner formats (gate/up,
    ``h``, ``y``) are fixed point: their outputs do not depend on the input's scale but on the
    weights', so their ranges assume the scale of a trained layer: with latent weights of
    standard deviation about ``1/sqrt(fan_in)``, gate/up are of order 1. Much smaller weights
    lose precision in ``h``; much larger ones saturate gate/up and ``h``. With the defaults,
    for weights 0.3 to 3 times that scale and d_model 16 or 64, the measured mean per-token
    error of :mod:`hadware.golden.mlp` against its float reference (on the input grid) stays
    below 0.3%.
    """

    block = "mlp"

    d_model: int = 16
    d_hidden: int = 48
    lanes: int = 4
    x_bits: int = 20
    x_frac_bits: int = 12
    x_exp_bits: int = 5
    gain_bits: int = 18
    gain_frac_bits: int = 14
    mant_bits: int = 18
    recip_frac_bits: int = 10
    kappa_bits: int = 18
    scale_bits: int = 20
    act_bits: int = 24
    act_frac_bits: int = 16
    silu_range_log2: int = 4
    silu_seg_frac_bits: int = 6
    silu_frac_bits: int = 18
    h_bits: int = 24
    h_frac_bits: int = 16
    y_bits: int = 20
    y_frac_bits: int = 12
    rms_eps: float = 1e-6
    weights: str = "ternary"

    def validate(self) -> None:
        check_weights_format(self.weights)
        check_int("d_model", self.d_model, lo=1, hi=MAX_DIM)
        check_int("d_hidden", self.d_hidden, lo=1, hi=MAX_DIM)
        check_int("lanes", self.lanes, lo=1, hi=64)
        if self.d_model % self.lanes or self.d_hidden % self.lanes:
            raise ValueError(f"lanes must divide d_model ({self.d_model}) and d_hidden "
                             f"({self.d_hidden}), not {self.lanes!r}")
        for fmt in ("x", "gain", "act", "h", "y"):
            bits_name, frac_name = f"{fmt}_bits", f"{fmt}_frac_bits"
            bits = getattr(self, bits_name)
            check_int(bits_name, bits, lo=2, hi=MAX_BITS)
            check_int(frac_name, getattr(self, frac_name), lo=0, hi=bits - 1,
                      what=f"an integer between 0 and {bits_name} - 1 ({bits - 1})")
        check_int("mant_bits", self.mant_bits, lo=8, hi=MAX_BITS)
        check_int("recip_frac_bits", self.recip_frac_bits, lo=0, hi=16)
        check_int("kappa_bits", self.kappa_bits, lo=8, hi=MAX_BITS)
        check_int("scale_bits", self.scale_bits, lo=8,
                  hi=min(MAX_BITS, self.kappa_bits + self.mant_bits + 1),
                  what="an integer between 8 and min(24, kappa_bits + mant_bits + 1) "
                       f"({min(MAX_BITS, self.kappa_bits + self.mant_bits + 1)})")
        check_int("silu_range_log2", self.silu_range_log2, lo=0, hi=6)
        check_int("silu_seg_frac_bits", self.silu_seg_frac_bits, lo=0,
                  hi=self.act_frac_bits,
                  what=f"an integer between 0 and act_frac_bits ({self.act_frac_bits})")
        if self.silu_range_log2 + self.silu_seg_frac_bits > 14:
            raise ValueError("silu_range_log2 + silu_seg_frac_bits must be at most 14 (a table "
                             "of at most 16385 entries), not "
                             f"{self.silu_range_log2 + self.silu_seg_frac_bits}")
        check_int("silu_frac_bits", self.silu_frac_bits, lo=self.act_frac_bits,
                  hi=min(MAX_BITS, self.act_frac_bits + 8),
                  what=f"an integer between act_frac_bits ({self.act_frac_bits}) and "
                       f"min(24, act_frac_bits + 8) ({min(MAX_BITS, self.act_frac_bits + 8)})")
        if self.h_frac_bits > self.silu_frac_bits + self.act_frac_bits:
            raise ValueError("h_frac_bits must be at most silu_frac_bits + act_frac_bits "
                             f"({self.silu_frac_bits + self.act_frac_bits}), not "
                             f"{self.h_frac_bits!r}")
        check_float("rms_eps", self.rms_eps, lo=0.0, hi=1.0)
        check_int("x_exp_bits", self.x_exp_bits, lo=0, hi=6)
        if self.gate_up.sumsq_bits > MAX_SUMSQ_BITS:
            raise ValueError(
                f"rms_eps {self.rms_eps!r} at the smallest exponent of x_exp_bits "
                f"{self.x_exp_bits} (xe = {self.gate_up.exp_min}) makes the sum of squares "
                f"{self.gate_up.sumsq_bits} bits wide, more than {MAX_SUMSQ_BITS}: use a "
                f"smaller x_exp_bits, x_frac_bits or rms_eps")

    # -- derived widths ------------------------------------------------------------------------

    def _geometry(self, name: str) -> BitLinearGeometry:
        common = dict(gain_bits=self.gain_bits, gain_frac_bits=self.gain_frac_bits,
                      mant_bits=self.mant_bits, recip_frac_bits=self.recip_frac_bits,
                      kappa_bits=self.kappa_bits, scale_bits=self.scale_bits,
                      rms_eps=self.rms_eps, weights=self.weights)
        if name == "gate_up":
            return BitLinearGeometry(
                name=name, fan_in=self.d_model, fan_out=2 * self.d_hidden,
                in_bits=self.x_bits, in_frac_bits=self.x_frac_bits, exp_bits=self.x_exp_bits,
                out_bits=self.act_bits, out_frac_bits=self.act_frac_bits, **common)
        return BitLinearGeometry(
            name=name, fan_in=self.d_hidden, fan_out=self.d_model,
            in_bits=self.h_bits, in_frac_bits=self.h_frac_bits,
            out_bits=self.y_bits, out_frac_bits=self.y_frac_bits, **common)

    @property
    def gate_up(self) -> BitLinearGeometry:
        """Widths of the first BitLinear (``d_model -> 2 * d_hidden``, input ``X``)."""
        return self._geometry("gate_up")

    @property
    def down(self) -> BitLinearGeometry:
        """Widths of the second BitLinear (``d_hidden -> d_model``, input ``h``)."""
        return self._geometry("down")

    @property
    def silu_table_size(self) -> int:
        """Entries of the SiLU table: ``2**(silu_range_log2 + silu_seg_frac_bits) + 1``."""
        return 2 ** (self.silu_range_log2 + self.silu_seg_frac_bits) + 1

    @property
    def silu_interp_bits(self) -> int:
        """Bits of the interpolation fraction ``fr``: ``act_frac_bits - silu_seg_frac_bits``."""
        return self.act_frac_bits - self.silu_seg_frac_bits

    @property
    def silu_out_bits(self) -> int:
        """Signed width of the SiLU output (fraction ``silu_frac_bits``)."""
        return self.act_bits + self.silu_frac_bits - self.act_frac_bits

    @property
    def glu_product_bits(self) -> int:
        """Signed width of ``SiLU(gate) * up`` before rounding to ``h``."""
        return self.silu_out_bits + self.act_bits

    @property
    def glu_shift(self) -> int:
        """Right shift (with rounding) from ``SiLU(gate) * up`` to ``h``."""
        return self.silu_frac_bits + self.act_frac_bits - self.h_frac_bits

    @property
    def weight_count(self) -> int:
        """Weights of the block: ``3 * d_model * d_hidden``."""
        return 3 * self.d_model * self.d_hidden
