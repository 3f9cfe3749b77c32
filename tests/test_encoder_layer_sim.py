"""Encoder layer: generated Verilog on Verilator (and Icarus) through cocotb, bit for bit
against the golden model (the cocotb scoreboard compares every decoded output, ``y`` and the
saturation counts), with random stalls on both streams, edge-case and random sequences back to
back, and the command line (``hadware golden`` / ``hadware sim``).

The fast tier builds two configurations; the full tier adds three more, one with four heads
over 128 tokens, and the standard int8 layer (``std_layer``) with a shared core."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.cli import main
from hadware.config.encoder_layer import EncoderLayerConfig
from hadware.config.std_layer import StdLayerConfig
from hadware.golden.encoder_layer import run_vectors
from hadware.tb.encoder_layer import edge_inputs, latent_weights
from hadware.tb.runner import simulate

SMALL = EncoderLayerConfig(d_model=16, n_heads=2, head_dim=8, n_max=8, top_k=3, d_hidden=16,
                           lanes=4, temperature=[0.1, 0.3])
NARROW_SHARED = EncoderLayerConfig(d_model=16, n_heads=2, head_dim=8, n_max=6, top_k=2,
                                   d_hidden=8, lanes=2, causal=True, head_parallel=False,
                                   res_bits=10, res_frac_bits=5, v_shift=1)
FOUR_HEADS = EncoderLayerConfig(d_model=32, n_heads=4, head_dim=8, n_max=128, top_k=8,
                                d_hidden=64, lanes=8, causal=True,
                                temperature=[0.05, 0.1, 0.2, 0.4])
WIDE_SHARED = EncoderLayerConfig(d_model=64, n_heads=2, head_dim=32, n_max=32, top_k=4,
                                 d_hidden=96, lanes=8, head_parallel=False)


STD_SHARED = StdLayerConfig(d_model=16, n_heads=2, head_dim=8, n_max=8, d_hidden=16, lanes=4,
                            causal=True, head_parallel=False, v_shift=3)


def compare(cfg, arrays, seed=1, **kw):
    w = latent_weights(cfg, seed=3)
    want = run_vectors(cfg, w, arrays)
    r = simulate(cfg.block, cfg, arrays, expected=want, extras={"weights": w},
                 seed=seed, **kw)
    np.testing.assert_array_equal(r.outputs["y"], want["y"])
    np.testing.assert_array_equal(r.outputs["saturations"], want["saturations"])
    beats = int(np.asarray(arrays["n_valid"]).sum()) * cfg.token_beats
    assert len(r.stats["out_cycles"]["o_stream"]) == beats
    return r, want


@pytest.mark.sim
def test_verilator_edge_and_random_sequences():
    cfg = SMALL
    arrays = edge_inputs(cfg, seed=2)
    _, want = compare(cfg, arrays, idle_prob=0.3, stall_prob=0.4)
    assert want["saturations"][0] > 0 and want["saturations"][4] == 0


@pytest.mark.sim
@pytest.mark.full
def test_verilator_reset_in_the_middle_of_a_sequence():
    """All of a sequence but its last beat, reset while the layer projects, then two whole
    sequences: only theirs come out, bit exact (a build of its own; the Amaranth simulator's
    test of the same reset runs in the fast tier)."""
    cfg = NARROW_SHARED
    arrays = edge_inputs(cfg, seed=6)
    arrays = {"x": arrays["x"][[4, 1]], "n_valid": arrays["n_valid"][[4, 1]]}
    compare(cfg, arrays, seed=6, testcase="reset_mid_sequence", idle_prob=0.2, stall_prob=0.3)


@pytest.mark.sim
@pytest.mark.full
def test_verilator_standard_layer_shared_causal():
    """The int8 baseline layer (int8 projections, int8 dense attention, one shared core)."""
    cfg = STD_SHARED
    arrays = edge_inputs(cfg, seed=4)
    _, want = compare(cfg, arrays, seed=4, idle_prob=0.3, stall_prob=0.3)
    assert want["saturations"][0] > 0


@pytest.mark.sim
@pytest.mark.icarus
def test_icarus_shared_causal():
    cfg = NARROW_SHARED
    compare(cfg, edge_inputs(cfg, seed=5), simulator="icarus", seed=5, idle_prob=0.2,
            stall_prob=0.3)


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("cfg", [FOUR_HEADS, WIDE_SHARED, NARROW_SHARED],
                         ids=["4heads-n128", "wide-shared", "narrow-shared"])
def test_verilator_full(cfg):
    arrays = edge_inputs(cfg, seed=7)
    compare(cfg, arrays, seed=7, idle_prob=0.2, stall_prob=0.3)


@pytest.mark.sim
def test_cli_sim_and_golden_agree(tmp_path):
    cfg = SMALL
    cfg_path = tmp_path / "layer.json"
    cfg.save(cfg_path)
    np.savez(tmp_path / "w.npz", **latent_weights(cfg, seed=3))
    arrays = edge_inputs(cfg, seed=9)
    np.savez(tmp_path / "in.npz", x=arrays["x"][[4, 2]].astype(np.float32),
             n_valid=np.array([cfg.n_max, 5]))
    common = ["encoder_layer", "--config", str(cfg_path), "--weights",
              str(tmp_path / "w.npz"), "--inputs", str(tmp_path / "in.npz")]
    assert main(["golden", *common, "--outputs", str(tmp_path / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(tmp_path / "s.npz"), "--stall", "0.3",
                 "--idle", "0.2", "--seed", "5"]) == 0
    g, s = np.load(tmp_path / "g.npz"), np.load(tmp_path / "s.npz")
    assert sorted(g.files) == sorted(s.files) == ["saturations", "y"]
    assert g["y"].dtype == s["y"].dtype == np.float32
    np.testing.assert_array_equal(g["y"], s["y"])
    np.testing.assert_array_equal(g["saturations"], s["saturations"])
    assert not g["y"][1, 5:].any() and g["y"][1, :5].any()
