"""The softmax tables and constants of ``hadware.spec.softmax`` against their definitions,
written here independently: exact rational rounding of the float64 value the docstring quotes,
a 40-digit decimal exponential for the distance to the real function, and values checked by
hand."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from hadware.spec.softmax import SCALE_BITS, exp2_nodes, exp2_scale, exp2_scale_shift, had_table


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def exact(value: Callable[[], Decimal]) -> Decimal:
    """``value()`` computed with 40 significant digits."""
    with localcontext() as ctx:
        ctx.prec = 40
        return value()


D = Decimal


# -- the HAD table ---------------------------------------------------------------------------


def test_had_table_by_hand() -> None:
    # F = 4, tau = ln(2)/4: 16 * 2**(-a/2) = 16, 11.31, 8, 5.66, 4, 2.83, 2, 1.41, 1.
    assert had_table(8, math.log(2) / 4, 4) == (16, 11, 8, 6, 4, 3, 2, 1, 1)
    # tau = ln(2)/2, F = 3: 8 * 2**-a; 8 * 2**-4 = 0.5 exactly in float64, rounded up to 1.
    assert had_table(8, math.log(2) / 2, 3) == (8, 4, 2, 1, 1, 0, 0, 0, 0)
    assert had_table(1, 0.125, 1) == (2, 2)  # 2 * exp(-0.25) = 1.56 -> 2
    assert len(had_table(1024, 0.01, 24)) == 1025


@pytest.mark.parametrize(("d", "tau", "f"), [(64, 0.125, 19), (8, 0.5, 17), (256, 1 / 16, 21),
                                             (32, 0.296875, 22), (16, 3.0, 3), (128, 0.02, 24)])
def test_had_table_is_the_rounded_exponential(d: int, tau: float, f: int) -> None:
    table = had_table(d, tau, f)
    assert len(table) == d + 1 and table[0] == 2**f
    for a, entry in enumerate(table):
        # The float64 value of the definition, rounded half up exactly.
        assert entry == round_half_up(Fraction(2.0**f) * Fraction(math.exp(-2.0 * tau * a)))
        real = exact(lambda: D(2)**f * (D(-2) * D(tau) * a).exp())  # noqa: B023
        assert abs(Decimal(entry) - real) <= Decimal("0.5000001")
        assert a == 0 or table[a - 1] >= entry >= 0


# -- the fixed exponential's scale -----------------------------------------------------------


@pytest.mark.parametrize(("tau", "h", "g"), [
    # tau / ln 2 = m * 2**e with 0.5 <= m < 1; G = max(H + 1, 24 - e).
    (2.0**-13, 16, 36),  # 1.76e-4 = 0.72 * 2**-12: e = -12
    (2.0**-12, 3, 35),  # e = -11
    (0.5, 26, 27),  # 0.72 * 2**0: 24 - 0 = 24 < H + 1 = 27
    (0.5, 6, 24),
    (1.0, 16, 23),  # 1.44 = 0.72 * 2**1
    (1e-9, 16, 53),  # 1.44e-9 = 0.77 * 2**-29
])
def test_exp2_scale_shift_by_hand(tau: float, h: int, g: int) -> None:
    assert exp2_scale_shift(tau, h) == g


@pytest.mark.parametrize("tau", [2.0**-13, 2.0**-12, 2.0**-14, 0.001, 0.5, 1.0, 1e-9, 0.3])
@pytest.mark.parametrize("h", [3, 10, 16, 26])
def test_exp2_scale_has_24_significant_bits(tau: float, h: int) -> None:
    g = exp2_scale_shift(tau, h)
    assert g >= h + 1
    c = exp2_scale(tau, g)
    # The float64 value of the definition, rounded half up exactly.
    assert c == round_half_up(Fraction(tau / math.log(2.0)) * 2**g)
    assert c >= 2 ** (SCALE_BITS - 1)  # at least 24 significant bits
    assert g == h + 1 or c < 2**SCALE_BITS  # and no more unless G is set by H + 1
    real = exact(lambda: D(tau) / D(2).ln() * D(2)**g)
    assert abs(Decimal(c) - real) <= Decimal("0.5000001") + real * Decimal(2) ** -52
    assert abs(Decimal(c) / real - 1) < Decimal(2) ** -24


def test_exp2_scale_of_the_int8_default_by_hand() -> None:
    # 2**36 * 2**-13 / ln 2 = 2**23 / 0.693147 = 12102203.16
    assert exp2_scale(2.0**-13, 36) == 12102203


# -- the fixed exponential's nodes -----------------------------------------------------------


def test_exp2_nodes_by_hand() -> None:
    # F = 4, P = 2: 16 * 2**(-i/4) = 16, 13.45, 11.31, 9.51, 8.
    assert exp2_nodes(4, 2) == (16, 13, 11, 10, 8)
    # F = 1, P = 1: 2, 1.41, 1.
    assert exp2_nodes(1, 1) == (2, 1, 1)


@pytest.mark.parametrize(("f", "p"), [(19, 6), (10, 3), (14, 4), (24, 10), (1, 1), (22, 6)])
def test_exp2_nodes_are_the_rounded_power_of_two(f: int, p: int) -> None:
    nodes = exp2_nodes(f, p)
    assert len(nodes) == 2**p + 1
    assert nodes[0] == 2**f and nodes[-1] == 2 ** (f - 1)
    for i, node in enumerate(nodes):
        assert node == round_half_up(Fraction(2.0**f) * Fraction(2.0 ** (-i / 2**p)))
        real = exact(lambda: D(2)**f * (-D(2).ln() * i / D(2)**p).exp())  # noqa: B023
        assert abs(Decimal(node) - real) <= Decimal("0.5000001")
        assert i == 0 or nodes[i - 1] >= node
