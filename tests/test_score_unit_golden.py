"""Golden model of the score unit against the +-1 dot product and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.score_unit import ScoreUnitConfig
from hadware.errors import InputError
from hadware.golden.score_unit import check_inputs, run_vectors


def rand_pm1(rng, shape):
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)


@pytest.mark.parametrize("d", [8, 24, 64, 256])
def test_equals_dot_product(d):
    rng = np.random.default_rng(d)
    q, k = rand_pm1(rng, (9, d)), rand_pm1(rng, (13, d))
    s = run_vectors(ScoreUnitConfig(d=d, lanes=3), {"q": q, "k": k})["s"]
    assert s.dtype == np.int32 and s.shape == (9, 13)
    np.testing.assert_array_equal(s, q.astype(np.int64) @ k.astype(np.int64).T)


def test_hand_worked_example():
    # q = +1 x 8; k has three -1 elements: XNOR has 5 ones, s = 2*5 - 8 = 2.
    q = np.ones((1, 8), dtype=np.int8)
    k = np.array([[1, -1, 1, -1, 1, 1, -1, 1]], dtype=np.int8)
    assert run_vectors(ScoreUnitConfig(d=8, lanes=1), {"q": q, "k": k})["s"][0, 0] == 2
    assert run_vectors(ScoreUnitConfig(d=8, lanes=1), {"q": q, "k": -q})["s"][0, 0] == -8


@pytest.mark.parametrize(("arrays", "pattern"), [
    ({"q": np.ones((2, 8))}, r"array 'k' is missing"),
    ({"q": np.ones((2, 16)), "k": np.ones((2, 8))}, r"array 'q' has 16 columns.*d = 8"),
    ({"q": np.ones(8), "k": np.ones((2, 8))}, r"array 'q' must have 2 dimension"),
    ({"q": np.zeros((1, 8)), "k": np.ones((2, 8))}, r"array 'q' must hold only -1 and \+1"),
    ({"q": np.full((1, 8), 2), "k": np.ones((2, 8))}, r"array 'q' holds 2, outside \[-1, 1\]"),
    ({"q": np.ones((1, 8)), "k": np.full((2, 8), np.nan)}, r"array 'k' holds NaN"),
    ({"q": np.ones((1, 8)), "k": np.ones((2, 8)), "v": np.ones(3)}, r"unknown array\(s\) 'v'"),
])
def test_bad_inputs_name_the_array(arrays, pattern):
    with pytest.raises(InputError, match=pattern):
        check_inputs(ScoreUnitConfig(d=8, lanes=1), arrays)
