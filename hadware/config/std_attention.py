"""Configuration of the standard (int8, dense) attention baseline."""

from __future__ import annotations

import dataclasses

from hadware.config import attention_core as core

__all__ = ["StdAttentionConfig"]


@dataclasses.dataclass(frozen=True)
class StdAttentionConfig(
    core.Int8Scores, core.FixedExp, core.DenseSelection, core.AttentionCoreConfig
):
    """Configuration of the standard attention baseline: int8 dot-product scores, a softmax
    over all ``n_valid`` scores with the fixed-point exponential, the weighted sum over all
    value rows. Parts: ``int8`` scores, ``fixed`` exponential, no sparsifier
    (:mod:`hadware.config.attention_core` documents every field).

    The default temperature ``2**-13`` is ``sigma_q * sigma_k / sqrt(d)`` for int8 data with
    scales of 1/32 at ``d = 64``.
    """

    block = "std_attention"

    temperature: float = 2.0**-13
