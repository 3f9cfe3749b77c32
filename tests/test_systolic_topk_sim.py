"""Systolic top-k: generated Verilog on Verilator (and Icarus) through cocotb against the top-k
golden model, with random stalls on both streams, and the cycle formulas on Verilator."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.systolic_topk import SystolicTopKConfig
from hadware.golden.systolic_topk import run_vectors
from hadware.hw.systolic_topk import SystolicTopK
from hadware.tb.runner import simulate


def arrays_for(cfg: SystolicTopKConfig, m: int, seed: int, distinct: int | None = None):
    rng = np.random.default_rng(seed)
    lim = 1 << (cfg.score_width - 1)
    scores = rng.integers(-lim, lim, (m, cfg.n_max)) if distinct is None else \
        rng.choice(rng.integers(-lim, lim, distinct), (m, cfg.n_max))
    n_valid = rng.integers(0, cfg.n_max + 1, m)
    n_valid[:4] = [cfg.n_max, 1, min(cfg.n_max, max(1, cfg.top_k - 1)), 0][:m]
    return {"scores": scores, "n_valid": n_valid}


def run_and_compare(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    r = simulate("systolic_topk", cfg, arrays, expected=want, **kw)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name])
    assert len(r.stats["out_cycles"]["o_stream"]) == arrays["scores"].shape[0] * cfg.top_k
    return r


#: The compare configuration's top-k (int8 dot products of d = 64: 22-bit scores).
README = SystolicTopKConfig(top_k=32, lanes=8, n_max=512, score_width=22)
MEDIUM = SystolicTopKConfig(top_k=8, lanes=5, n_max=64, score_width=12)
#: The fast tier's geometry (the others build for longer: full tier).
SMALL = SystolicTopKConfig(top_k=4, lanes=2, n_max=16, score_width=6)


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [SMALL, pytest.param(MEDIUM, marks=pytest.mark.full),
                                 pytest.param(README, marks=pytest.mark.full)], ids=str)
def test_verilator(cfg):
    # Few distinct values: many equal scores, so the tie rule is exercised throughout.
    run_and_compare(cfg, arrays_for(cfg, m=8, seed=1, distinct=4), seed=1, idle_prob=0.3,
                    stall_prob=0.4)


@pytest.mark.sim
@pytest.mark.parametrize("cfg, b, latency, period", [
    (SMALL, 8, 4 + 1 + 3, max(8 + 1, 2 * 4 + 1 + 2)),
    pytest.param(MEDIUM, 13, 8 + 3 + 3, max(13 + 1, 2 * 8 + 3 + 2), marks=pytest.mark.full),
    pytest.param(README, 64, 32 + 3 + 3, max(64 + 1, 2 * 32 + 3 + 2), marks=pytest.mark.full),
], ids=["small", "medium", "readme"])
def test_verilator_cycles(cfg, b, latency, period):
    """Back-to-back queries over n_max candidates without stalls: the cycle formulas (the
    expected figures worked out by hand from the module docstring)."""
    arrays = arrays_for(cfg, m=3, seed=2)
    arrays["n_valid"][:] = cfg.n_max
    r = run_and_compare(cfg, arrays, seed=2)
    ins, outs = r.stats["in_cycles"]["i_stream"], r.stats["out_cycles"]["o_stream"]
    assert SystolicTopK.beats(cfg, cfg.n_max) == b
    assert outs[0] - ins[b - 1] == SystolicTopK.first_output_latency(cfg) == latency
    assert SystolicTopK.query_cycles(cfg, cfg.n_max) == period
    k = cfg.top_k
    assert [outs[q * k] - outs[(q - 1) * k] for q in (1, 2)] == [period, period]
    assert outs == [outs[q * k] + i for q in range(3) for i in range(k)]


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus():
    cfg = SystolicTopKConfig(top_k=3, lanes=3, n_max=10, score_width=5)
    run_and_compare(cfg, arrays_for(cfg, m=6, seed=2, distinct=3), simulator="icarus", seed=2,
                    idle_prob=0.3, stall_prob=0.3)
