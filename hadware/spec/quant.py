"""Activation quantization rules shared by the models and the hardware's host side.

- :func:`fixed_point`: a float to a saturated two's-complement fixed-point integer, rounding
  half up.
- :func:`block_fixed_point`: a token to mantissas in that format and one exponent, the
  smallest at which nothing saturates; the MLP's token input (step 0 of the
  :mod:`hadware.golden.mlp` specification).
- :func:`absmax_int8`: the reference BitLinear's per-token absmax int8 quantization (the float
  reference the integer datapath is measured against).

The ternary (absmean) weight rule is :func:`hadware.spec.ternary.ternarize`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["REFERENCE_ABSMAX_FLOOR", "BlockRangeError", "absmax_int8", "block_fixed_point",
           "fixed_point"]

#: The reference model's floor on the per-token absmax (not implemented in hardware: step L6
#: of the :mod:`hadware.golden.mlp` specification says why it makes no difference).
REFERENCE_ABSMAX_FLOOR = 1e-5


def fixed_point(x: Any, bits: int, frac_bits: int) -> np.ndarray:
    """``SAT(floor(x * 2**frac_bits + 1/2), bits)`` as int64, shape kept: round half up
    (towards +inf), then saturate to the ``bits``-bit two's-complement range."""
    v = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** frac_bits + 0.5)
    return np.clip(v, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(np.int64)


class BlockRangeError(ValueError):
    """A token too large for the largest exponent of :func:`block_fixed_point`.

    Attributes ``token``, ``element`` (indices) and ``value`` (the first offending element)."""

    def __init__(self, token: int, element: int, value: float, lo: float, hi: float):
        self.token, self.element, self.value = token, element, value
        super().__init__(f"token {token}, element {element} = {value!r} is outside the input "
                         f"range [{lo!r}, {hi!r})")


def block_fixed_point(x: Any, bits: int, frac_bits: int,
                      exp_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Block floating point, one exponent per token (rows of ``x``, shape ``(t, d)``).

    Each token's exponent ``xe`` is the smallest integer in ``[-2**(exp_bits-1),
    2**(exp_bits-1) - 1]`` (just ``0`` when ``exp_bits == 0``) for which every element's
    ``floor(x_i * 2**(frac_bits - xe) + 1/2)`` fits ``bits`` bits (two's complement); those are
    the mantissas ``X_i``, so ``x_i ~= X_i * 2**(xe - frac_bits)``. Returns ``(X, xe)``: int64
    ``(t, d)`` and int64 ``(t,)``. Nothing saturates: a token that fits at no exponent raises
    :class:`BlockRangeError` naming its first element beyond the range.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (tokens, elements), not of shape {x.shape}")
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    exps = range(-(2 ** (exp_bits - 1)), 2 ** (exp_bits - 1)) if exp_bits else range(0, 1)
    mant = np.zeros(x.shape, dtype=np.int64)
    xe = np.full(x.shape[0], exps[-1], dtype=np.int64)
    todo = np.ones(x.shape[0], dtype=bool)
    for e in exps:  # the scaling by a power of two is exact in float64
        v = np.floor(x[todo] * 2.0 ** (frac_bits - e) + 0.5)
        fits = ((v >= lo) & (v <= hi)).all(axis=1)
        rows = np.flatnonzero(todo)[fits]
        mant[rows] = v[fits].astype(np.int64)
        xe[rows] = e
        todo[rows] = False
        if not todo.any():
            break
    if todo.any():
        t = int(np.flatnonzero(todo)[0])
        scale = 2.0 ** (frac_bits - exps[-1])
        bad = (np.floor(x[t] * scale + 0.5) < lo) | (np.floor(x[t] * scale + 0.5) > hi)
        i = int(np.flatnonzero(bad)[0])
        raise BlockRangeError(t, i, float(x[t, i]), (lo - 0.5) / scale, (hi + 0.5) / scale)
    return mant, xe


def absmax_int8(x: Any, floor: float = REFERENCE_ABSMAX_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (last axis) absmax int8 quantization of the reference BitLinear, in float64.

    Returns ``(x_q, s)``: ``s = 127 / max(max|x|, floor)`` of shape ``(..., 1)`` and
    ``x_q = clamp(round(x * s), -128, 127)`` (float64 holding integers; ``round`` is half to
    even, as ``torch.round``). Then ``x ~= x_q / s``. ``s`` is evaluated as
    ``127 * (1 / max(...))``, which is what the reference's torch expression ``127.0 / t``
    computes, so that the result is bit-identical to the training model's.
    """
    x = np.asarray(x, dtype=np.float64)
    s = 127.0 * (1.0 / np.maximum(np.abs(x).max(axis=-1, keepdims=True), floor))
    return np.clip(np.rint(x * s), -128, 127), s
