"""Configuration of the binarized dense attention baseline (HAD scores and table, no top-k)."""

from __future__ import annotations

import dataclasses

from hadware.config import attention_core as core

__all__ = ["BinaryDenseAttentionConfig"]


@dataclasses.dataclass(frozen=True)
class BinaryDenseAttentionConfig(
    core.HammingScores, core.TableExp, core.DenseSelection, core.AttentionCoreConfig
):
    """Configuration of the binarized dense attention baseline: the HAD core without its
    sparsifier. Parts: ``hamming`` scores, ``table`` exponential, no sparsifier: the softmax
    runs over **all** ``n_valid`` scores of a query (:mod:`hadware.config.attention_core`
    documents every field).

    :attr:`error_bound_ulp` is a worst case (every table rounding in the same direction over
    up to ``n_max`` keys); measured errors are far smaller.
    """

    block = "binary_dense_attention"
