"""Top-k sparsifier: generated Verilog on Verilator (and Icarus) through cocotb against the
golden model, with random stalls on both streams."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.topk import TopKConfig
from hadware.golden.topk import run_vectors
from hadware.tb.runner import simulate


def arrays_for(cfg: TopKConfig, m: int, seed: int, spread: int | None = None):
    rng = np.random.default_rng(seed)
    lim = 1 << (cfg.score_width - 1) if spread is None else spread
    scores = rng.integers(-lim, lim, (m, cfg.n_max))
    n_valid = rng.integers(0, cfg.n_max + 1, m)
    n_valid[:3] = [cfg.n_max, 1, min(cfg.n_max, max(1, cfg.top_k - 1))]
    return {"scores": scores, "n_valid": n_valid}


def run_and_compare(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    r = simulate("topk", cfg, arrays, expected=want, **kw)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name])
    assert len(r.stats["out_cycles"]["o_stream"]) == arrays["scores"].shape[0] * cfg.top_k


@pytest.mark.sim
@pytest.mark.parametrize("cfg", [TopKConfig(top_k=4, lanes=2, n_max=16, score_width=6),
                                 TopKConfig(top_k=32, lanes=4, n_max=512, score_width=8)],
                         ids=str)
def test_verilator(cfg):
    # Narrow score spread: many equal scores, so the tie rule is exercised throughout.
    run_and_compare(cfg, arrays_for(cfg, m=8, seed=1, spread=4), seed=1, idle_prob=0.3,
                    stall_prob=0.4)


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus():
    cfg = TopKConfig(top_k=3, lanes=2, n_max=10, score_width=5)
    run_and_compare(cfg, arrays_for(cfg, m=6, seed=2), simulator="icarus", seed=2,
                    idle_prob=0.3, stall_prob=0.3)


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("cfg", [TopKConfig(top_k=64, lanes=8, n_max=2048, score_width=10),
                                 TopKConfig(top_k=16, lanes=1, n_max=256, score_width=9)],
                         ids=str)
def test_verilator_large(cfg):
    run_and_compare(cfg, arrays_for(cfg, m=20, seed=3), seed=3, idle_prob=0.2,
                    stall_prob=0.3)
