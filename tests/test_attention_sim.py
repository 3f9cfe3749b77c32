"""HAD attention core: generated Verilog on Verilator (and Icarus) through cocotb, bit for bit
against the golden model, with random stalls on every stream."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hadware.cli import main
from hadware.config.attention import AttentionConfig
from hadware.golden.attention import float_reference, run_vectors
from hadware.tb.runner import simulate

SMALLEST = AttentionConfig(d=8, n_max=6, top_k=2, d_v=1, lanes=1, temperature=0.3,
                           exp_frac_bits=10, out_frac_bits=2)
SMALL = AttentionConfig(d=16, n_max=10, top_k=3, d_v=2, lanes=3, temperature=0.2,
                        exp_frac_bits=14, out_frac_bits=4)
WIDE_D = AttentionConfig(d=256, n_max=32, top_k=8, d_v=4, lanes=2, temperature=0.02,
                         exp_frac_bits=19, out_frac_bits=8)
PAPER = AttentionConfig(d=64, n_max=512, top_k=32, d_v=8, lanes=8, temperature=0.125,
                        exp_frac_bits=22, out_frac_bits=8)
CONFIGS = [SMALLEST, SMALL, WIDE_D, PAPER]


def ident(c: AttentionConfig) -> str:
    return f"d{c.d}n{c.n_max}k{c.top_k}l{c.lanes}"


def random_arrays(cfg, m, seed, n=None):
    rng = np.random.default_rng(seed)
    n = cfg.n_max if n is None else n
    pm1 = np.array([-1, 1], np.int8)
    return {"q": rng.choice(pm1, (m, cfg.d)), "k": rng.choice(pm1, (n, cfg.d)),
            "v": rng.integers(-128, 128, (n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, m)}


def edge_arrays(cfg, seed):
    """Ties (keys from two rows), all keys equal in the upper half, extreme values, and
    n = n_max, n = 1, n < top_k, a query equal to a key."""
    a = random_arrays(cfg, 5, seed)
    rng = np.random.default_rng(seed + 1)
    pool = a["k"][:2].copy()
    a["k"] = pool[rng.integers(0, 2, cfg.n_max)]
    a["k"][cfg.n_max // 2:] = a["k"][0]
    a["v"][:] = np.where(rng.random(a["v"].shape) < 0.5, -128, 127)
    a["n_valid"] = np.array([cfg.n_max, 1, max(1, cfg.top_k - 1), cfg.n_max,
                             min(cfg.n_max, cfg.top_k + 1)])
    a["q"][3] = a["k"][1]
    return a


def compare(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    r = simulate("attention", cfg, arrays, expected=want, **kw)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name], err_msg=name)
    assert len(r.stats["out_cycles"]["o_stream"]) == arrays["q"].shape[0]
    return r


@pytest.mark.sim
@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_verilator_random_and_edges(cfg):
    compare(cfg, random_arrays(cfg, 6, seed=cfg.d), seed=1, idle_prob=0.3, stall_prob=0.4)
    compare(cfg, edge_arrays(cfg, seed=cfg.d + 1), seed=2, idle_prob=0.2, stall_prob=0.5)


@pytest.mark.sim
def test_paper_config_within_one_ulp_of_float():
    arrays = random_arrays(PAPER, 4, seed=3)
    r = compare(PAPER, arrays, seed=3)
    ref = float_reference(PAPER, arrays)
    assert np.max(np.abs(r.outputs["out"] - ref)) <= 1.0


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus():
    compare(SMALL, random_arrays(SMALL, 4, seed=5), simulator="icarus", seed=5,
            idle_prob=0.3, stall_prob=0.3)


@pytest.mark.sim
def test_context_cleared_and_refilled():
    arrays = random_arrays(SMALL, 4, seed=6)
    half = SMALL.n_max // 2
    first = dict(arrays, k=arrays["k"][:half], v=arrays["v"][:half],
                 n_valid=np.minimum(arrays["n_valid"], half))
    w1, w2 = run_vectors(SMALL, first), run_vectors(SMALL, arrays)
    r = simulate("attention", SMALL, arrays, testcase="refill", seed=6, idle_prob=0.3,
                 stall_prob=0.3)
    for name in w1:
        np.testing.assert_array_equal(r.outputs[name], np.concatenate([w1[name], w2[name]]))


@pytest.mark.sim
def test_reset_in_the_middle_of_a_query():
    arrays = random_arrays(SMALL, 4, seed=7)
    want = run_vectors(SMALL, arrays)
    r = simulate("attention", SMALL, arrays, testcase="reset_mid_query", seed=7,
                 idle_prob=0.2, stall_prob=0.3)
    for name in want:
        np.testing.assert_array_equal(r.outputs[name], want[name])


@pytest.mark.sim
def test_cli_sim_and_golden_agree(tmp_path):
    cfg_path = tmp_path / "paper.json"
    PAPER.save(cfg_path)
    arrays = random_arrays(PAPER, 3, seed=8)
    del arrays["n_valid"]  # optional: every query sees all n keys
    np.savez(tmp_path / "in.npz", **arrays)
    common = ["attention", "--config", str(cfg_path), "--inputs", str(tmp_path / "in.npz")]
    assert main(["golden", *common, "--outputs", str(tmp_path / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(tmp_path / "s.npz"), "--stall", "0.3"]) == 0
    g, s = np.load(tmp_path / "g.npz"), np.load(tmp_path / "s.npz")
    assert sorted(g.files) == sorted(s.files) == ["out", "topk_index", "topk_score"]
    for name in g.files:
        np.testing.assert_array_equal(g[name], s[name])
    assert json.loads(cfg_path.read_text())["top_k"] == 32


@pytest.mark.sim
@pytest.mark.full
def test_verilator_largest_d():
    cfg = AttentionConfig(d=1024, n_max=64, top_k=8, d_v=4, lanes=4, temperature=0.005,
                          exp_frac_bits=19, out_frac_bits=8)
    compare(cfg, random_arrays(cfg, 6, seed=9), seed=9, idle_prob=0.3, stall_prob=0.3)
    compare(cfg, edge_arrays(cfg, seed=10), seed=10, idle_prob=0.2, stall_prob=0.4)


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_verilator_long_random(cfg):
    for seed in range(3):
        compare(cfg, random_arrays(cfg, 40, seed=100 + seed), seed=seed, idle_prob=0.2,
                stall_prob=0.3)
