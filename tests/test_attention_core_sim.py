"""The attention family's generated Verilog on Verilator (and Icarus) through cocotb, every
registered variant: bit for bit against its golden model with random stalls on every stream,
within the proven float error bound, context refill, reset mid-query, many contexts in one
run, and the command line."""

from __future__ import annotations

import numpy as np
import pytest
from attention_family import FRONT_BOUND, VARIANTS, configs, ident, make, random_arrays

from hadware.blocks import BLOCKS
from hadware.cli import main
from hadware.tb.runner import simulate

#: The compare configuration of the README (the defaults of each variant otherwise).
PAPER = dict(d=64, n_max=512, top_k=32, d_v=8, lanes=8, exp_frac_bits=22, out_frac_bits=8)


#: The README-size case of every variant (a Verilator build of a minute or two) runs in the
#: full tier (`make test-full`); the fast tier runs each variant at its small configuration
#: (HAD also at its smallest), and the Amaranth simulator's tests hold the cycle formulas.


def small(name):
    return configs(name)[1]


def sim_cases():
    out = []
    for name in VARIANTS:
        cls = BLOCKS[name].config_class()
        paper = pytest.param((name, make(cls, **PAPER)), marks=pytest.mark.full)
        out += [(name, small(name)), paper]
    # Binarized top-k (HAD) also at its smallest and at a wide d.
    had = next(n for n in VARIANTS if BLOCKS[n].config_class().parts()
               == {"scorer": "hamming", "exp": "table", "sparsifier": "topk"})
    cls = BLOCKS[had].config_class()
    # (the wide d, a minute and a half of Verilator build, in the full tier; the fast tier's
    # HAD cases run d = 8 and 16)
    wide = cls(d=256, n_max=32, top_k=8, d_v=4, lanes=2, temperature=0.02, exp_frac_bits=19,
               out_frac_bits=8)
    out += [(had, configs(had)[0]), pytest.param((had, wide), marks=pytest.mark.full)]
    return out


def edge_arrays(cfg, seed):
    """Ties (keys from two rows), all keys equal in the upper half, the largest score
    difference, extreme values, and n = n_max, n = 1, n < top_k, a query equal to a key."""
    a = random_arrays(cfg, 5, seed)
    rng = np.random.default_rng(seed + 1)
    a["k"] = a["k"][:2].copy()[rng.integers(0, 2, cfg.n_max)]
    a["k"][cfg.n_max // 2:] = a["k"][0]
    if cfg.scorer == "hamming":
        a["k"][1] = -a["k"][0]
    else:
        a["k"][:2] = [[-128] * cfg.d, [127] * cfg.d]
        a["q"][0] = -128
    a["v"][:] = np.where(rng.random(a["v"].shape) < 0.5, -128, 127)
    top_k = getattr(cfg, "top_k", 3)
    a["n_valid"] = np.array([cfg.n_max, 1, max(1, top_k - 1), cfg.n_max,
                             min(cfg.n_max, top_k + 1)])
    a["q"][3] = a["k"][1]
    return a


def compare(name, cfg, arrays, **kw):
    want = BLOCKS[name].golden_module().run_vectors(cfg, arrays)
    r = simulate(name, cfg, arrays, expected=want, **kw)
    assert sorted(r.outputs) == sorted(want)
    for array in want:
        np.testing.assert_array_equal(r.outputs[array], want[array], err_msg=array)
    assert len(r.stats["out_cycles"]["o_stream"]) == arrays["q"].shape[0]
    return r


@pytest.mark.sim
@pytest.mark.parametrize("case", sim_cases(), ids=ident)
def test_verilator_random_and_edges(case):
    name, cfg = case
    arrays = random_arrays(cfg, 4, seed=cfg.d)
    r = compare(name, cfg, arrays, seed=1, idle_prob=0.3, stall_prob=0.4)
    ref = BLOCKS[name].golden_module().float_reference(cfg, arrays)
    assert np.max(np.abs(r.outputs["out"] - ref)) <= cfg.error_bound_ulp
    compare(name, cfg, edge_arrays(cfg, seed=cfg.d + 1), seed=2, idle_prob=0.2,
            stall_prob=0.5)


@pytest.mark.sim
@pytest.mark.icarus
@pytest.mark.parametrize("name", VARIANTS)
def test_icarus(name):
    cfg = small(name)
    compare(name, cfg, random_arrays(cfg, 3, seed=5), simulator="icarus", seed=5,
            idle_prob=0.3, stall_prob=0.3)


@pytest.mark.sim
@pytest.mark.parametrize("name", VARIANTS)
def test_context_cleared_and_refilled(name):
    cfg = small(name)
    golden = BLOCKS[name].golden_module()
    arrays = random_arrays(cfg, 4, seed=6)
    half = cfg.n_max // 2
    first = dict(arrays, k=arrays["k"][:half], v=arrays["v"][:half],
                 n_valid=np.minimum(arrays["n_valid"], half))
    w1, w2 = golden.run_vectors(cfg, first), golden.run_vectors(cfg, arrays)
    r = simulate(name, cfg, arrays, testcase="refill", seed=6, idle_prob=0.3, stall_prob=0.3)
    assert sorted(r.outputs) == sorted(w1)
    for array in w1:
        np.testing.assert_array_equal(r.outputs[array], np.concatenate([w1[array], w2[array]]))


@pytest.mark.sim
@pytest.mark.parametrize("name", VARIANTS)
def test_reset_in_the_middle_of_a_query(name):
    cfg = small(name)
    arrays = random_arrays(cfg, 4, seed=7)
    want = BLOCKS[name].golden_module().run_vectors(cfg, arrays)
    r = simulate(name, cfg, arrays, testcase="reset_mid_query", seed=7, idle_prob=0.2,
                 stall_prob=0.3)
    for array in want:
        np.testing.assert_array_equal(r.outputs[array], want[array])


@pytest.mark.sim
@pytest.mark.parametrize("name", VARIANTS)
def test_many_contexts_in_one_run(name):
    """The ``batch`` testcase: each sample its own context, cleared in between."""
    cfg = small(name)
    golden = BLOCKS[name].golden_module()
    samples = [random_arrays(cfg, 3, seed=20 + s) for s in range(3)]
    for a in samples:
        a["n_valid"][:] = cfg.n_max
    stacked = {x: np.stack([a[x] for a in samples]) for x in ("q", "k", "v")}
    r = simulate(name, cfg, stacked, testcase="batch", seed=8, idle_prob=0.2, stall_prob=0.3,
                 check=False)
    for s, a in enumerate(samples):
        want = golden.run_vectors(cfg, a)
        for array in want:
            np.testing.assert_array_equal(r.outputs[array][s], want[array], err_msg=array)


@pytest.mark.sim
@pytest.mark.parametrize("name", VARIANTS)
def test_cli_sim_and_golden_agree(tmp_path, name):
    cfg = small(name)
    cfg_path = tmp_path / "cfg.json"
    cfg.save(cfg_path)
    arrays = random_arrays(cfg, 3, seed=8)
    del arrays["n_valid"]  # optional: every query sees all n keys
    np.savez(tmp_path / "in.npz", **arrays)
    common = [name, "--config", str(cfg_path), "--inputs", str(tmp_path / "in.npz")]
    assert main(["golden", *common, "--outputs", str(tmp_path / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(tmp_path / "s.npz"), "--stall", "0.3"]) == 0
    g, s = np.load(tmp_path / "g.npz"), np.load(tmp_path / "s.npz")
    want = ["out"] + (["topk_index", "topk_score"] if cfg.sparsifier == "topk" else [])
    assert sorted(g.files) == sorted(s.files) == sorted(want)
    for array in g.files:
        np.testing.assert_array_equal(g[array], s[array])


@pytest.mark.sim
@pytest.mark.full
def test_verilator_largest_d():
    cfg = BLOCKS["attention"].config_class()(d=1024, n_max=64, top_k=8, d_v=4, lanes=4,
                                             temperature=0.005, exp_frac_bits=19,
                                             out_frac_bits=8)
    compare("attention", cfg, random_arrays(cfg, 6, seed=9), seed=9, idle_prob=0.3,
            stall_prob=0.3)
    compare("attention", cfg, edge_arrays(cfg, seed=10), seed=10, idle_prob=0.2,
            stall_prob=0.4)


@pytest.mark.sim
@pytest.mark.full
@pytest.mark.parametrize("case", sim_cases(), ids=ident)
def test_verilator_long_random(case):
    name, cfg = case
    for seed in range(3):
        compare(name, cfg, random_arrays(cfg, 30, seed=100 + seed), seed=seed, idle_prob=0.2,
                stall_prob=0.3)



#: A fifth attention variant, written as a user would (CONTRIBUTING.md): binarized scores,
#: the fixed-point exponential, the top-k sparsifier. Nothing else is needed.
NEW_VARIANT = '''
import dataclasses

from hadware.blocks import Block
from hadware.config.attention_core import (
    AttentionCoreConfig, FixedExp, HammingScores, TopKSelection)
from hadware.hw.attention_core import AttentionCore


@dataclasses.dataclass(frozen=True)
class BinaryFixedConfig(HammingScores, FixedExp, TopKSelection, AttentionCoreConfig):
    block = "binary_fixed_attention"


class BinaryFixedAttention(AttentionCore):
    config_class = BinaryFixedConfig


BLOCK = Block(name="binary_fixed_attention", summary="binarized, fixed-point exp, top-k",
              config="binary_fixed:BinaryFixedConfig",
              component="binary_fixed:BinaryFixedAttention",
              golden="hadware.golden.attention_core", tb="hadware.tb.attention_core")
'''


@pytest.mark.sim
def test_a_new_variant_from_parts(tmp_path, monkeypatch):
    """A variant made of existing parts in a few lines of a user's module runs through the
    golden model, the Amaranth simulator and Verilator, bit for bit."""
    import importlib

    from test_attention_core_hw import check

    (tmp_path / "binary_fixed.py").write_text(NEW_VARIANT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HADWARE_BLOCKS", "binary_fixed:BLOCK")  # for the cocotb process
    block = importlib.import_module("binary_fixed").BLOCK
    monkeypatch.setitem(BLOCKS, block.name, block)
    cfg = block.config_class()(d=16, n_max=12, top_k=4, d_v=3, lanes=3, temperature=0.1,
                               exp_frac_bits=16, out_frac_bits=6, exp_table_bits=5,
                               exp_interp_bits=6)
    assert cfg.parts() == {"scorer": "hamming", "exp": "fixed", "sparsifier": "topk"}
    arrays = random_arrays(cfg, 5, seed=30)
    golden = block.golden_module()
    want = golden.run_vectors(cfg, arrays)
    assert sorted(want) == ["out", "topk_index", "topk_score"]
    ref = golden.float_reference(cfg, arrays)
    assert np.max(np.abs(want["out"] - ref)) <= cfg.error_bound_ulp
    check(block.name, cfg, [arrays], idle=0.3, stall=0.3, seed=30)
    compare(block.name, cfg, arrays, seed=31, idle_prob=0.3, stall_prob=0.4)


@pytest.mark.sim
@pytest.mark.parametrize("case", [(n, BLOCKS[n].config_class()(**kw))
                                  for n, kw in (FRONT_BOUND[i] for i in (1, 4))], ids=ident)
def test_verilator_back_to_back_interval(case):
    """On Verilator, queries back to back with the output always ready: the first answered in
    its documented latency, the others every documented interval, several in flight."""
    name, cfg = case
    core = BLOCKS[name].component_class()
    arrays = random_arrays(cfg, 6, seed=9)
    arrays["n_valid"][:] = cfg.n_max
    r = compare(name, cfg, arrays, seed=9)
    q_in, outs = r.stats["in_cycles"]["q_stream"], r.stats["out_cycles"]["o_stream"]
    assert outs[0] - q_in[0] == core.cycles(cfg, cfg.n_max)
    assert [outs[i + 1] - outs[i] for i in range(2, 5)] == [core.interval(cfg, cfg.n_max)] * 3
    assert q_in[1] < outs[0]
