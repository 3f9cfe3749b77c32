"""Configuration of the attention family: one core, its parts, and the numbers they derive.

Every attention variant is the same datapath (:mod:`hadware.hw.attention_core`) with three
parts chosen by its config class:

* ``scorer``: ``"hamming"`` (queries and keys in {-1, +1}, ``s = 2 popcount(XNOR(q, k)) - d``,
  :class:`HammingScores`) or ``"int8"`` (int8 dot products, :class:`Int8Scores`);
* ``exp``: ``"table"`` (the HAD table over half score differences, :class:`TableExp`) or
  ``"fixed"`` (the fixed-point ``2**(-u)`` with a node table and interpolation,
  :class:`FixedExp`);
* ``sparsifier``: ``"topk"`` (the ``top_k`` best scores only, :class:`TopKSelection`) or
  ``None`` (a dense softmax over every valid key, :class:`DenseSelection`).

A variant's config is a frozen dataclass that inherits one mixin of each kind and
:class:`AttentionCoreConfig`, and sets ``block`` (see :mod:`hadware.config.attention` for the
HAD core). The widths of the softmax sums, the reciprocal and the output
(:class:`AttentionCoreConfig`) depend on ``n_weights``, the most entries one query weighs:
``top_k`` after the sparsifier, ``n_max`` without it. The arithmetic is specified in
:mod:`hadware.golden.attention_core`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from typing import ClassVar

from hadware.config.base import BlockConfig, check_bool, check_choice, check_float, check_int
from hadware.spec import softmax
from hadware.spec.widths import DSP_PIECE, ceil_log2, signed_width, unsigned_width

__all__ = [
    "V_MAX",
    "V_MIN",
    "AttentionCoreConfig",
    "DenseSelection",
    "FixedExp",
    "HammingScores",
    "Int8Scores",
    "TableExp",
    "TopKSelection",
]

#: Range of a value element (and of an int8 query or key element).
V_MIN = -128
V_MAX = 127


# -- scorers ---------------------------------------------------------------------------------


class HammingScores:
    """Scorer part: binarized queries and keys (``d`` bits each), XNOR-popcount scores."""

    scorer: ClassVar[str] = "hamming"
    d_multiple: ClassVar[int] = 8
    d_what: ClassVar[str] = "a positive multiple of 8, at most 1024"
    d: int

    @property
    def key_bits(self) -> int:
        """Bits of a stored key (and of a query): ``d``."""
        return self.d

    @property
    def score_width(self) -> int:
        """Bits of a signed score in ``[-d, d]``."""
        return signed_width(-self.d, self.d)

    @property
    def delta_max(self) -> int:
        """Largest score difference ``s_max - s``: ``2 d``."""
        return 2 * self.d


class Int8Scores:
    """Scorer part: int8 queries and keys (``d`` elements each), exact dot products."""

    scorer: ClassVar[str] = "int8"
    d_multiple: ClassVar[int] = 1
    d_what: ClassVar[str] = "an integer between 1 and 1024"
    d: int

    @property
    def key_bits(self) -> int:
        """Bits of a stored key (and of a query): ``8 d``."""
        return 8 * self.d

    @property
    def score_min(self) -> int:
        """Most negative score: ``-128 * 127 * d``."""
        return V_MIN * V_MAX * self.d

    @property
    def score_max(self) -> int:
        """Largest score: ``(-128) * (-128) * d = 16384 * d``."""
        return V_MIN * V_MIN * self.d

    @property
    def score_width(self) -> int:
        """Bits of a signed score ``s = q . k``."""
        return signed_width(self.score_min, self.score_max)

    @property
    def delta_max(self) -> int:
        """Largest score difference ``s_max - s_j``: ``score_max - score_min = 32640 * d``."""
        return self.score_max - self.score_min


# -- exponentials ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TableExp:
    """Exponential part: ``e = LUT[(s_max - s) / 2]`` from :func:`hadware.spec.softmax.had_table`
    (binarized scores only: their differences are even and at most ``2 d``).

    Parameters
    ----------
    runtime_temperature : bool
        False: the table is a ROM of the config's ``temperature``. True: a RAM of the same
        size that the core's ``tab_stream`` rewrites between queries (one entry per beat), so
        one build serves any temperature in the config's range; it holds the config's
        ``temperature`` table until written (an initial content, kept through reset). The
        widths of every later stage do not depend on the temperature (``LUT[0] = 2**F`` for
        every one), nor does :attr:`error_bound_ulp`.
    """

    exp: ClassVar[str] = "table"
    temperature_min: ClassVar[float | None] = None  # greater than 0
    #: The table evaluates ``exp(-2.0 * temperature * a)``: beyond half the largest float64,
    #: ``2.0 * temperature`` is infinite and ``inf * 0`` at ``a = 0`` is NaN. (Any temperature
    #: above about ``(F + 1) ln 2 / 2`` already gives the table ``2**F, 0, 0, ...``.)
    temperature_max: ClassVar[float | None] = sys.float_info.max / 2.0
    temperature_why: ClassVar[str | None] = ("the table evaluates exp(-2.0 * temperature * a), and "
                                      "2.0 * temperature must be a finite float64")
    runtime_temperature: bool = False

    def validate_exp(self) -> None:
        if getattr(self, "scorer", None) != "hamming":
            raise ValueError("the table exponential needs binarized (hamming) scores")
        check_bool("runtime_temperature", self.runtime_temperature)

    def table_for(self, temperature: float) -> tuple[int, ...]:
        """The table of another ``temperature`` (checked as the config's own field is): what
        ``tab_stream`` writes to run at that temperature (``runtime_temperature``)."""
        tau = check_float("temperature", temperature, lo=0.0, lo_open=True,
                          hi=self.temperature_max, why=self.temperature_why)
        return softmax.had_table(self.d, tau, self.exp_frac_bits)

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
        """The exponential table, ``d + 1`` unsigned integers (:func:`~hadware.spec.softmax.
        had_table`): ``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)``. The RTL embeds
        this tuple rather than recomputing it, so model and hardware share every entry."""
        return softmax.had_table(self.d, self.temperature, self.exp_frac_bits)

    @property
    def lut_width(self) -> int:
        """Bits of an unsigned table entry: ``F + 1`` (``LUT[0] = 2**F`` is the largest)."""
        return unsigned_width(2**self.exp_frac_bits)

    @property
    def exp_delta_width(self) -> int:
        """Bits of the score difference the exponential takes: ``[0, 2 d]``."""
        return self.lut_address_width + 1

    def weight_error_ratio(self) -> float:
        """Bound on ``sum |e_j - w_j| / den``: every entry but the exact ``LUT[0]`` is within 1/2
        of ``2**F * exp(...)``, and ``den >= 2**F``."""
        return (self.n_weights - 1) / 2.0 ** (self.exp_frac_bits + 1)


@dataclasses.dataclass(frozen=True)
class FixedExp:
    """Exponential part: the fixed-point ``E(delta) = 2**F * 2**(-u)``,
    ``u = temperature * delta / ln 2`` (range reduction, a table of ``2**P + 1`` nodes of
    ``2**(-f)``, linear interpolation with ``Q`` bits, a rounding shift).

    Parameters
    ----------
    exp_table_bits : int
        P: the table of ``2**(-f)`` has ``2**P + 1`` nodes over ``f`` in ``[0, 1]``; 1 to 10.
    exp_interp_bits : int
        Q, bits of the position between two nodes used by the linear interpolation; 0 (no
        interpolation: the table value at the rounded node) to 16.
    runtime_temperature : bool
        False: the scale constant ``c`` and its shift ``G`` are constants of the config's
        ``temperature``. True: both are registers that the core's ``tab_stream`` rewrites
        between queries (one beat, :meth:`table_for`), so one build serves any temperature
        from 1e-9 to 1, with exactly the arithmetic of a build at that temperature; the scale
        multiplier is then a full multiplier of ``exp_scale_width`` bits and the rounding
        shift a barrel shifter. They hold the config's temperature until written (initial
        values, kept through reset). The node table does not depend on the temperature.
    """

    exp: ClassVar[str] = "fixed"
    #: Keeps G below 64 (the golden model's int64 arithmetic); smaller scales would make
    #: ``temperature * s`` vanish for int8 scores anyway.
    temperature_min: ClassVar[float | None] = 1e-9
    temperature_max: ClassVar[float | None] = 1.0
    temperature_why: ClassVar[str | None] = None

    exp_table_bits: int = 6
    exp_interp_bits: int = 10
    runtime_temperature: bool = False

    def validate_exp(self) -> None:
        check_int("exp_table_bits", self.exp_table_bits, lo=1, hi=10)
        check_int("exp_interp_bits", self.exp_interp_bits, lo=0, hi=16)
        check_bool("runtime_temperature", self.runtime_temperature)

    def table_for(self, temperature: float) -> tuple[int, int]:
        """``(c, G)``, the scale constant and its shift of another ``temperature`` (checked as
        the config's own field is): what ``tab_stream`` writes to run at that temperature
        (``runtime_temperature``)."""
        tau = check_float("temperature", temperature, lo=self.temperature_min,
                          hi=self.temperature_max, why=self.temperature_why)
        g = softmax.exp2_scale_shift(tau, self.exp_index_bits)
        return softmax.exp2_scale(tau, g), g

    @property
    def exp_scale_max(self) -> int:
        """The largest ``c`` of any temperature in the range: ``max(2**24, c(1.0))`` (below
        ``2**(H + 1)``, ``c`` has 24 significant bits and at most ``2**24``; from there, where
        ``G = H + 1``, it grows with the temperature)."""
        return max(2**softmax.SCALE_BITS, self.table_for(self.temperature_max)[0])

    @property
    def exp_scale_width(self) -> int:
        """Bits of the scale register of a run-time core (``c`` of the config otherwise)."""
        if self.runtime_temperature:
            return unsigned_width(self.exp_scale_max)
        return unsigned_width(self.exp_scale)

    @property
    def exp_scale_shift_max(self) -> int:
        """The largest ``G`` of any temperature in the range (that of ``temperature_min``)."""
        return self.table_for(self.temperature_min)[1]

    @property
    def exp_delta_width(self) -> int:
        """Bits of an unsigned score difference in ``[0, delta_max]``."""
        return unsigned_width(self.delta_max)

    @property
    def delta_width(self) -> int:
        """Bits of an unsigned score difference (the same as :attr:`exp_delta_width`)."""
        return self.exp_delta_width

    @property
    def exp_index_bits(self) -> int:
        """H = P + Q, fractional bits of the scaled difference ``t``."""
        return self.exp_table_bits + self.exp_interp_bits

    @property
    def exp_scale_shift(self) -> int:
        """G, fractional bits of the scale constant (:func:`hadware.spec.softmax.
        exp2_scale_shift`)."""
        return softmax.exp2_scale_shift(self.temperature, self.exp_index_bits)

    @property
    def exp_scale(self) -> int:
        """c = ``floor(temperature / ln(2) * 2**G + 0.5)`` (:func:`hadware.spec.softmax.
        exp2_scale`)."""
        return softmax.exp2_scale(self.temperature, self.exp_scale_shift)

    @property
    def exp_scale_error(self) -> float:
        """Relative error of ``c / 2**G`` as ``temperature / ln 2`` (below ``2**-24``). With
        ``runtime_temperature``, the bound ``2**-24`` itself, which holds at every temperature
        (``c >= 2**23``, rounded to the nearest integer), so that :attr:`error_bound_ulp` holds
        for any temperature written at run time."""
        if self.runtime_temperature:
            return 2.0**-softmax.SCALE_BITS
        exact = self.temperature / math.log(2.0)
        return abs(self.exp_scale / 2.0**self.exp_scale_shift / exact - 1.0)

    @property
    def exp_table(self) -> tuple[int, ...]:
        """The ``2**P + 1`` nodes ``T[i] = floor(2**F * 2**(-i / 2**P) + 0.5)``
        (:func:`hadware.spec.softmax.exp2_nodes`); the RTL embeds this tuple."""
        return softmax.exp2_nodes(self.exp_frac_bits, self.exp_table_bits)

    @property
    def exp_table_width(self) -> int:
        """Bits of a node: ``F + 1``."""
        return unsigned_width(2**self.exp_frac_bits)

    @property
    def exp_slope_width(self) -> int:
        """Bits of the largest node difference ``T[i] - T[i+1]``."""
        return unsigned_width(max(a - b for a, b in itertools.pairwise(self.exp_table)))

    @property
    def exp_shift_max(self) -> int:
        """The integer part of the scaled difference saturates at ``F + 2``: any larger value
        gives a weight of 0 (as ``F + 2`` itself does)."""
        return self.exp_frac_bits + 2

    @property
    def exp_relative_error(self) -> float:
        """Bound eps on the relative error of a weight before the absolute roundings.

        A weight stands for ``w = 2**F * 2**(-u)``. Three factors: the scale constant (``u`` is
        off by at most ``u * exp_scale_error``, and weights that can be nonzero have
        ``u < F + 3``); the rounding of ``t`` to ``H`` fractional bits (``2**-(H+1)`` in ``u``);
        the linear interpolation of ``2**(-f)`` between nodes spaced ``h = 2**-P`` apart
        (convex: at most ``(ln 2)**2 / 8 * h**2 * 2**h`` relative; none with ``Q = 0``, where
        ``t`` is rounded to a node). Their product minus 1.
        """
        p, q = self.exp_table_bits, self.exp_interp_bits
        shift = (self.exp_frac_bits + 3) * self.exp_scale_error + 2.0 ** -(self.exp_index_bits + 1)
        h = 2.0**-p
        interp = 0.0 if q == 0 else math.log(2.0) ** 2 / 8.0 * h * h * 2.0**h
        return (1.0 + interp) * 2.0**shift - 1.0

    def weight_error_ratio(self) -> float:
        """Bound on ``sum |e_j - w_j| / den``.

        Each weight satisfies ``|e_j - w_j| <= eps * w_j + 1`` (eps is
        :attr:`exp_relative_error`; the 1 covers the rounding of the node, 1/2, and of the
        final shift, 1/2); the row maximum weighs ``2**F`` exactly. With ``W = sum w_j`` and
        ``den = sum e_j >= 2**F``: ``sum |e_j - w_j| <= eps * W + n - 1`` and
        ``W <= den + sum |e_j - w_j|``, so the ratio is at most
        ``(eps + (n - 1) / 2**F) / (1 - eps)`` with ``n = n_weights``.
        """
        eps = self.exp_relative_error
        return (eps + (self.n_weights - 1) / 2.0**self.exp_frac_bits) / (1.0 - eps)


# -- sparsifiers -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TopKSelection:
    """Sparsifier part: the ``top_k`` highest scores, ties to the lower index, sorted by score
    then index.

    Parameters
    ----------
    top_k : int
        Scores kept per query; 1 to ``n_max``.
    topk_unit : str
        The hardware that selects them (same outputs, other timing and area):
        ``"merge"``, :class:`~hadware.hw.topk.TopK` (a held sorted list, one beat merged per
        cycle; its merge is a single-cycle path that grows with ``top_k * lanes``), or
        ``"counting"``, :class:`~hadware.hw.counting_topk.CountingTopK` (a counting sort over
        the ``d + 1`` values of a binarized score, every recurrence one counter; binarized
        scores only, ``ceil(n / lanes) + 2`` cycles more per query), or
        ``"counting_overlapped"``, the same unit with its two passes for different queries
        at once (``overlap = True``: a second bank of counters, a double score buffer and an
        output register bank; back to back, a query every ``ceil(n / lanes) + 3`` cycles
        or so instead of twice that), or ``"systolic"``,
        :class:`~hadware.hw.systolic_topk.SystolicTopK` (an insertion array per lane and a
        merge tree, one key comparison per path; any scores; ``top_k + ceil(log2(lanes)) + 2``
        cycles more per query, back to back a query every ``max(ceil(n / lanes), 2 top_k)``
        cycles or so).
    """

    sparsifier: ClassVar[str | None] = "topk"
    #: The top-k units, by ``topk_unit``.
    TOPK_UNITS: ClassVar[tuple[str, ...]] = ("merge", "counting", "counting_overlapped",
                                             "systolic")
    top_k: int = 8
    topk_unit: str = "merge"

    def validate_sparsifier(self) -> None:
        check_int("top_k", self.top_k, lo=1, hi=self.n_max,
                  what=f"an integer between 1 and n_max ({self.n_max})")
        check_choice("topk_unit", self.topk_unit, self.TOPK_UNITS)
        if self.counting_topk and self.scorer != "hamming":
            raise ValueError(f"topk_unit {self.topk_unit!r} needs binarized scores (scorer "
                             f"hamming); {self.block} has {self.scorer} scores: use 'merge' "
                             f"or 'systolic'")

    @property
    def counting_topk(self) -> bool:
        """The top-k unit is a counting one (``topk_unit`` ``"counting"`` or
        ``"counting_overlapped"``)."""
        return self.topk_unit.startswith("counting")

    @property
    def n_weights(self) -> int:
        """Entries weighed per query: the ``top_k`` selected."""
        return self.top_k

    @property
    def topk_count_width(self) -> int:
        """Bits of an unsigned count of selected entries in ``[0, top_k]``."""
        return unsigned_width(self.top_k)

    @property
    def top_k_log2(self) -> int:
        """``ceil(log2(top_k))`` (0 for ``top_k = 1``)."""
        return ceil_log2(self.top_k)


class DenseSelection:
    """Sparsifier part: none; the softmax runs over every valid key."""

    sparsifier: ClassVar[str | None] = None

    def validate_sparsifier(self) -> None:
        pass

    @property
    def n_weights(self) -> int:
        """Entries weighed per query: every valid key, up to ``n_max``."""
        return self.n_max


# -- the core --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AttentionCoreConfig(BlockConfig):
    """Fields, checks and derived numbers of every attention variant (not a block itself).

    Parameters
    ----------
    d : int
        Elements per query and key: bits for binarized scores (a positive multiple of 8), int8
        elements for int8 scores (1 to 1024); at most 1024.
    n_max : int
        Most keys (and value rows) per call; 1 to 65536.
    d_v : int
        Elements per value row (int8); 1 to 256.
    lanes : int
        Keys scored in parallel per cycle; 1 to ``min(n_max, 64)``. Changes timing and area
        only, never a result.
    temperature : float
        Logit scale tau: the softmax runs over ``tau * s`` for the integer score ``s``. Finite
        and greater than 0; the table exponential: at most half the largest float64
        (``2.0 * tau`` must be finite), the fixed exponential: between 1e-9 and 1. Stored as
        a float (``1`` becomes ``1.0``, so the hash is the same).
    exp_frac_bits : int
        F, fractional bits of a softmax weight (``2**F`` stands for 1.0); 1 to 24.
    out_frac_bits : int
        O, fractional bits of the output: ``out`` is in units of ``2**-O``; 0 to 16.
    scale_piece : int
        Bits of the operand pieces of the output scaler's multiplication ``num * recip``; 2 to
        17. The default, 17, fits an 18 x 18 DSP multiplier (one partial product per pair of
        pieces); a smaller piece suits a device that builds the scaler from logic (the UP5K,
        whose multiplier blocks the weight multipliers take): each partial product is then a
        small, shallow multiplier, and the registered adder tree one level deeper per doubling
        of their number. Changes timing and area only, never a result.
    weight_mul : str
        How each weight is multiplied by an int8 value (``d_v`` multipliers per weighing lane):
        ``"dsp"`` (the default) as a ``*`` that synthesis maps onto DSP multiplier blocks, the
        weight cut into pieces of up to 17 bits; ``"adders"`` as the sum of the weight shifted
        by the value's set bits, in two registered halves (the value's low and high four bits:
        two levels of adders each), so that no DSP block is used (an FPGA whose DSP blocks are
        slow to reach without their registers, or too few). Changes timing and area only,
        never a result.

    Every weight lies in ``[0, 2**F]`` and the largest weight of a query is exactly ``2**F``, so
    ``2**F <= den <= n_weights * 2**F``.

    Raises
    ------
    TypeError
        A parameter has the wrong type.
    ValueError
        A parameter is out of range; the message names it and shows the value.
    """

    scorer: ClassVar[str]
    exp: ClassVar[str]
    sparsifier: ClassVar[str | None]
    d_multiple: ClassVar[int]
    d_what: ClassVar[str]
    temperature_min: ClassVar[float | None]
    temperature_max: ClassVar[float | None]
    temperature_why: ClassVar[str | None]

    d: int = 64
    n_max: int = 64
    d_v: int = 8
    lanes: int = 4
    temperature: float = 0.125
    exp_frac_bits: int = 19
    out_frac_bits: int = 8
    scale_piece: int = DSP_PIECE
    weight_mul: str = "dsp"

    #: The choices of ``weight_mul``.
    WEIGHT_MULS: ClassVar[tuple[str, ...]] = ("dsp", "adders")

    def validate(self) -> None:
        check_int("d", self.d, lo=self.d_multiple, hi=1024, multiple_of=self.d_multiple,
                  what=self.d_what)
        check_int("n_max", self.n_max, lo=1, hi=65536)
        self.validate_sparsifier()
        check_int("d_v", self.d_v, lo=1, hi=256)
        lanes_max = min(self.n_max, 64)
        check_int("lanes", self.lanes, lo=1, hi=lanes_max,
                  what=f"an integer between 1 and min(n_max, 64) ({lanes_max})")
        if self.temperature_min is None:
            tau = check_float("temperature", self.temperature, lo=0.0, lo_open=True,
                              hi=self.temperature_max, why=self.temperature_why)
        else:
            tau = check_float("temperature", self.temperature, lo=self.temperature_min,
                              hi=self.temperature_max, why=self.temperature_why)
        # Normalise 1 to 1.0 so that equal configurations have equal JSON and hash.
        object.__setattr__(self, "temperature", tau)
        check_int("exp_frac_bits", self.exp_frac_bits, lo=1, hi=24)
        check_int("out_frac_bits", self.out_frac_bits, lo=0, hi=16)
        check_int("scale_piece", self.scale_piece, lo=2, hi=DSP_PIECE)
        check_choice("weight_mul", self.weight_mul, self.WEIGHT_MULS)
        self.validate_exp()

    # Supplied by the parts.
    def validate_sparsifier(self) -> None:  # pragma: no cover - a sparsifier part overrides it
        raise NotImplementedError

    def validate_exp(self) -> None:  # pragma: no cover - an exponential part overrides it
        raise NotImplementedError

    @property
    def n_weights(self) -> int:  # pragma: no cover - a sparsifier part overrides it
        raise NotImplementedError

    def weight_error_ratio(self) -> float:  # pragma: no cover - an exponential part does
        raise NotImplementedError

    @classmethod
    def parts(cls) -> dict[str, str | None]:
        """The variant's choice of parts: ``{"scorer", "exp", "sparsifier"}``."""
        return {"scorer": cls.scorer, "exp": cls.exp, "sparsifier": cls.sparsifier}

    # -- indices -----------------------------------------------------------------------------

    @property
    def index_width(self) -> int:
        """Bits of an unsigned key index in ``[0, n_max - 1]`` (at least 1)."""
        return unsigned_width(self.n_max - 1)

    @property
    def count_width(self) -> int:
        """Bits of an unsigned key count in ``[0, n_max]`` (``n`` and ``n_valid``)."""
        return unsigned_width(self.n_max)

    # -- weights, sums, reciprocal, output ---------------------------------------------------

    @property
    def weights_log2(self) -> int:
        """``ceil(log2(n_weights))`` (0 for one entry)."""
        return ceil_log2(self.n_weights)

    @property
    def exp_width(self) -> int:
        """Bits of an unsigned weight in ``[0, 2**F]``: ``F + 1``."""
        return unsigned_width(2**self.exp_frac_bits)

    @property
    def den_min(self) -> int:
        """Smallest denominator: ``2**F`` (the row maximum always weighs ``2**F``)."""
        return 2**self.exp_frac_bits

    @property
    def den_max(self) -> int:
        """Largest denominator: ``n_weights * 2**F``."""
        return self.n_weights * 2**self.exp_frac_bits

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
        """S, the final right shift: ``R - O`` (at least 11)."""
        return self.recip_bits - self.out_frac_bits

    def _recip_of(self, den: int) -> int:
        return ((1 << self.recip_bits) + den // 2) // den

    @property
    def recip_max(self) -> int:
        """Largest reciprocal, at ``den = 2**F``: exactly ``2**(R - F)``."""
        return self._recip_of(self.den_min)

    @property
    def recip_min(self) -> int:
        """Smallest reciprocal, at ``den = den_max``."""
        return self._recip_of(self.den_max)

    @property
    def recip_width(self) -> int:
        """Bits of the unsigned reciprocal: ``R - F + 1``."""
        return unsigned_width(self.recip_max)

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
        """Bits of the signed ``num_c * recip`` plus the rounding constant ``2**(S-1)`` (one
        register holds both without overflow)."""
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

    # -- accuracy ----------------------------------------------------------------------------

    @property
    def recip_error_ulp(self) -> float:
        """Bound on what the rounding of the reciprocal adds to ``out``, in units of ``2**-O``:
        ``|recip - 2**R / den| <= 1/2`` and ``|num_c| <= 128 * den`` give at most
        ``2**O * 64 * den / 2**R <= n_weights * 2**(O + F + 6 - R) <= 1/16``."""
        o, f, r = self.out_frac_bits, self.exp_frac_bits, self.recip_bits
        return self.n_weights * 2.0 ** (o + f + 6 - r)

    @property
    def error_bound_ulp(self) -> float:
        """Proven bound on ``|out - reference|`` in units of ``2**-O``, the reference being the
        exact softmax of ``temperature * s`` over the same weighed keys, applied to ``v``.

        With ``w_j`` the exact weights and ``e_j`` the computed ones (both in units of
        ``2**-F``), the computed average minus the exact one is
        ``sum_j (e_j - w_j) * (v_j - exact) / den`` and ``|v_j - exact| <= 255``; the exponential
        part bounds ``sum_j |e_j - w_j| / den`` (``weight_error_ratio``). Adding the final
        rounding (1/2) and :attr:`recip_error_ulp` gives the bound. For the HAD table it is at
        most 1 when ``2**(F - O) >= 291.43 * (n_weights - 1)``.
        """
        spread = (V_MAX - V_MIN) * 2.0**self.out_frac_bits
        return 0.5 + self.recip_error_ulp + spread * self.weight_error_ratio()
