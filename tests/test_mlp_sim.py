"""Ternary GLU MLP: generated Verilog on Verilator (and Icarus) through cocotb, bit for bit
against the golden model (the cocotb scoreboard compares every decoded output), with random
stalls on both streams, back-to-back tokens held to the cycle formulas, and the command line.

Each configuration is built once with one set of weights (the weights are baked into the ROMs,
so a new weight set is a new build); edge-case weight sets run in the full tier."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.cli import main
from hadware.config.mlp import MlpConfig
from hadware.golden.mlp import run_vectors
from hadware.hw.mlp import mlp_interval, mlp_latency
from hadware.tb.mlp import edge_tokens, latent_weights
from hadware.tb.runner import simulate

NARROW = MlpConfig(d_model=8, d_hidden=12, lanes=2, x_bits=10, x_frac_bits=6, gain_bits=10,
                   gain_frac_bits=7, mant_bits=8, recip_frac_bits=0, kappa_bits=8,
                   scale_bits=10, act_bits=8, act_frac_bits=5, silu_range_log2=2,
                   silu_seg_frac_bits=5, silu_frac_bits=6, h_bits=10, h_frac_bits=6, y_bits=8,
                   y_frac_bits=5)
DEFAULT = MlpConfig()
PAPER = MlpConfig(d_model=64, d_hidden=192, lanes=8)
CONFIGS = [NARROW, DEFAULT, PAPER]
# One weight set per configuration (scale 3 makes the narrow formats saturate).
SCALE = {NARROW: 3.0, DEFAULT: 1.0, PAPER: 1.0}


def ident(c: MlpConfig) -> str:
    return f"d{c.d_model}h{c.d_hidden}l{c.lanes}w{c.mant_bits}"


def weights(cfg):
    return latent_weights(cfg, seed=1, scale=SCALE[cfg])


def compare(cfg, w, x, **kw):
    inputs = {"x": x.astype(np.float32)}
    want = run_vectors(cfg, w, inputs)
    r = simulate("mlp", cfg, inputs, expected=want, extras={"weights": w}, **kw)
    np.testing.assert_array_equal(r.outputs["y"], want["y"])
    assert r.outputs["y"].dtype == np.float32
    assert len(r.stats["out_cycles"]["o_stream"]) == x.shape[0] * cfg.d_model // cfg.lanes
    return r


# Source idle and sink stall probabilities per configuration: the narrow one sends its tokens
# back to back (no input gaps) into a stalling output; the others stall on both sides.
STALLS = {NARROW: (0.0, 0.5), DEFAULT: (0.3, 0.4), PAPER: (0.3, 0.4)}


@pytest.mark.sim
# The paper-sized configuration (36 s) runs in the full tier; the two smaller ones cover the
# same edge tokens and stalls in the fast one.
@pytest.mark.parametrize("cfg", [NARROW, DEFAULT, pytest.param(PAPER, marks=pytest.mark.full)],
                         ids=ident)
def test_verilator_edge_and_random_tokens(cfg):
    rng = np.random.default_rng(cfg.d_model)
    x = np.vstack([edge_tokens(cfg, seed=cfg.d_hidden), rng.normal(0, 1, (5, cfg.d_model))])
    idle, stall = STALLS[cfg]
    compare(cfg, weights(cfg), x, seed=1, idle_prob=idle, stall_prob=stall)


@pytest.mark.sim
def test_verilator_back_to_back_tokens_follow_the_formulas():
    # The Amaranth-simulator tests hold the small configurations to the formulas; this one is
    # too slow there.
    cfg = PAPER
    t = 3
    x = np.random.default_rng(2).normal(0, 1, (t, cfg.d_model))
    r = compare(cfg, weights(cfg), x, seed=2)  # no idle cycles, no stalls
    ins = r.stats["in_cycles"]["i_stream"]
    outs = r.stats["out_cycles"]["o_stream"]
    bpt = cfg.d_model // cfg.lanes
    last = [outs[(i + 1) * bpt - 1] for i in range(t)]
    # By the formulas: 3*64*192/8 + 64 + X(64) + X(192) + 2*3 + 34 with X(64) = 10 + 64 + 17,
    # X(192) = 10 + 192 + 17; interval 2*64*192/8 + 3 + (10 + 192 + 38).
    assert last[0] - ins[0] == mlp_latency(cfg) == 4608 + 64 + 91 + 219 + 6 + 34
    assert np.diff(last).tolist() == [mlp_interval(cfg)] * (t - 1) == [3072 + 3 + 240] * (t - 1)


@pytest.mark.sim
def test_cli_sim_and_golden_agree(tmp_path):
    cfg = DEFAULT
    cfg_path = tmp_path / "mlp.json"
    cfg.save(cfg_path)
    np.savez(tmp_path / "w.npz", **weights(cfg))  # the same weights: the same build
    x = np.vstack([np.random.default_rng(3).normal(0, 1, (3, cfg.d_model)),
                   edge_tokens(cfg, seed=4)[[0, 3]]]).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    common = ["mlp", "--config", str(cfg_path), "--weights", str(tmp_path / "w.npz"),
              "--inputs", str(tmp_path / "in.npz")]
    assert main(["golden", *common, "--outputs", str(tmp_path / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(tmp_path / "s.npz"), "--stall", "0.3",
                 "--idle", "0.2", "--seed", "5"]) == 0
    g, s = np.load(tmp_path / "g.npz"), np.load(tmp_path / "s.npz")
    assert g.files == s.files == ["y"]
    assert g["y"].dtype == s["y"].dtype == np.float32
    assert g["y"].shape == (5, cfg.d_model)
    np.testing.assert_array_equal(g["y"], s["y"])
    assert not g["y"][3].any() and g["y"].any()


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus():
    # An all-zero token first: every combinational block must settle at time 0 (the runner's
    # ICARUS_ARGS), not only once an input changes.
    cfg = NARROW
    x = np.vstack([np.zeros((1, 8)), edge_tokens(cfg, seed=6)[:4],
                   np.random.default_rng(6).normal(0, 1, (2, 8))])
    compare(cfg, weights(cfg), x, simulator="icarus", seed=6, idle_prob=0.3, stall_prob=0.3)


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("kinds", [("plus", "minus"), ("minus", "zero"), ("zero", "plus")],
                         ids=lambda k: f"{k[0]}-{k[1]}")
def test_verilator_edge_weights(kinds):
    cfg = NARROW
    w = latent_weights(cfg, seed=7, gate_up=kinds[0], down=kinds[1])
    x = np.vstack([edge_tokens(cfg, seed=8), np.random.default_rng(8).normal(0, 1, (4, 8))])
    compare(cfg, w, x, seed=8, idle_prob=0.2, stall_prob=0.3)


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_verilator_long_random(cfg):
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        x = rng.normal(0, 1 + seed, (30, cfg.d_model))
        compare(cfg, weights(cfg), x, seed=seed, idle_prob=0.2, stall_prob=0.3)
