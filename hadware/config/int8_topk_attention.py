"""Configuration of the int8 top-k attention baseline (int8 scores, the HAD sparsifier)."""

from __future__ import annotations

import dataclasses

from hadware.config import attention_core as core

__all__ = ["Int8TopKAttentionConfig"]


@dataclasses.dataclass(frozen=True)
class Int8TopKAttentionConfig(
    core.Int8Scores, core.FixedExp, core.TopKSelection, core.AttentionCoreConfig
):
    """Configuration of the int8 top-k attention baseline: the scores of standard attention
    (int8 dot products), the HAD sparsifier, the fixed-point exponential over the selected
    scores. Parts: ``int8`` scores, ``fixed`` exponential, ``topk`` sparsifier
    (:mod:`hadware.config.attention_core` documents every field)."""

    block = "int8_topk_attention"

    temperature: float = 2.0**-13
