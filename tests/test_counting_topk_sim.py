"""Counting top-k: generated Verilog on Verilator (and Icarus) through cocotb against the top-k
golden model, with random stalls on both streams, and the cycle formulas on Verilator."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.counting_topk import CountingTopKConfig
from hadware.golden.counting_topk import run_vectors
from hadware.hw.counting_topk import CountingTopK
from hadware.tb.runner import simulate


def arrays_for(cfg: CountingTopKConfig, m: int, seed: int, distinct: int | None = None):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, cfg.d + 1, (m, cfg.n_max)) if distinct is None else \
        rng.choice(rng.integers(0, cfg.d + 1, distinct), (m, cfg.n_max))
    n_valid = rng.integers(0, cfg.n_max + 1, m)
    n_valid[:4] = [cfg.n_max, 1, min(cfg.n_max, max(1, cfg.top_k - 1)), 0][:m]
    return {"scores": 2 * values - cfg.d, "n_valid": n_valid}


def run_and_compare(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    r = simulate("counting_topk", cfg, arrays, expected=want, **kw)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name])
    assert len(r.stats["out_cycles"]["o_stream"]) == arrays["scores"].shape[0] * cfg.top_k
    return r


README = CountingTopKConfig(top_k=32, lanes=8, n_max=512, d=64)
#: A mid-size geometry for the fast tier (the README's takes a minute to build: full tier).
MEDIUM = CountingTopKConfig(top_k=8, lanes=4, n_max=64, d=16)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [CountingTopKConfig(top_k=4, lanes=2, n_max=16, score_width=6,
                                                    d=9),
                                 pytest.param(README, marks=pytest.mark.full)], ids=str)
def test_verilator(cfg):
    # Few distinct values: many equal scores, so the tie rule is exercised throughout.
    run_and_compare(cfg, arrays_for(cfg, m=8, seed=1, distinct=4), seed=1, idle_prob=0.3,
                    stall_prob=0.4)


@pytest.mark.sim
@pytest.mark.parametrize("cfg, b, latency, period", [
    (MEDIUM, 16, 16 + 5, 16 + 4 + 16),
    pytest.param(README, 64, 64 + 5, 64 + 4 + 64, marks=pytest.mark.full),
], ids=["medium", "readme"])
def test_verilator_cycles(cfg, b, latency, period):
    """Back-to-back queries over n_max candidates without stalls: the cycle formulas (the
    expected figures worked out by hand from the module docstring)."""
    arrays = arrays_for(cfg, m=3, seed=2)
    arrays["n_valid"][:] = cfg.n_max
    r = run_and_compare(cfg, arrays, seed=2)
    ins, outs = r.stats["in_cycles"]["i_stream"], r.stats["out_cycles"]["o_stream"]
    assert CountingTopK.beats(cfg, cfg.n_max) == b
    assert outs[0] - ins[b - 1] == CountingTopK.first_output_latency(cfg, cfg.n_max) == latency
    # the second query is collected while the first one's selections leave
    assert ins[b] == outs[0]
    assert ins[2 * b] - ins[b] == CountingTopK.query_cycles(cfg, cfg.n_max) == period
    assert outs[-1] - ins[0] + 1 == 2 * period + (b - 1) + latency + cfg.top_k


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus():
    cfg = CountingTopKConfig(top_k=3, lanes=2, n_max=10, score_width=5, d=6)
    run_and_compare(cfg, arrays_for(cfg, m=6, seed=2, distinct=3), simulator="icarus", seed=2,
                    idle_prob=0.3, stall_prob=0.3)
