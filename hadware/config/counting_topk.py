"""Configuration of the counting top-k sparsifier for binarized scores."""

from __future__ import annotations

import dataclasses

from hadware.config.base import check_bool, check_int
from hadware.config.topk import TopKConfig
from hadware.spec.widths import signed_width, unsigned_width

__all__ = ["CountingTopKConfig"]


@dataclasses.dataclass(frozen=True)
class CountingTopKConfig(TopKConfig):
    """Configuration of :class:`hadware.hw.counting_topk.CountingTopK`.

    The fields of :class:`~hadware.config.topk.TopKConfig` (``top_k``, ``lanes``, ``n_max``,
    ``score_width``, with the same ranges: the streams are those of the top-k sparsifier) and:

    Parameters
    ----------
    d : int
        Bits of a binarized query and key, 1 to 1024. The scores are ``2 * popcount - d``:
        exactly the ``d + 1`` values ``-d, -d + 2, ..., d``, which ``score_width`` must hold
        (at least ``signed_width(-d, d)`` bits).
    overlap : bool
        Run the two passes of successive queries at once (a second bank of counters, a score
        buffer of two banks, an output register bank): a query every ``B + 3`` cycles or
        so back to back, where the unit without it needs ``2 B + 2`` or more.
    """

    block = "counting_topk"

    d: int = 64
    overlap: bool = False

    def validate(self) -> None:
        super().validate()
        check_int("d", self.d, lo=1, hi=1024)
        check_bool("overlap", self.overlap)
        need = signed_width(-self.d, self.d)
        if self.score_width < need:
            raise ValueError(f"score_width must be at least {need} to hold the scores -d..d "
                             f"(d = {self.d}), not {self.score_width}")

    @property
    def n_values(self) -> int:
        """Distinct scores, ``d + 1``: value ``v = (s + d) / 2`` is the popcount."""
        return self.d + 1

    @property
    def value_width(self) -> int:
        """Bits of a value ``v`` in ``[0, d]`` (what the score buffer stores per lane)."""
        return unsigned_width(self.d)

    @property
    def rows(self) -> int:
        """Rows of the score buffer: ``ceil(n_max / lanes)``."""
        return -(-self.n_max // self.lanes)

    @property
    def row_width(self) -> int:
        """Bits of a row counter in ``[0, rows]``."""
        return unsigned_width(self.rows)

    @property
    def count_width(self) -> int:
        """Bits of a per-value counter, clamped at ``top_k`` before it adds up to ``lanes``
        hits: ``[0, top_k + lanes]``."""
        return unsigned_width(self.top_k + self.lanes)

    @property
    def position_width(self) -> int:
        """Bits of a slot position before the keep test: a count plus a rank,
        ``[0, top_k + 2 lanes - 1]``."""
        return unsigned_width(self.top_k + 2 * self.lanes - 1)
