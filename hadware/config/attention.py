"""Configuration of the HAD attention core: binarized scores, top-k, table softmax."""

from __future__ import annotations

import dataclasses

from hadware.config import attention_core as core

__all__ = ["AttentionConfig"]


@dataclasses.dataclass(frozen=True)
class AttentionConfig(
    core.HammingScores, core.TableExp, core.TopKSelection, core.AttentionCoreConfig
):
    """Configuration of the HAD attention core.

    One query row attends to up to ``n_max`` keys: binary scores by XNOR and popcount, the
    ``top_k`` best kept, softmax numerators from a table, and one reciprocal per query scaling
    the weighted sum of the selected value rows. Parts: ``hamming`` scores, ``table``
    exponential, ``topk`` sparsifier (:mod:`hadware.config.attention_core`, which documents
    every field and derived width). The arithmetic is specified in
    :mod:`hadware.golden.attention_core`.

    Accuracy: the output stays within :attr:`error_bound_ulp` units of its last place of the
    exact softmax average over the same selected keys; at most 1 when
    ``2**(exp_frac_bits - out_frac_bits) >= 291.43 (top_k - 1)``. The default
    ``exp_frac_bits = 19`` meets it for ``top_k = 8, out_frac_bits = 8``.
    """

    block = "attention"
