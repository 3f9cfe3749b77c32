"""Configuration of the int8 top-k attention baseline (int8 scores, the HAD sparsifier)."""

from __future__ import annotations

import dataclasses

from hadware.config.attention import unsigned_width
from hadware.config.base import check_int
from hadware.config.std_attention import Int8AttentionFields

__all__ = ["Int8TopKAttentionConfig"]


@dataclasses.dataclass(frozen=True)
class Int8TopKAttentionConfig(Int8AttentionFields):
    """Configuration of the int8 top-k attention baseline.

    The scores of :class:`~hadware.config.std_attention.StdAttentionConfig` (int8 dot products),
    the HAD sparsifier (the ``top_k`` best, ties to the lower index), the fixed-point
    exponential of the int8 baselines over the selected scores, and the weighted sum of the
    selected value rows. Specified in :mod:`hadware.golden.int8_topk_attention`.

    Parameters
    ----------
    top_k : int
        Scores kept per query; 1 to ``n_max``.

    The other fields are those of :class:`~hadware.config.std_attention.Int8AttentionFields`.

    Raises
    ------
    TypeError
        A parameter has the wrong type.
    ValueError
        A parameter is out of range; the message names it and shows the value.
    """

    block = "int8_topk_attention"

    top_k: int = 8

    def validate(self) -> None:
        super().validate()
        check_int("top_k", self.top_k, lo=1, hi=self.n_max,
                  what=f"an integer between 1 and n_max ({self.n_max})")

    @property
    def n_weights(self) -> int:
        """Entries weighed per query: the ``top_k`` selected."""
        return self.top_k

    @property
    def topk_count_width(self) -> int:
        """Bits of an unsigned count of selected entries in ``[0, top_k]``."""
        return unsigned_width(self.top_k)
