"""Ternary weights: the absmean quantization rule (once), and the one packing layout of their
ROM words (numpy only: the RTL decoder, the golden model and the exporter import it).

Quantization
------------
:func:`ternarize` applies the BitLinear weight rule of the reference model to a latent
(full-precision, trained) weight tensor, once::

    beta = max(mean(|W|), 1e-5)            # one scale per tensor
    W_t  = clamp(round(W * (1 / beta)), -1, 1)   # round = torch.round, half to even

computed in float32 as the reference code does it (it multiplies by the reciprocal;
``round(W / beta)`` differs from it only when ``W / beta`` lies within one float32 ulp of
+-0.5). The mean is accumulated in float64 and rounded to float32 once; torch's float32
reduction may differ from it by an ulp on large tensors. The effective weight is
``beta * W_t``.

**Quantize once; never re-quantize.** The rule is not idempotent: applied again to the effective
weights ``beta * W_t`` it returns the same codes but the scale ``beta * nnz / size`` (the mean
magnitude counts the zeros), so every output of the layer shrinks by the fraction of non-zero
codes; applied to the bare codes it returns ``beta = nnz / size``. Exported codes and betas are
therefore loaded verbatim (:func:`unpack`, :func:`hadware.spec.mlp.load_exported`), and
:func:`ternarize` refuses a tensor that is already ternary-valued (its non-zero entries all of
one magnitude and some entries zero), which is exactly the case where a second quantization
changes the scale.

The hardware stores scale constants as a normalized mantissa and an exponent
(:func:`to_mant_exp`): ``value ~= mant * 2**-exp`` with ``2**(bits-1) <= mant < 2**bits``.

Packing layout, version 1
-------------------------
The constants of :data:`LAYOUT_V1` are plain attributes so that the RTL decoder imports them
instead of restating them.

- A weight matrix of ``rows`` outputs by ``cols`` inputs (``codes[r, c]`` is the weight from
  input ``c`` to output ``r``, as ``torch.nn.Linear.weight``) is stored in words of
  ``WORD_BITS = 32`` bits holding ``CODES_PER_WORD = 16`` codes of ``CODE_BITS = 2`` bits.
- Code values: the 2-bit two's complement of the weight: ``0b00`` = 0, ``0b01`` = +1,
  ``0b11`` = -1. ``0b10`` is invalid and never written; a decoder that meets it may treat it as
  an error. Decoding rule for hardware: ``nonzero = code[0]``, ``negative = code[1]``.
- Word order: row-major. Each row starts on a new word and takes
  ``words_per_row = ceil(cols / 16)`` words; the code of ``(r, c)`` is in word
  ``r * words_per_row + c // 16``.
- Bit order: within a word, slot ``j = c % 16`` occupies bits ``[2j+1 : 2j]`` (slot 0 in the
  least significant bits).
- Padding: the unused slots of the last word of a row (when ``cols`` is not a multiple of 16)
  hold ``0b00``; :func:`unpack` rejects anything else there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from hadware.errors import HadwareError

__all__ = [
    "BETA_MIN",
    "CODES_PER_WORD",
    "CODE_BITS",
    "CODE_INVALID",
    "CODE_MINUS",
    "CODE_PLUS",
    "CODE_ZERO",
    "LAYOUT",
    "LAYOUT_V1",
    "LAYOUT_VERSION",
    "WORD_BITS",
    "InvalidCodeError",
    "PackingLayout",
    "RequantizationError",
    "TernaryError",
    "latent_float32",
    "pack",
    "ternarize",
    "to_mant_exp",
    "unpack",
]

#: Lower clamp of the weight scale, as in the reference model.
BETA_MIN = 1e-5


class TernaryError(HadwareError):
    """A weight tensor, code array or word list cannot be quantized, packed or unpacked."""


class InvalidCodeError(TernaryError):
    """A ternary code is outside {-1, 0, +1}, or a packed word holds the invalid code 0b10 or a
    non-zero padding slot."""


class RequantizationError(TernaryError):
    """:func:`ternarize` was given weights that are already ternary-valued."""


@dataclasses.dataclass(frozen=True)
class PackingLayout:
    """A versioned layout of 2-bit ternary codes in ROM words (see the module docstring).

    Attributes
    ----------
    version : int
        Layout version, stored with exported weights; a reader refuses other versions.
    word_bits : int
        Bits per ROM word (8, 16, 32 or 64).
    code_bits : int
        Bits per code (2).
    code_zero, code_plus, code_minus : int
        Codes of the weights 0, +1 and -1.
    code_invalid : int
        The one 2-bit pattern that is not a weight.
    """

    version: int
    word_bits: int
    code_bits: int
    code_zero: int
    code_plus: int
    code_minus: int
    code_invalid: int

    def __post_init__(self) -> None:
        if self.word_bits not in (8, 16, 32, 64):
            raise ValueError(f"word_bits must be 8, 16, 32 or 64, not {self.word_bits!r}")
        if self.code_bits != 2:
            raise ValueError(f"code_bits must be 2, not {self.code_bits!r}")
        codes = (self.code_zero, self.code_plus, self.code_minus, self.code_invalid)
        if sorted(codes) != [0, 1, 2, 3]:
            raise ValueError(f"the four codes must be 0, 1, 2, 3 in some order, not {codes!r}")

    @property
    def codes_per_word(self) -> int:
        """Codes held by one word."""
        return self.word_bits // self.code_bits

    @property
    def pad_code(self) -> int:
        """Code written in unused slots (that of weight 0)."""
        return self.code_zero

    def words_per_row(self, cols: int) -> int:
        """Words taken by one output row of ``cols`` inputs."""
        return -(-cols // self.codes_per_word)

    def word_count(self, rows: int, cols: int) -> int:
        """Words of a ``rows`` x ``cols`` matrix."""
        return rows * self.words_per_row(cols)

    def locate(self, row: int, col: int, cols: int) -> tuple[int, int]:
        """``(word index, lowest bit)`` of the code of weight ``(row, col)``."""
        return (row * self.words_per_row(cols) + col // self.codes_per_word,
                self.code_bits * (col % self.codes_per_word))

    def encode(self, value: int) -> int:
        """The code of the weight ``value`` in {-1, 0, +1}."""
        table = {-1: self.code_minus, 0: self.code_zero, 1: self.code_plus}
        if value not in table:
            raise InvalidCodeError(f"a ternary weight must be -1, 0 or +1, not {value!r}")
        return table[value]

    def decode(self, code: int) -> int:
        """The weight of a 2-bit ``code``."""
        table = {self.code_minus: -1, self.code_zero: 0, self.code_plus: 1}
        if code not in table:
            raise InvalidCodeError(f"code {code:#04b} is not a ternary weight code")
        return table[code]

    @property
    def word_dtype(self) -> np.dtype:
        """The unsigned numpy dtype of a word."""
        return np.dtype(f"uint{self.word_bits}")


#: Layout version 1: 32-bit words, 16 codes, 2-bit two's-complement codes, row-major.
LAYOUT_V1 = PackingLayout(version=1, word_bits=32, code_bits=2, code_zero=0b00,
                          code_plus=0b01, code_minus=0b11, code_invalid=0b10)

#: The layout written by :func:`pack` unless told otherwise.
LAYOUT = LAYOUT_V1

# Plain constants of the current layout, for the RTL decoder.
LAYOUT_VERSION = LAYOUT.version
WORD_BITS = LAYOUT.word_bits
CODE_BITS = LAYOUT.code_bits
CODES_PER_WORD = LAYOUT.codes_per_word
CODE_ZERO = LAYOUT.code_zero
CODE_PLUS = LAYOUT.code_plus
CODE_MINUS = LAYOUT.code_minus
CODE_INVALID = LAYOUT.code_invalid


def _check_codes(codes: Any) -> np.ndarray:
    a = np.asarray(codes)
    if a.ndim != 2:
        raise TernaryError(f"codes must be a 2-D array (rows, cols), not shape {a.shape}")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer)
                                   or np.issubdtype(a.dtype, np.floating)):
        raise TernaryError(f"codes must be an integer array, not {a.dtype}")
    bad = ~np.isin(a, (-1, 0, 1))
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidCodeError(f"codes[{r}, {c}] is {a[r, c].item()!r}; a ternary code must be "
                               f"-1, 0 or +1 ({int(bad.sum())} invalid value(s) in all)")
    return a.astype(np.int8)


def pack(codes: Any, layout: PackingLayout = LAYOUT) -> np.ndarray:
    """Pack a ``(rows, cols)`` array of ternary codes into ROM words of ``layout``.

    Returns a 1-D array of ``layout.word_count(rows, cols)`` words of ``layout.word_dtype``.
    Raises :class:`InvalidCodeError` for a value outside {-1, 0, +1} (naming its position) and
    :class:`TernaryError` for an array that is not 2-D integer-valued.
    """
    a = _check_codes(codes)
    rows, cols = a.shape
    cpw, wpr = layout.codes_per_word, layout.words_per_row(cols)
    lut = np.zeros(3, dtype=np.uint64)
    lut[[-1 + 1, 0 + 1, 1 + 1]] = [layout.code_minus, layout.code_zero, layout.code_plus]
    slots = np.full((rows, wpr * cpw), layout.pad_code, dtype=np.uint64)
    slots[:, :cols] = lut[a.astype(np.int64) + 1]
    slots = slots.reshape(rows, wpr, cpw)
    shifts = (np.arange(cpw, dtype=np.uint64) * np.uint64(layout.code_bits))
    words = np.bitwise_or.reduce(slots << shifts, axis=2)
    return words.reshape(-1).astype(layout.word_dtype)


def unpack(words: Sequence[int] | np.ndarray, rows: int, cols: int,
           layout: PackingLayout = LAYOUT) -> np.ndarray:
    """Unpack ROM words of ``layout`` into a ``(rows, cols)`` int8 array of ternary codes.

    Raises :class:`TernaryError` when the number of words is not
    ``layout.word_count(rows, cols)`` or a word is negative or wider than ``layout.word_bits``,
    and :class:`InvalidCodeError` when a slot holds the invalid code or a padding slot is not
    ``layout.pad_code`` (naming the word and slot).
    """
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise TernaryError(f"{name} must be a positive integer, not {v!r}")
    rows, cols = int(rows), int(cols)
    w = [int(v) for v in np.asarray(words).reshape(-1).tolist()]
    expected = layout.word_count(rows, cols)
    if len(w) != expected:
        raise TernaryError(f"a {rows} x {cols} matrix takes {expected} words of layout "
                           f"v{layout.version}, not {len(w)}")
    for i, v in enumerate(w):
        if not 0 <= v < 2 ** layout.word_bits:
            raise TernaryError(f"word {i} is {v}, not a {layout.word_bits}-bit unsigned value")
    cpw, wpr = layout.codes_per_word, layout.words_per_row(cols)
    arr = np.array(w, dtype=np.uint64).reshape(rows, wpr, 1)
    shifts = np.arange(cpw, dtype=np.uint64) * np.uint64(layout.code_bits)
    slots = ((arr >> shifts) & np.uint64(2 ** layout.code_bits - 1)).astype(np.int64)
    slots = slots.reshape(rows, wpr * cpw)
    invalid = slots[:, :cols] == layout.code_invalid
    if invalid.any():
        r, c = (int(i) for i in np.argwhere(invalid)[0])
        word, bit = layout.locate(r, c, cols)
        raise InvalidCodeError(f"word {word} holds the invalid code "
                               f"{layout.code_invalid:#04b} at bits [{bit + 1}:{bit}] "
                               f"(row {r}, column {c})")
    pad = slots[:, cols:] != layout.pad_code
    if pad.any():
        r, k = (int(i) for i in np.argwhere(pad)[0])
        word, bit = layout.locate(r, cols + k, cols)
        raise InvalidCodeError(f"word {word} has a non-zero padding slot at bits "
                               f"[{bit + 1}:{bit}] (row {r})")
    lut = np.zeros(4, dtype=np.int8)
    lut[[layout.code_minus, layout.code_zero, layout.code_plus]] = [-1, 0, 1]
    return lut[slots[:, :cols]]


def latent_float32(w: Any) -> np.ndarray:
    """A latent weight tensor (array or torch tensor) as float32, checked: a
    :class:`TernaryError` for an empty, non-numeric or non-finite one. Every weight format's
    rule starts here."""
    if hasattr(w, "detach"):  # a torch tensor, without importing torch
        w = w.detach().cpu().numpy()
    a = np.asarray(w)
    if a.dtype.kind not in "iuf":
        raise TernaryError(f"weights must be a real-valued array, not {a.dtype}")
    t = a.astype(np.float32)
    if t.size == 0:
        raise TernaryError("weights must not be empty")
    if not np.isfinite(t).all():
        raise TernaryError("weights contain NaN or infinite values")
    return t


def ternarize(w: Any, *, allow_ternary_valued: bool = False) -> tuple[np.ndarray, float]:
    """Quantize a latent weight tensor to ternary codes and one scale, once.

    Returns ``(codes, beta)``: int8 codes in {-1, 0, +1} of the shape of ``w`` and the float
    ``beta = max(mean|w|, 1e-5)`` (a float32 value), computed in float32 as the reference model
    does (module docstring).

    Raises :class:`TernaryError` for an empty, non-numeric or non-finite tensor, and
    :class:`RequantizationError` when ``w`` is already ternary-valued (some entries zero and all
    others of one magnitude): quantizing it again would shrink the scale. Load exported codes
    and betas as they are instead. ``allow_ternary_valued=True`` skips that check.
    """
    t = latent_float32(w)
    mag = np.abs(t)
    if not allow_ternary_valued:
        nonzero = mag[mag != 0]
        if 0 < nonzero.size < mag.size and bool((nonzero == nonzero[0]).all()):
            raise RequantizationError(
                "weights are already ternary-valued (zeros and a single magnitude "
                f"{float(nonzero[0])!r}); quantizing them again would shrink beta by the "
                "fraction of non-zeros - load the exported codes and beta as they are")
    beta = max(np.float32(mag.sum(dtype=np.float64) / mag.size), np.float32(BETA_MIN))
    scale = np.float32(1.0) / beta
    codes = np.clip(np.rint(t * scale), -1, 1).astype(np.int8)
    return codes, float(beta)


def to_mant_exp(value: float, mant_bits: int) -> tuple[int, int]:
    """Convert a positive finite constant (a beta, or a scale derived from one) to the
    hardware's ``(mant, exp)`` form.

    ``mant`` is the value scaled by a power of two into ``[2**(mant_bits-1), 2**mant_bits)``
    and rounded half up, exactly (rational arithmetic on the float's exact value); when rounding
    reaches ``2**mant_bits`` the mantissa becomes ``2**(mant_bits-1)`` and ``exp`` drops by one.
    Then ``value ~= mant * 2**-exp`` with a relative error of at most ``2**-mant_bits``.
    Raises ``ValueError`` for a value that is not positive and finite or for
    ``mant_bits < 1``.
    """
    if isinstance(mant_bits, bool) or not isinstance(mant_bits, int) or mant_bits < 1:
        raise ValueError(f"mant_bits must be a positive integer, not {mant_bits!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"value must be positive and finite, not {value!r}")
    _, e2 = math.frexp(v)  # v = f * 2**e2, 0.5 <= f < 1
    exp = mant_bits - e2
    mant = math.floor(Fraction(v) * Fraction(2) ** exp + Fraction(1, 2))
    if mant == 2 ** mant_bits:
        mant, exp = mant // 2, exp - 1
    return mant, exp
