"""Configuration of the systolic top-k sparsifier."""

from __future__ import annotations

import dataclasses

from hadware.config.topk import TopKConfig

__all__ = ["SystolicTopKConfig"]


@dataclasses.dataclass(frozen=True)
class SystolicTopKConfig(TopKConfig):
    """Configuration of :class:`hadware.hw.systolic_topk.SystolicTopK`.

    The fields of :class:`~hadware.config.topk.TopKConfig` (``top_k``, ``lanes``, ``n_max``,
    ``score_width``, with the same ranges): the unit has the top-k sparsifier's streams and
    outputs, for any signed scores (int8 dot products as well as binarized ones).
    """

    block = "systolic_topk"

    @property
    def key_width(self) -> int:
        """Bits of a compare key: a valid bit, the offset-binary score, the inverted index."""
        return 1 + self.score_width + self.index_width

    @property
    def tree_levels(self) -> int:
        """Levels of the merge tree over the lanes' sorted lists: ``ceil(log2(lanes))``."""
        return (self.lanes - 1).bit_length()
