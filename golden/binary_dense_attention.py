"""Golden model of the binarized dense attention baseline: the HAD core without its sparsifier.

The RTL must reproduce :func:`binary_dense_attention` bit for bit. ``F = exp_frac_bits``,
``O = out_frac_bits``, ``R = recip_bits`` and ``S = out_shift = R - O`` come from
:class:`~hadware.config.binary_dense_attention.BinaryDenseAttentionConfig`, as do the register
widths quoted below.

Vector-file contract
--------------------
Inputs (see :func:`check_inputs`), as for the HAD core:

* ``q``: ``(m, d)``, values -1 and +1, ``m >= 1`` queries;
* ``k``: ``(n, d)``, values -1 and +1, ``1 <= n <= n_max`` keys;
* ``v``: ``(n, d_v)``, integers in -128..127, row ``j`` belongs to key ``j``;
* ``n_valid`` (optional): ``(m,)``, integers in ``1..n``; query ``i`` sees keys
  ``0 .. n_valid[i] - 1`` only (default: all ``n``).

Output (see :func:`run_vectors`): ``out``, int32 ``(m, d_v)``, in units of ``2**-O``.

Arithmetic, per query row (all integers, no step saturates or wraps)
--------------------------------------------------------------------
1. **Scores.** As in the HAD core: element +1 is bit 1, -1 is bit 0, element ``c`` at bit ``c``;
   ``s_j = 2 * popcount(XNOR(q, k_j)) - d``, an integer in ``[-d, d]`` with the parity of ``d``
   (``score_width`` bits, signed).
2. **Maximum.** ``s_max = max(s_j for j < n_valid)``.
3. **Numerators.** For **every** ``j < n_valid``: ``a_j = (s_max - s_j) / 2``, an exact integer in
   ``[0, d]``, and ``e_j = LUT[a_j]`` with the HAD table
   ``LUT[a] = floor(2**F * exp(-2 * temperature * a) + 0.5)``
   (:attr:`BinaryDenseAttentionConfig.lut`). Every key tied with the maximum weighs ``2**F``.
   There is no sparsifier: no key is dropped, however small its weight (it may be 0).
4. **Sums.** ``den = sum_j e_j`` (``2**F <= den <= n_max * 2**F``, ``den_width`` bits, unsigned)
   and ``num_c = sum_j e_j * v[j, c]`` (``|num_c| <= 128 * den``, ``num_width`` bits, signed), over
   ``j < n_valid``, exact (any order of addition).
5. **Reciprocal**, once per query: ``recip = floor((2**R + floor(den / 2)) / den)`` with
   ``R = O + F + ceil(log2(n_max)) + 10`` (the HAD rule with ``top_k`` replaced by ``n_max``, the
   most entries a query weighs).
6. **Output.** ``out_c = floor((num_c * recip + 2**(S - 1)) / 2**S)``: round to nearest, halves
   toward +infinity; ``out_c`` lies in ``[-128 * 2**O, 127 * 2**O]`` (``out_width`` bits).

Accuracy: ``|out - float_reference| <= error_bound_ulp`` (see
:attr:`BinaryDenseAttentionConfig.error_bound_ulp`).

The input checks (:func:`check_attention_inputs`) and the dense softmax average
(:func:`dense_average`) are shared with the int8 baseline :mod:`hadware.golden.std_attention`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.errors import InputError
from hadware.golden.attention import hamming_scores, reciprocal, scale_output

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "DenseResult",
    "binary_dense_attention",
    "check_attention_inputs",
    "check_inputs",
    "dense_average",
    "float_reference",
    "run_vectors",
    "softmax_reference",
    "table_weights",
]

#: Arrays of an input vector file; ``n_valid`` may be left out.
INPUT_NAMES = ("q", "k", "v", "n_valid")
#: Arrays of an output vector file.
OUTPUT_NAMES = ("out",)


# -- input checking --------------------------------------------------------------------------


def _array(name: str, x: Any) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # ragged nested lists, for one
        raise InputError(f"{name} is not a rectangular array") from None
    if a.dtype == np.bool_:
        raise InputError(f"{name} must hold numbers, not booleans")
    if a.dtype.kind not in "iuf":
        raise InputError(f"{name} must be an integer or real array, not dtype {a.dtype}")
    return a


def _check_values(name: str, a: np.ndarray, allowed: str, ok: np.ndarray) -> None:
    """``ok`` marks the acceptable elements; report the first other one."""
    if a.dtype.kind == "f":
        ok = ok & np.isfinite(a) & (a == np.floor(a))
    if not ok.all():
        at = tuple(int(i) for i in np.argwhere(~ok)[0])
        where = "[" + ", ".join(map(str, at)) + "]"
        raise InputError(f"{name} must hold {allowed}, found {a[at].item()!r} at {where}")


def check_attention_inputs(cfg: Any, arrays: Mapping[str, Any], *, block: str,
                           binary: bool) -> dict[str, np.ndarray]:
    """Check ``q``, ``k``, ``v`` and the optional ``n_valid`` of an attention vector file.

    ``cfg`` provides ``d``, ``n_max`` and ``d_v``. With ``binary``, ``q`` and ``k`` hold only
    -1 and +1; otherwise any int8 values. ``v`` holds int8 values; ``n_valid`` integers in
    ``1..n``. Any integer or real dtype is accepted when its values are exact (checked before
    any cast: an int32 300 is reported, never wrapped). Returns ``q``, ``k``, ``v`` as int8 and
    ``n_valid`` as int32 (filled with ``n`` when absent). Raises :class:`InputError` naming the
    array; ``block`` names the block in the message about unknown arrays.
    """
    unknown = sorted(set(arrays) - set(INPUT_NAMES))
    if unknown:
        raise InputError(f"unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"{block} takes q, k, v and optionally n_valid")
    for name in ("q", "k", "v"):
        if name not in arrays:
            raise InputError(f"missing array {name!r}")
    q, k, v = (_array(name, arrays[name]) for name in ("q", "k", "v"))
    for name, a, rows in (("q", q, "m"), ("k", k, "n")):
        if a.ndim != 2 or a.shape[1] != cfg.d:
            raise InputError(f"{name} must have shape ({rows}, d) = ({rows}, {cfg.d}), "
                             f"not {a.shape}")
        if a.shape[0] < 1:
            raise InputError(f"{name} must have at least one row")
    m, n = q.shape[0], k.shape[0]
    if n > cfg.n_max:
        raise InputError(f"k has {n} rows (keys), more than n_max = {cfg.n_max}")
    if v.shape != (n, cfg.d_v):
        raise InputError(f"v must have shape (n, d_v) = ({n}, {cfg.d_v}), not {v.shape}")
    for name, a in (("q", q), ("k", k)):
        if binary:
            _check_values(name, a, "only -1 and +1", (a == 1) | (a == -1))
        else:
            _check_values(name, a, "integers in -128..127 (int8)", (a >= -128) & (a <= 127))
    _check_values("v", v, "integers in -128..127 (int8)", (v >= -128) & (v <= 127))
    if "n_valid" in arrays:
        n_valid = _array("n_valid", arrays["n_valid"])
        if n_valid.shape != (m,):
            raise InputError(f"n_valid must have shape (m,) = ({m},), not {n_valid.shape}")
        _check_values("n_valid", n_valid, f"integers between 1 and n = {n}",
                      (n_valid >= 1) & (n_valid <= n))
    else:
        n_valid = np.full(m, n)
    return {"q": q.astype(np.int8), "k": k.astype(np.int8), "v": v.astype(np.int8),
            "n_valid": n_valid.astype(np.int32)}


def check_inputs(cfg: BinaryDenseAttentionConfig,
                 arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The vector-file checks of the module docstring (see :func:`check_attention_inputs`)."""
    return check_attention_inputs(cfg, arrays, block="binary_dense_attention", binary=True)


# -- the integer model -----------------------------------------------------------------------


class DenseResult(NamedTuple):
    """Every value of a dense softmax average, int64 tensors."""

    #: ``(m, d_v)`` output in units of ``2**-O``.
    out: torch.Tensor
    #: ``(m,)`` row maxima over the valid keys.
    s_max: torch.Tensor
    #: ``(m, n)`` weights ``e_j`` (0 for keys past ``n_valid``).
    weights: torch.Tensor
    #: ``(m,)`` denominators.
    den: torch.Tensor
    #: ``(m, d_v)`` numerators.
    num: torch.Tensor
    #: ``(m,)`` reciprocals.
    recip: torch.Tensor


def dense_average(cfg: Any, scores: torch.Tensor, n_valid: torch.Tensor | None,
                  v: torch.Tensor,
                  weight_of: Callable[[torch.Tensor], torch.Tensor]) -> DenseResult:
    """Steps 2 to 6: a softmax average over every valid key of each row.

    ``scores`` int64 ``(m, n)``; ``n_valid`` ``(m,)`` in ``1..n`` (``None``: all ``n``); ``v``
    ``(n, d_v)``; ``weight_of`` maps a tensor of differences ``s_max - s_j >= 0`` to weights in
    ``[0, 2**F]`` with ``weight_of(0) = 2**F``. ``cfg`` provides ``recip_bits``, ``out_shift``
    and ``product_width``.
    """
    m, n = scores.shape
    if n_valid is None:
        n_valid = torch.full((m,), n, dtype=torch.int64)
    valid = torch.arange(n)[None, :] < n_valid[:, None]
    low = torch.iinfo(torch.int64).min
    s_max = torch.where(valid, scores, torch.full_like(scores, low)).max(1).values
    delta = torch.where(valid, s_max[:, None] - scores, torch.zeros_like(scores))
    e = torch.where(valid, weight_of(delta), torch.zeros_like(scores))
    den = e.sum(1)
    num = e @ v.to(torch.int64)  # exact: |num| < 2**63 for every configuration
    recip = reciprocal(cfg, den)
    out = scale_output(cfg, num, recip[:, None])
    return DenseResult(out, s_max, e, den, num, recip)


def table_weights(cfg: BinaryDenseAttentionConfig, delta: torch.Tensor) -> torch.Tensor:
    """``LUT[delta / 2]`` (step 3). Raises ``ValueError`` for an odd, negative or too large
    difference (impossible for XNOR-popcount scores)."""
    if bool(((delta % 2 != 0) | (delta < 0) | (delta > 2 * cfg.d)).any()):
        raise ValueError("score differences must be even and lie in [0, 2*d]")
    return torch.tensor(cfg.lut, dtype=torch.int64)[delta // 2]


def binary_dense_attention(cfg: BinaryDenseAttentionConfig, q: torch.Tensor, k: torch.Tensor,
                           v: torch.Tensor, n_valid: torch.Tensor | None = None) -> DenseResult:
    """The bit-exact model (steps 1 to 6), vectorized over queries. Inputs are integer tensors
    already checked by :func:`check_inputs`."""
    return dense_average(cfg, hamming_scores(q, k), n_valid, v,
                         lambda delta: table_weights(cfg, delta))


def _tensors(checked: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(checked[name].astype(np.int64)) for name in INPUT_NAMES)


def run_vectors(cfg: BinaryDenseAttentionConfig,
                arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set and compute ``out`` (int32 ``(m, d_v)``)."""
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    res = binary_dense_attention(cfg, q, k, v, n_valid)
    return {"out": res.out.numpy().astype(np.int32)}


def softmax_reference(cfg: Any, scores: torch.Tensor, selected: torch.Tensor,
                      v_rows: torch.Tensor) -> np.ndarray:
    """``2**O * sum_j p_j * v_j`` in float64 with ``p = softmax(temperature * s)`` over the
    entries marked in ``selected``. ``scores`` and ``selected`` are ``(m, n)``; ``v_rows`` is
    ``(m, n, d_v)`` (the value row of each entry)."""
    s = scores.to(torch.float64)
    low = torch.full_like(s, -torch.inf)
    top = torch.where(selected, s, low).max(1, keepdim=True).values
    w = torch.where(selected, torch.exp(cfg.temperature * (s - top)), torch.zeros_like(s))
    p = w / w.sum(1, keepdim=True)
    return ((p[:, :, None] * v_rows.to(torch.float64)).sum(1) * 2.0**cfg.out_frac_bits).numpy()


def float_reference(cfg: BinaryDenseAttentionConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """The exact softmax of ``temperature * s`` over all valid keys applied to ``v``, float64
    ``(m, d_v)`` in the units of ``out``."""
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    scores = hamming_scores(q, k)
    selected = torch.arange(k.shape[0])[None, :] < n_valid[:, None]
    return softmax_reference(cfg, scores, selected, v[None].expand(q.shape[0], -1, -1))
