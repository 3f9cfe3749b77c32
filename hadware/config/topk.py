"""Configuration of the streaming top-k sparsifier."""

from __future__ import annotations

import dataclasses

from hadware.config.base import BlockConfig, check_int

__all__ = ["TopKConfig"]


@dataclasses.dataclass(frozen=True)
class TopKConfig(BlockConfig):
    """Configuration of :class:`hadware.hw.topk.TopK`.

    Parameters
    ----------
    top_k : int
        Entries kept per query; 1 to n_max (and at most 256).
    lanes : int
        Candidate scores accepted per cycle; 1 to min(n_max, 64).
    n_max : int
        Largest number of candidates per query; 1 to 65536 (sets the index width).
    score_width : int
        Bits of a signed score; 2 to 32.
    """

    block = "topk"

    top_k: int = 8
    lanes: int = 4
    n_max: int = 64
    score_width: int = 8

    def validate(self) -> None:
        check_int("n_max", self.n_max, lo=1, hi=65536)
        check_int("top_k", self.top_k, lo=1, hi=min(self.n_max, 256),
                  what=f"an integer between 1 and min(n_max, 256) "
                       f"({min(self.n_max, 256)})")
        check_int("lanes", self.lanes, lo=1, hi=min(self.n_max, 64),
                  what=f"an integer between 1 and min(n_max, 64) ({min(self.n_max, 64)})")
        check_int("score_width", self.score_width, lo=2, hi=32)

    @property
    def index_width(self) -> int:
        """Bits of a candidate index in [0, n_max)."""
        return max(1, (self.n_max - 1).bit_length())
