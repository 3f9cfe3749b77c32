"""Configuration of the XNOR-popcount score unit."""

from __future__ import annotations

import dataclasses

from hadware.config.base import BlockConfig, check_int

__all__ = ["ScoreUnitConfig"]


@dataclasses.dataclass(frozen=True)
class ScoreUnitConfig(BlockConfig):
    """Configuration of :class:`hadware.hw.score_unit.ScoreUnit`.

    Parameters
    ----------
    d : int
        Bits per query and key; a positive multiple of 8, at most 1024.
    lanes : int
        Number of keys scored in parallel against one query per cycle; 1 to 64.
    """

    block = "score_unit"

    d: int = 64
    lanes: int = 4

    def validate(self) -> None:
        check_int("d", self.d, lo=8, hi=1024, multiple_of=8,
                  what="a positive multiple of 8, at most 1024")
        check_int("lanes", self.lanes, lo=1, hi=64)

    @property
    def score_width(self) -> int:
        """Bits of a signed score in [-d, d]."""
        return (self.d).bit_length() + 1
