"""The activation quantization rules of the specification layer (hadware.spec.quant) against
their float definitions, on cases worked by hand and against a plain-Python restatement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hadware.spec.quant import (
    REFERENCE_ABSMAX_FLOOR,
    BlockRangeError,
    absmax_int8,
    block_fixed_point,
    fixed_point,
)
from hadware.sw.models import absmax_quantize


def test_fixed_point_by_hand():
    # 8 bits, 2 fraction bits: steps of 0.25, range [-32, 31.75]; round half up (to +inf).
    x = [1.125, -1.125, 0.3, -0.3, 31.9, 100.0, -100.0, 0.0]
    # 4.5 -> 5, -4.5 -> -4, 1.2 -> 1, -1.2 -> -1, 127.6 -> 127 (saturated to 127 anyway),
    # 400 -> 127, -400 -> -128.
    got = fixed_point(x, 8, 2)
    assert got.dtype == np.int64
    assert got.tolist() == [5, -4, 1, -1, 127, 127, -128, 0]
    assert fixed_point(np.zeros((2, 3)), 4, 0).shape == (2, 3)


def test_fixed_point_matches_the_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 40, 500)
    want = [min(max(math.floor(v * 2 ** 12 + 0.5), -(2 ** 19)), 2 ** 19 - 1) for v in x]
    assert fixed_point(x, 20, 12).tolist() == want


def test_absmax_by_hand():
    x = np.array([
        [127.0, 63.5, -0.5, 2.5],   # s = 1: 63.5 -> 64, -0.5 -> -0, 2.5 -> 2 (half to even)
        [1.0, -0.5, 0.25, 0.0],     # s = 127: 127, -63.5 -> -64, 31.75 -> 32
        [0.0, 0.0, 0.0, 0.0],       # the floor: s = 127 / 1e-5, all zero
    ])
    q, s = absmax_int8(x)
    assert s.shape == (3, 1)
    assert s[:2, 0].tolist() == [1.0, 127.0]
    assert s[2, 0] == pytest.approx(127.0 / REFERENCE_ABSMAX_FLOOR, rel=1e-15)
    assert q.tolist() == [[127, 64, 0, 2], [127, -64, 32, 0], [0, 0, 0, 0]]


def test_absmax_matches_a_plain_restatement():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (20, 16))
    q, s = absmax_int8(x)
    for row, qrow, srow in zip(x, q, s, strict=True):
        scale = 127.0 / max(max(abs(v) for v in row), 1e-5)
        assert srow[0] == pytest.approx(scale, rel=1e-15)
        assert qrow.tolist() == [min(max(round(v * scale), -128), 127) for v in row]


def test_absmax_is_the_training_models_rule():
    x = torch.randn(6, 5, 24, dtype=torch.float64)
    want_q, want_s = absmax_quantize(x)
    q, s = absmax_int8(x.numpy())
    np.testing.assert_array_equal(q, want_q.numpy())
    np.testing.assert_array_equal(s, want_s.numpy())


@pytest.mark.parametrize("floor", [1e-5, 0.5])
def test_absmax_floor_only_acts_below_it(floor):
    _, s = absmax_int8(np.array([[0.25, -0.125]]), floor)
    assert s[0, 0] == 127.0 / max(0.25, floor)  # exact: a power-of-two absmax


def test_block_fixed_point_by_hand():
    # 4-bit mantissas (-8..7), 1 fraction bit, exponents -2..1: x = X * 2**(xe - 1).
    x = np.array([[1.0, -0.5], [0.0, 0.0], [3.6, 0.1], [-8.5, 3.0], [7.4, 0.0]])
    mant, exp = block_fixed_point(x, 4, 1, 2)
    # 1.0 is 8 at xe = -2 (too large), 4 at xe = -1; zeros take the smallest exponent; 3.6 is
    # 14.4 at xe = -1, 7.2 -> 7 at xe = 0; -8.5 is -17 at xe = 0, -8 at xe = 1; 7.4 is 14.8 at
    # xe = 0, 7.4 -> 7 at xe = 1.
    assert exp.tolist() == [-1, -2, 0, 1, 1]
    assert mant.tolist() == [[4, -2], [0, 0], [7, 0], [-8, 3], [7, 0]]
    assert block_fixed_point(x[:2], 4, 1, 0)[1].tolist() == [0, 0]


def test_block_fixed_point_refuses_instead_of_saturating():
    with pytest.raises(BlockRangeError, match=r"^token 1, element 0 = 16\.0 is outside the "
                                              r"input range \[-8\.5, 7\.5\)$"):
        block_fixed_point(np.array([[1.0, 2.0], [16.0, 0.0]]), 4, 1, 2)
    # Without an exponent the range is the fixed format's: [-4.25, 3.75) for (4, 1).
    with pytest.raises(BlockRangeError, match=r"element 1 = 3\.75 is outside"):
        block_fixed_point(np.array([[0.0, 3.75]]), 4, 1, 0)
    assert block_fixed_point(np.array([[-4.25, 3.7]]), 4, 1, 0)[0].tolist() == [[-8, 7]]
