"""Golden model of the int8 top-k attention baseline: int8 scores, the HAD sparsifier, the
int8 baselines' fixed-point exponential over the selected keys.

The RTL must reproduce :func:`int8_topk_attention` bit for bit. The names ``F``, ``O``, ``R``,
``S`` and the exponential ``E`` are those of :mod:`hadware.golden.std_attention`, read from
:class:`~hadware.config.int8_topk_attention.Int8TopKAttentionConfig`.

Vector-file contract
--------------------
Inputs: as :mod:`hadware.golden.std_attention` (``q``, ``k``, ``v`` int8, optional ``n_valid``).
Outputs, all int32, as the HAD core's:

* ``out``: ``(m, d_v)``, in units of ``2**-O``;
* ``topk_index``: ``(m, top_k)``, the selected key indices, padded with -1;
* ``topk_score``: ``(m, top_k)``, their int8 dot-product scores, padded with 0.

Arithmetic, per query row
-------------------------
1. **Scores.** ``s_j = q . k_j``, exact (``score_width`` bits, signed).
2. **Top-k.** :func:`hadware.golden.topk.select_topk` over the first ``n_valid`` scores: the
   ``min(n_valid, top_k)`` highest, ties to the lower index, slots ordered by score descending
   then index ascending. ``s_max`` is the score of slot 0.
3. **Weights.** For each selected slot ``i``: ``e_i = E(s_max - s_i)``, the fixed-point
   exponential of :mod:`hadware.golden.std_attention` (steps a to e); slot 0 and every slot tied
   with it weigh ``2**F``. Padding slots weigh 0. The table of ``E`` is indexed by the scaled
   score difference, whose integer part saturates at ``F + 2`` (where every weight is 0): int8
   differences, unlike binary ones, are not bounded by ``d``.
4. **Sums, reciprocal, output.** As in the HAD core (``top_k`` weighed entries):
   ``den = sum_i e_i``, ``num_c = sum_i e_i * v[idx_i, c]``, exact;
   ``recip = floor((2**R + floor(den / 2)) / den)``, ``R = O + F + ceil(log2(top_k)) + 10``;
   ``out_c = floor((num_c * recip + 2**(S - 1)) / 2**S)``.

Accuracy: ``|out - float_reference| <= error_bound_ulp``, the reference being the exact softmax
over the same selected keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.golden.attention import reciprocal, scale_output
from hadware.golden.binary_dense_attention import (
    INPUT_NAMES,
    check_attention_inputs,
    softmax_reference,
)
from hadware.golden.std_attention import exp_weights, int8_scores
from hadware.golden.topk import PAD_INDEX, select_topk

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "Int8TopKResult",
    "check_inputs",
    "float_reference",
    "int8_topk_attention",
    "run_vectors",
]

#: Arrays of an output vector file.
OUTPUT_NAMES = ("out", "topk_index", "topk_score")


def check_inputs(cfg: Int8TopKAttentionConfig,
                 arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set (int8 ``q``, ``k``, ``v``, optional ``n_valid``); return them
    normalised. Raises :class:`~hadware.errors.InputError` naming the array."""
    return check_attention_inputs(cfg, arrays, block="int8_topk_attention", binary=False)


class Int8TopKResult(NamedTuple):
    """Every value of :func:`int8_topk_attention`, int64 tensors."""

    out: torch.Tensor
    topk_index: torch.Tensor
    topk_score: torch.Tensor
    weights: torch.Tensor
    den: torch.Tensor
    num: torch.Tensor
    recip: torch.Tensor


def int8_topk_attention(cfg: Int8TopKAttentionConfig, q: torch.Tensor, k: torch.Tensor,
                        v: torch.Tensor, n_valid: torch.Tensor | None = None) -> Int8TopKResult:
    """The bit-exact model (steps 1 to 4), vectorized over queries."""
    index, score = select_topk(int8_scores(q, k), n_valid, cfg.top_k)
    selected = index != PAD_INDEX
    delta = torch.where(selected, score[:, :1] - score, torch.zeros_like(score))
    e = torch.where(selected, exp_weights(cfg, delta), torch.zeros_like(delta))
    v_sel = v.to(torch.int64)[index.clamp(min=0)]  # padding points at row 0 and weighs 0
    num = (e[:, :, None] * v_sel).sum(1)
    den = e.sum(1)
    recip = reciprocal(cfg, den)
    out = scale_output(cfg, num, recip[:, None])
    return Int8TopKResult(out, index, score, e, den, num, recip)


def _tensors(checked: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(checked[name].astype(np.int64)) for name in INPUT_NAMES)


def run_vectors(cfg: Int8TopKAttentionConfig,
                arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check an input vector set and compute ``out``, ``topk_index`` and ``topk_score``."""
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    res = int8_topk_attention(cfg, q, k, v, n_valid)
    return {"out": res.out.numpy().astype(np.int32),
            "topk_index": res.topk_index.numpy().astype(np.int32),
            "topk_score": res.topk_score.numpy().astype(np.int32)}


def float_reference(cfg: Int8TopKAttentionConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """The exact softmax of ``temperature * s`` over the same selected keys applied to ``v``,
    float64 ``(m, d_v)`` in the units of ``out``."""
    q, k, v, n_valid = _tensors(check_inputs(cfg, arrays))
    index, score = select_topk(int8_scores(q, k), n_valid, cfg.top_k)
    return softmax_reference(cfg, score, index != PAD_INDEX, v[index.clamp(min=0)])
