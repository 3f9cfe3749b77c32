"""Register widths: the bit counts every config derives its registers from."""

from __future__ import annotations

__all__ = ["DSP_PIECE", "ceil_log2", "signed_width", "unsigned_width"]

#: Widest unsigned operand piece of an 18 x 18 signed DSP multiplier (17 bits + sign): the
#: hardware's multipliers cut wider operands into pieces of this size, and the output
#: scaler's default ``scale_piece``.
DSP_PIECE = 17


def ceil_log2(n: int) -> int:
    """``ceil(log2(n))`` for ``n >= 1`` (0 for 1)."""
    if n < 1:
        raise ValueError(f"ceil_log2 needs n >= 1, not {n}")
    return (n - 1).bit_length()


def unsigned_width(hi: int) -> int:
    """Bits of an unsigned register that holds every integer in ``[0, hi]`` (at least 1)."""
    return max(1, hi.bit_length())


def signed_width(lo: int, hi: int) -> int:
    """Bits of a two's complement register that holds every integer in ``[lo, hi]``."""
    # -2^(w-1) <= lo needs w-1 >= bit_length(-lo-1); hi <= 2^(w-1)-1 needs w-1 >= bit_length(hi).
    return 1 + max((-lo - 1).bit_length() if lo < 0 else 0, max(hi, 0).bit_length())
