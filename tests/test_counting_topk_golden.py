"""Counting top-k: its golden model is the top-k golden model (checked against a brute-force
sort in test_topk_golden.py) on binarized scores; the score set and its input check."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.counting_topk import CountingTopKConfig
from hadware.errors import InputError
from hadware.golden import counting_topk, topk
from hadware.spec.counting_topk import binarized_scores, check_binarized_scores


def brute_force(row, n_valid: int, top_k: int):
    chosen = sorted(range(n_valid), key=lambda j: (-row[j], j))[:top_k]
    pad = top_k - len(chosen)
    return chosen + [-1] * pad, [int(row[j]) for j in chosen] + [0] * pad


def test_score_set_is_every_popcount():
    # 2 * popcount(XNOR(q, k)) - d over every pair of 5-bit vectors.
    d = 5
    seen = {2 * bin(~(q ^ k) & (2**d - 1)).count("1") - d for q in range(2**d) for k in range(2**d)}
    assert binarized_scores(d).tolist() == sorted(seen) == [-5, -3, -1, 1, 3, 5]
    assert binarized_scores(2).tolist() == [-2, 0, 2]
    with pytest.raises(ValueError, match=r"d must be a positive integer, not 0"):
        binarized_scores(0)


@pytest.mark.parametrize(("cfg", "m", "distinct"), [
    (CountingTopKConfig(top_k=8, lanes=4, n_max=64, d=64), 40, None),
    (CountingTopKConfig(top_k=8, lanes=4, n_max=64, score_width=3, d=2), 40, None),  # heavy ties
    (CountingTopKConfig(top_k=32, lanes=8, n_max=512, d=64), 10, 3),
    (CountingTopKConfig(top_k=16, lanes=1, n_max=16, score_width=2, d=1), 20, None),
    (CountingTopKConfig(top_k=1, lanes=2, n_max=9, score_width=5, d=9), 20, None),
])
def test_same_outputs_as_the_topk_golden_model(cfg, m, distinct):
    rng = np.random.default_rng(cfg.top_k * 1000 + cfg.d)
    values = rng.integers(0, cfg.d + 1, (m, cfg.n_max)) if distinct is None else \
        rng.choice(rng.integers(0, cfg.d + 1, distinct), (m, cfg.n_max))
    scores = 2 * values - cfg.d
    n_valid = rng.integers(0, cfg.n_max + 1, m)
    n_valid[:3] = [cfg.n_max, 0, min(cfg.n_max, max(1, cfg.top_k - 1))]
    arrays = {"scores": scores, "n_valid": n_valid}
    got = counting_topk.run_vectors(cfg, arrays)
    want = topk.run_vectors(cfg, arrays)
    for name in ("topk_index", "topk_score"):
        assert got[name].dtype == np.int32
        np.testing.assert_array_equal(got[name], want[name])
    for i in range(m):
        idx, sc = brute_force(scores[i], int(n_valid[i]), cfg.top_k)
        assert got["topk_index"][i].tolist() == idx and got["topk_score"][i].tolist() == sc


@pytest.mark.parametrize(("score", "d", "message"), [
    (3, 64, r"^array 'scores' holds 3 at \[1, 2\], which is not a binarized score 2\*popcount "
            r"- d for d = 64 \(one of -64, -64 \+ 2, \.\.\., 64\)$"),
    (66, 64, r"holds 66 at \[1, 2\]"),
    (-66, 64, r"holds -66 at \[1, 2\]"),
    (0, 7, r"holds 0 at \[1, 2\].* d = 7"),
])
def test_a_score_outside_the_set_is_an_input_error(score, d, message):
    cfg = CountingTopKConfig(top_k=2, lanes=2, n_max=4, d=d)
    scores = np.full((2, 4), d)
    scores[1, 2] = score
    with pytest.raises(InputError, match=message):
        counting_topk.check_inputs(cfg, {"scores": scores})
    with pytest.raises(InputError, match=message):
        counting_topk.run_vectors(cfg, {"scores": scores})
    # (padding entries past n_valid are scores of the file too)
    with pytest.raises(InputError, match=message):
        counting_topk.check_inputs(cfg, {"scores": scores, "n_valid": np.array([4, 1])})


def test_the_topk_checks_come_first():
    cfg = CountingTopKConfig(top_k=2, lanes=2, n_max=4, d=64)
    with pytest.raises(InputError, match=r"array 'scores' holds 200, outside \[-128, 127\]"):
        counting_topk.check_inputs(cfg, {"scores": np.array([[200, 0]])})
    with pytest.raises(InputError, match=r"array 'scores' has 5 columns; the config allows 1 to "
                                         r"n_max \(4\)"):
        counting_topk.check_inputs(cfg, {"scores": np.zeros((1, 5), dtype=np.int64)})


def test_check_binarized_scores_refuses_floats():
    with pytest.raises(InputError, match=r"array 'x' must hold integers, not float64"):
        check_binarized_scores("x", np.array([1.0]), 1)
    assert check_binarized_scores("x", np.array([[-1, 1]], dtype=np.int8), 1).dtype == np.int64
