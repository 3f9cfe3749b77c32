"""Register widths against their definition: the fewest bits that hold every value."""

from __future__ import annotations

import pytest

from hadware.spec.widths import ceil_log2, signed_width, unsigned_width


def test_unsigned_width_is_the_fewest_bits_holding_the_range():
    for hi in range(0, 600):
        w = unsigned_width(hi)
        assert w >= 1 and hi <= 2**w - 1
        assert w == 1 or hi > 2 ** (w - 1) - 1


def test_signed_width_is_the_fewest_bits_holding_the_range():
    for lo in range(-70, 1):
        for hi in range(-1, 70):
            if lo > hi:
                continue
            w = signed_width(lo, hi)
            assert -(2 ** (w - 1)) <= lo and hi <= 2 ** (w - 1) - 1, (lo, hi)
            fits_smaller = w > 1 and -(2 ** (w - 2)) <= lo and hi <= 2 ** (w - 2) - 1
            assert not fits_smaller, (lo, hi)


def test_ceil_log2():
    assert [ceil_log2(n) for n in (1, 2, 3, 4, 5, 8, 9, 1024, 1025)] == [0, 1, 2, 2, 3, 3, 4,
                                                                        10, 11]
    for n in range(1, 3000):
        k = ceil_log2(n)
        assert 2**k >= n and (k == 0 or 2 ** (k - 1) < n)
    with pytest.raises(ValueError, match=r"ceil_log2 needs n >= 1, not 0"):
        ceil_log2(0)
