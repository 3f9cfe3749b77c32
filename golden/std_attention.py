"""Golden model of the standard attention baseline: int8 scores, a softmax over all keys.

The RTL must reproduce :func:`std_attention` bit for bit. ``F = exp_frac_bits``,
``O = out_frac_bits``, ``P = exp_table_bits``, ``Q = exp_interp_bits``, ``H = P + Q``,
``G = exp_scale_shift``, ``c = exp_scale``, ``R = recip_bits`` and ``S = out_shift`` come from
:class:`~hadware.config.std_attention.StdAttentionConfig`, as do the register widths below.

Vector-file contract
--------------------
Inputs (see :func:`check_inputs`):

* ``q``: ``(m, d)``, integers in -128..127 (int8), ``m >= 1`` queries;
* ``k``: ``(n, d)``, integers in -128..127, ``1 <= n <= n_max`` keys;
* ``v``: ``(n, d_v)``, integers in -128..127, row ``j`` belongs to key ``j``;
* ``n_valid`` (optional): ``(m,)``, integers in ``1..n``; query ``i`` sees keys
  ``0 .. n_valid[i] - 1`` only (default: all ``n``).

Output (see :func:`run_vectors`): ``out``, int32 ``(m, d_v)``, in units of ``2**-O``.

Arithmetic, per query row (all integers, no step saturates or wraps unless it says so)
---------------------------------------------------------------------------------------
1. **Scores.** ``s_j = sum_c q[c] * k_j[c]``, the exact dot product: an integer in
   ``[-16256 * d, 16384 * d]`` (``score_width`` bits, signed).
2. **Maximum.** ``s_max = max(s_j for j < n_valid)``; ``delta_j = s_max - s_j`` lies in
   ``[0, 32640 * d]`` (``delta_width`` bits).
3. **Weights** ``e_j = E(delta_j)`` for every ``j < n_valid``, where ``E`` is the fixed-point
   exponential below; ``E(delta)`` stands for ``exp(-temperature * delta)`` in units of ``2**-F``.
4. **Sums, reciprocal, output.** As in the HAD core with ``n_max`` weighed entries:
   ``den = sum_j e_j`` (``2**F <= den <= n_max * 2**F``), ``num_c = sum_j e_j * v[j, c]``, exact;
   ``recip = floor((2**R + floor(den / 2)) / den)`` with ``R = O + F + ceil(log2(n_max)) + 10``;
   ``out_c = floor((num_c * recip + 2**(S - 1)) / 2**S)``, ``S = R - O``.

The exponential E (range reduction, table of 2**-f, linear interpolation)
--------------------------------------------------------------------------
``exp(-temperature * delta) = 2**(-u)`` with ``u = delta * temperature / ln 2``.

a. **Scale.** ``x = delta * c``, with ``c = floor(temperature / ln 2 * 2**G + 0.5)``, is ``u`` with
   ``G`` fractional bits (``c`` has at least 24 significant bits).
b. **Rounding to H bits.** ``t = floor((x + 2**(G - H - 1)) / 2**(G - H))``: ``u`` rounded to the
   nearest multiple of ``2**-H``, halves up. Split ``t`` into ``i = floor(t / 2**H)`` (the integer
   part), ``j = floor(t / 2**Q) mod 2**P`` (the table node) and ``r = t mod 2**Q`` (the position
   between node ``j`` and node ``j + 1``).
c. **Table.** ``T[j] = floor(2**F * 2**(-j / 2**P) + 0.5)`` for ``j = 0..2**P``
   (:attr:`~hadware.config.std_attention.Int8AttentionFields.exp_table`; ``T[0] = 2**F``).
d. **Interpolation.** ``Y = T[j] * 2**Q - (T[j] - T[j + 1]) * r``, exact: ``2**(F + Q)`` times
   the straight line between the two nodes, in ``[T[j + 1] * 2**Q, T[j] * 2**Q]``.
e. **Shift and round.** ``k = Q + min(i, F + 2)`` and ``E = floor((Y + floor(2**(k - 1))) / 2**k)``
   (``Y / 2**k`` rounded to nearest, halves up; ``floor(2**-1) = 0`` when ``k = 0``). The
   saturation of ``i`` changes nothing: ``Y <= 2**(F + Q)`` gives ``E = 0`` for every
   ``i >= F + 2``. ``E(0) = 2**F`` exactly, and ``E`` never increases with ``delta``.

Hardware form: ``E`` is a two-stage unit (``x``, ``t`` and the table read; then ``Y``, the shift
and the rounding), one per lane here, one in total in the top-k baseline.

Accuracy: ``|E(delta) - 2**F * 2**(-u)| <= eps * 2**F * 2**(-u) + 1`` with ``eps`` =
:attr:`~hadware.config.std_attention.Int8AttentionFields.exp_relative_error` (``2.0e-5`` at
``P = 6``, ``Q = 10``), and ``|out - float_reference| <= error_bound_ulp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hadware.config.std_attention import Int8AttentionFields, StdAttentionConfig
from hadware.golden.binary_dense_attention import (
    INPUT_NAMES,
    DenseResult,
    check_attention_inputs,
    dense_average,
    softmax_reference,
)

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "check_inputs",
    "exp_weights",
    "float_reference",
    "int8_scores",
    "run_vectors",
    "std_attention",
]

#: Arrays of an output vector file.
OUTPUT_NAMES = ("out",)


def check_inputs(cfg: StdAttentionConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set against the contract of the module docstring; return ``q``,
    ``k``, ``v`` as int8 and ``n_valid`` as int32. Raises
    :class:`~hadware.errors.InputError` naming the array."""
    return check_attention_inputs(cfg, arrays, block="std_attention", binary=False)


def int8_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``s[i, j] = q_i . k_j`` exactly (int64 ``(m, n)``) for int8-valued ``q`` ``(m, d)`` and
    ``k`` ``(n, d)``."""
    return q.to(torch.int64) @ k.to(torch.int64).T


def exp_weights(cfg: Int8AttentionFields, delta: torch.Tensor) -> torch.Tensor:
    """The fixed-point exponential ``E(delta)`` (steps a to e), elementwise on int64 ``delta``
    in ``[0, delta_max]``. Raises ``ValueError`` for a difference outside that range."""
    if bool(((delta < 0) | (delta > cfg.delta_max)).any()):
        raise ValueError(f"score differences must lie in [0, {cfg.delta_max}]")
    p, q = cfg.exp_table_bits, cfg.exp_interp_bits
    g, h = cfg.exp_scale_shift, cfg.exp_index_bits
    # x < 2**(delta_width + 29) <= 2**54 for every configuration, so int64 holds it.
    x = delta * cfg.exp_scale
    t = (x + (1 << (g - h - 1))) >> (g - h)
    i = t >> h
    j = (t >> q) & ((1 << p) - 1)
    r = t & ((1 << q) - 1)
    table = torch.tensor(cfg.exp_table, dtype=torch.int64)
    tj, tj1 = table[j], table[j + 1]
    y = (tj << q) - (tj - tj1) * r
    k = q + torch.clamp(i, max=cfg.exp_shift_max)
    half = torch.where(k > 0, torch.ones_like(k) << (k - 1).clamp(min=0), torch.zeros_like(k))
    return (y + half) >> k


def std_attention(cfg: StdAttentionConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  n_valid: torch.Tensor | None = None) -> DenseResult:
    """The bit-exact model (steps 1 to 4), vectorized over queries. Inputs are integer tensors
    already checked by :func:`check_inputs`."""
    return dense_average(cfg, int8_scores(q, k), n_valid, v,
                         lambda delta: exp_weights(cfg, delta))


def _tensors(checked: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(checked[name].astype(np.int64)) for name in INPUT_NAMES)


def run_vectors(cfg: StdAttentionConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set and compute ``out`` (int32 ``(m, d_v)``)."""
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    return {"out": std_attention(cfg, q, k, v, n_valid).out.numpy().astype(np.int32)}


def float_reference(cfg: StdAttentionConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """The exact softmax of ``temperature * s`` over all valid keys applied to ``v``, float64
    ``(m, d_v)`` in the units of ``out``."""
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    selected = torch.arange(k.shape[0])[None, :] < n_valid[:, None]
    return softmax_reference(cfg, int8_scores(q, k), selected,
                             v[None].expand(q.shape[0], -1, -1))
