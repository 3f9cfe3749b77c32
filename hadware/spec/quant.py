"""Activation quantization rules shared by the models and the hardware's host side.

- :func:`fixed_point`: a float to a saturated two's-complement fixed-point integer, rounding
  half up; the MLP's token input (step 0 of the :mod:`hadware.golden.mlp` specification).
- :func:`absmax_int8`: the reference BitLinear's per-token absmax int8 quantization (the float
  reference the integer datapath is measured against).

The ternary (absmean) weight rule is :func:`hadware.spec.ternary.ternarize`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["REFERENCE_ABSMAX_FLOOR", "absmax_int8", "fixed_point"]

#: The reference model's floor on the per-token absmax (not implemented in hardware: step L6
#: of the :mod:`hadware.golden.mlp` specification says why it makes no difference).
REFERENCE_ABSMAX_FLOOR = 1e-5


def fixed_point(x: Any, bits: int, frac_bits: int) -> np.ndarray:
    """``SAT(floor(x * 2**frac_bits + 1/2), bits)`` as int64, shape kept: round half up
    (towards +inf), then saturate to the ``bits``-bit two's-complement range."""
    v = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** frac_bits + 0.5)
    return np.clip(v, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(np.int64)


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
