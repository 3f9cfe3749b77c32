"""Top-k sparsifier RTL in the Amaranth simulator: bit-exact against the golden model (which
is checked against a brute-force sort in test_golden_topk.py), random stalls, ties, n < top_k,
output count, and the cycles-per-query formula."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.topk import TopKConfig
from hadware.golden.topk import run_vectors
from hadware.hw.topk import TopK
from hadware.tb.amsim import run_stream
from hadware.tb.topk import decode, encode


def run(cfg, arrays, **kw):
    enc = encode(cfg, arrays)
    beats, n_out = enc["streams"]["i_stream"], enc["expected"]["o_stream"]
    got, ins, outs = run_stream(TopK(cfg), beats, n_out, **kw)
    assert len(got) == n_out
    return decode(cfg, arrays, {"o_stream": got}), ins, outs


def check(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    got, _, _ = run(cfg, arrays, **kw)
    np.testing.assert_array_equal(got["topk_index"], want["topk_index"])
    np.testing.assert_array_equal(got["topk_score"], want["topk_score"])


CFGS = [TopKConfig(top_k=1, lanes=1, n_max=8, score_width=4),
        TopKConfig(top_k=4, lanes=3, n_max=20, score_width=6),
        TopKConfig(top_k=8, lanes=4, n_max=32, score_width=8),
        TopKConfig(top_k=5, lanes=1, n_max=16, score_width=5)]


@pytest.mark.parametrize("cfg", CFGS, ids=str)
@pytest.mark.parametrize(("idle", "stall"), [(0.0, 0.0), (0.4, 0.5)])
def test_random_scores(cfg, idle, stall):
    rng = np.random.default_rng(cfg.top_k * 100 + cfg.lanes)
    lim = 1 << (cfg.score_width - 1)
    arrays = {"scores": rng.integers(-lim, lim, (12, cfg.n_max)),
              "n_valid": rng.integers(0, cfg.n_max + 1, 12)}
    check(cfg, arrays, idle=idle, stall=stall, seed=3)


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_ties_extremes_and_short_rows(cfg):
    lim = 1 << (cfg.score_width - 1)
    n = cfg.n_max
    rows = [np.zeros(n), np.full(n, lim - 1), np.full(n, -lim),
            np.resize([-lim, lim - 1], n), np.arange(n) % 3, -(np.arange(n) % 2)]
    scores = np.array(rows, dtype=np.int64)
    n_valid = np.array([n, n, 1, max(1, cfg.top_k - 1), 2, 0])
    check(cfg, {"scores": scores, "n_valid": n_valid}, idle=0.2, stall=0.3, seed=5)


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_cycles_per_query(cfg):
    rng = np.random.default_rng(9)
    n = cfg.n_max
    arrays = {"scores": rng.integers(-4, 4, (3, n)), "n_valid": np.array([n, n, n])}
    _, ins, outs = run(cfg, arrays)
    beats = -(-n // cfg.lanes)
    # First output one cycle after the last input beat; queries back to back take
    # ceil(n / lanes) + top_k cycles each.
    assert outs[0] == ins[beats - 1] + 1
    assert ins[beats] - ins[0] == beats + cfg.top_k
    assert outs[-1] - ins[0] + 1 == 3 * (beats + cfg.top_k)


def test_config_messages():
    with pytest.raises(ValueError, match=r"top_k must be an integer between 1 and "
                                         r"min\(n_max, 256\) \(16\), not 17"):
        TopKConfig(top_k=17, n_max=16)
    with pytest.raises(TypeError, match=r"config must be a TopKConfig"):
        TopK(CFGS[0].to_dict())
