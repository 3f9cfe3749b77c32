"""Weight formats of a BitLinear projection: how latent weights become integer codes, how the
codes lie in ROM words, and what one code multiplies (numpy only: the RTL, the golden model and
the exporter import it).

Two formats, chosen by a configuration's ``weights`` field:

``"ternary"``
    The MatMul-free format: codes in {-1, 0, +1}, one absmean scale per tensor
    (:func:`hadware.spec.ternary.ternarize`), 2-bit codes packed by
    :data:`hadware.spec.ternary.LAYOUT_V1`. A code selects ``+q``, ``-q`` or nothing: no
    multiplier.
``"int8"``
    The standard format: codes in [-127, 127], one absmax scale per tensor (:func:`int8ize`),
    8-bit two's-complement codes, four to a 32-bit word (:data:`INT8_LAYOUT`). A code is a
    multiplier operand.

Either way the effective weight is ``beta * code`` and the layer's integer arithmetic
(:mod:`hadware.golden.mlp`, steps L1-L9) is the same; only ``|code| <= code_max`` changes the
accumulator's width (:attr:`WeightFormat.product_bits`).

Int8 quantization
-----------------
:func:`int8ize`, once, in float32::

    beta = max(max(|W|) / 127, 1e-5)       # one scale per tensor
    W_8  = clamp(round(W * (1 / beta)), -127, 127)   # round half to even

Int8 packing layout, version 1
------------------------------
Row-major as the ternary layout: each row of ``cols`` codes starts on a new 32-bit word and
takes ``ceil(cols / 4)`` words; slot ``j = c % 4`` of a word holds the code of column ``c`` as
an 8-bit two's complement at bits ``[8j+7 : 8j]``; unused slots of a row's last word hold 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hadware.spec import ternary
from hadware.spec.ternary import BETA_MIN, InvalidCodeError, TernaryError

__all__ = ["FORMATS", "INT8_LAYOUT", "WeightFormat", "int8ize", "weight_format"]


@dataclasses.dataclass(frozen=True)
class Int8Layout:
    """The int8 packing layout (module docstring): the attributes a ROM reader needs, named
    as those of :class:`hadware.spec.ternary.PackingLayout`."""

    version: int = 1
    word_bits: int = 32
    code_bits: int = 8

    @property
    def codes_per_word(self) -> int:
        return self.word_bits // self.code_bits

    def words_per_row(self, cols: int) -> int:
        return -(-cols // self.codes_per_word)

    def word_count(self, rows: int, cols: int) -> int:
        return rows * self.words_per_row(cols)


#: Int8 layout version 1: 32-bit words of four 8-bit codes, row-major.
INT8_LAYOUT = Int8Layout()


def int8ize(w: Any) -> tuple[np.ndarray, float]:
    """Quantize a latent weight tensor to int8 codes in [-127, 127] and one absmax scale, once
    (module docstring). Returns ``(codes int8, beta)``; raises
    :class:`~hadware.spec.ternary.TernaryError` for an empty, non-numeric or non-finite
    tensor."""
    t = ternary.latent_float32(w)
    beta = max(np.float32(np.abs(t).max() / np.float32(127.0)), np.float32(BETA_MIN))
    codes = np.clip(np.rint(t * (np.float32(1.0) / beta)), -127, 127).astype(np.int8)
    return codes, float(beta)


def _check_int8(codes: Any) -> np.ndarray:
    a = np.asarray(codes)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise TernaryError(f"codes must be a 2-D integer array, not {a.dtype} {a.shape}")
    bad = (a < -127) | (a > 127)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidCodeError(f"codes[{r}, {c}] is {a[r, c].item()!r}; an int8 code must lie "
                               f"in [-127, 127]")
    return a.astype(np.int64)


def pack_int8(codes: Any, layout: Int8Layout = INT8_LAYOUT) -> np.ndarray:
    """Pack ``(rows, cols)`` int8 codes into uint32 words of the int8 layout."""
    a = _check_int8(codes)
    rows, cols = a.shape
    cpw, wpr = layout.codes_per_word, layout.words_per_row(cols)
    slots = np.zeros((rows, wpr * cpw), dtype=np.uint64)
    slots[:, :cols] = (a & 0xFF).astype(np.uint64)
    shifts = np.arange(cpw, dtype=np.uint64) * np.uint64(layout.code_bits)
    words = np.bitwise_or.reduce(slots.reshape(rows, wpr, cpw) << shifts, axis=2)
    return words.reshape(-1).astype(np.uint32)


def unpack_int8(words: Sequence[int] | np.ndarray, rows: int, cols: int,
                layout: Int8Layout = INT8_LAYOUT) -> np.ndarray:
    """The ``(rows, cols)`` int8 codes of words of the int8 layout; raises
    :class:`~hadware.spec.ternary.TernaryError` for a wrong word count, a word out of range, a
    code of -128 or a non-zero padding slot."""
    w = np.asarray(words).reshape(-1).astype(np.int64)
    expected = layout.word_count(rows, cols)
    if w.size != expected:
        raise TernaryError(f"a {rows} x {cols} matrix takes {expected} words of the int8 "
                           f"layout v{layout.version}, not {w.size}")
    if w.size and (w.min() < 0 or w.max() >= 2 ** layout.word_bits):
        raise TernaryError(f"a word is not a {layout.word_bits}-bit unsigned value")
    cpw = layout.codes_per_word
    shifts = np.arange(cpw, dtype=np.int64) * layout.code_bits
    slots = ((w.reshape(rows, -1, 1) >> shifts) & 0xFF).reshape(rows, -1)
    if (slots[:, cols:] != 0).any():
        raise InvalidCodeError("a padding slot of the int8 layout is not 0")
    codes = np.where(slots >= 128, slots - 256, slots)[:, :cols]
    if (codes == -128).any():
        raise InvalidCodeError("an int8 code of -128 is not a weight of the int8 format")
    return codes.astype(np.int8)


@dataclasses.dataclass(frozen=True)
class WeightFormat:
    """One weight format (module docstring).

    Attributes
    ----------
    name : str
        ``"ternary"`` or ``"int8"``.
    code_max : int
        Largest ``|code|``.
    layout : the packing layout (``version``, ``word_bits``, ``code_bits``,
        ``codes_per_word``, ``words_per_row``).
    quantize : callable
        Latent weights -> ``(codes int8, beta)``, once.
    pack, unpack : callable
        Codes <-> ROM words of ``layout``.
    """

    name: str
    code_max: int
    layout: Any
    quantize: Callable[[Any], tuple[np.ndarray, float]]
    pack: Callable[[Any], np.ndarray]
    unpack: Callable[[Any, int, int], np.ndarray]

    @property
    def product_bits(self) -> int:
        """Signed width of ``code * q`` for an activation ``|q| <= 127``."""
        return (127 * self.code_max).bit_length() + 1


FORMATS: dict[str, WeightFormat] = {
    "ternary": WeightFormat("ternary", 1, ternary.LAYOUT_V1, ternary.ternarize,
                            lambda c: ternary.pack(c, ternary.LAYOUT_V1),
                            lambda w, r, c: ternary.unpack(w, r, c, ternary.LAYOUT_V1)),
    "int8": WeightFormat("int8", 127, INT8_LAYOUT, int8ize, pack_int8, unpack_int8),
}


def weight_format(name: str) -> WeightFormat:
    """The format named ``name`` (a config's ``weights`` field)."""
    return FORMATS[name]
