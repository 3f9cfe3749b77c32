"""Int8 top-k attention baseline: generated Verilog on Verilator (and Icarus) through cocotb, bit
for bit against the golden model, with random stalls on every stream."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.cli import main
from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.golden.int8_topk_attention import float_reference, run_vectors
from hadware.tb.runner import simulate

BLOCK = "int8_topk_attention"
SMALL = Int8TopKAttentionConfig(d=5, n_max=10, top_k=3, d_v=2, lanes=3, temperature=2**-13,
                                exp_frac_bits=14, out_frac_bits=4, exp_table_bits=4,
                                exp_interp_bits=6)
PAPER = Int8TopKAttentionConfig(d=64, n_max=512, top_k=32, d_v=8, lanes=8, exp_frac_bits=22)
CONFIGS = [SMALL, PAPER]


def ident(c) -> str:
    return f"d{c.d}n{c.n_max}k{c.top_k}l{c.lanes}"


def random_arrays(cfg, m, seed, n=None):
    rng = np.random.default_rng(seed)
    n = cfg.n_max if n is None else n
    return {"q": rng.integers(-128, 128, (m, cfg.d)).astype(np.int8),
            "k": rng.integers(-128, 128, (n, cfg.d)).astype(np.int8),
            "v": rng.integers(-128, 128, (n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, m)}


def edge_arrays(cfg, seed):
    """Ties (keys from two rows), all keys equal in the upper half, extreme values (a query of
    -128 against keys of -128 and 127: the largest score difference), n = n_max, n = 1."""
    a = random_arrays(cfg, 4, seed)
    rng = np.random.default_rng(seed + 1)
    a["k"] = a["k"][:2].copy()[rng.integers(0, 2, cfg.n_max)]
    a["k"][cfg.n_max // 2:] = a["k"][0]
    a["k"][:2] = [[-128] * cfg.d, [127] * cfg.d]
    a["q"][0] = -128
    a["v"][:] = np.where(rng.random(a["v"].shape) < 0.5, -128, 127)
    a["n_valid"] = np.array([cfg.n_max, 1, cfg.n_max, min(cfg.n_max, 3)])
    return a


def compare(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    r = simulate(BLOCK, cfg, arrays, expected=want, **kw)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name], err_msg=name)
    assert len(r.stats["out_cycles"]["o_stream"]) == arrays["q"].shape[0]
    return r


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_verilator_random_and_edges(cfg):
    arrays = random_arrays(cfg, 3, seed=cfg.d)
    r = compare(cfg, arrays, seed=1, idle_prob=0.3, stall_prob=0.4)
    assert np.max(np.abs(r.outputs["out"] - float_reference(cfg, arrays))) \
        <= cfg.error_bound_ulp
    compare(cfg, edge_arrays(cfg, seed=cfg.d + 1), seed=2, idle_prob=0.2, stall_prob=0.5)


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus():
    compare(SMALL, random_arrays(SMALL, 3, seed=5), simulator="icarus", seed=5,
            idle_prob=0.3, stall_prob=0.3)


@pytest.mark.sim
def test_context_cleared_and_refilled():
    arrays = random_arrays(SMALL, 4, seed=6)
    half = SMALL.n_max // 2
    first = dict(arrays, k=arrays["k"][:half], v=arrays["v"][:half],
                 n_valid=np.minimum(arrays["n_valid"], half))
    w1, w2 = run_vectors(SMALL, first), run_vectors(SMALL, arrays)
    r = simulate(BLOCK, SMALL, arrays, testcase="refill", seed=6, idle_prob=0.3,
                 stall_prob=0.3)
    for name in w1:
        np.testing.assert_array_equal(r.outputs[name], np.concatenate([w1[name], w2[name]]))


@pytest.mark.sim
def test_reset_in_the_middle_of_a_query():
    arrays = random_arrays(SMALL, 4, seed=7)
    want = run_vectors(SMALL, arrays)
    r = simulate(BLOCK, SMALL, arrays, testcase="reset_mid_query", seed=7, idle_prob=0.2,
                 stall_prob=0.3)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name])


@pytest.mark.sim
def test_cli_sim_and_golden_agree(tmp_path):
    cfg_path = tmp_path / "small.json"
    SMALL.save(cfg_path)
    arrays = random_arrays(SMALL, 3, seed=8)
    del arrays["n_valid"]  # optional: every query sees all n keys
    np.savez(tmp_path / "in.npz", **arrays)
    common = [BLOCK, "--config", str(cfg_path), "--inputs", str(tmp_path / "in.npz")]
    assert main(["golden", *common, "--outputs", str(tmp_path / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(tmp_path / "s.npz"), "--stall", "0.3"]) == 0
    g, s = np.load(tmp_path / "g.npz"), np.load(tmp_path / "s.npz")
    assert sorted(g.files) == sorted(s.files) == sorted(["out", "topk_index", "topk_score"])
    for name in g.files:
        np.testing.assert_array_equal(g[name], s[name])


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_verilator_long_random(cfg):
    for seed in range(3):
        compare(cfg, random_arrays(cfg, 30, seed=100 + seed), seed=seed, idle_prob=0.2,
                stall_prob=0.3)
