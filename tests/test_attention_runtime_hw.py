"""Run-time softmax temperature and per-query top_k in the attention RTL: one build serves any
temperature (the table written through ``tab_stream``) and any k from 1 to ``top_k``.

Amaranth simulator and Verilator, against the golden model with the vector files' optional
``temperature`` (one per batch entry) and ``top_k`` (one per query) arrays, random idles and
stalls on every stream; the build-time ROM and the written RAM give the same outputs; the
table writes wait for the query in flight; a ROM build has no table stream."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from attention_family import random_arrays, run_exp_unit

from hadware.blocks import BLOCKS
from hadware.config.attention import AttentionConfig
from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.config.std_attention import StdAttentionConfig
from hadware.hw.attention_core import AttentionCore
from hadware.hw.softmax_exp import Exp2Unit
from hadware.tb.amsim import run_streams
from hadware.tb.attention_core import ctx_beats, decode_beats, query_beats, table_beats
from hadware.tb.payload import pack

#: Small run-time configurations of the two table-exponential designs (HAD: both top-k units).
RUNTIME = {
    "attention": AttentionConfig(d=16, n_max=10, top_k=4, d_v=3, lanes=3, temperature=0.2,
                                 exp_frac_bits=14, out_frac_bits=4, runtime_temperature=True),
    "attention-counting": AttentionConfig(d=16, n_max=10, top_k=4, d_v=3, lanes=3,
                                          temperature=0.2, exp_frac_bits=14, out_frac_bits=4,
                                          runtime_temperature=True, topk_unit="counting"),
    "binary_dense_attention": BinaryDenseAttentionConfig(
        d=16, n_max=10, d_v=3, lanes=3, temperature=0.2, exp_frac_bits=14, out_frac_bits=4,
        runtime_temperature=True),
    # The fixed exponential: the scale c and its shift G written at run time.
    "std_attention": StdAttentionConfig(d=3, n_max=7, d_v=2, lanes=2, temperature=2**-10,
                                        exp_frac_bits=14, out_frac_bits=4,
                                        runtime_temperature=True),
    "int8_topk_attention": Int8TopKAttentionConfig(d=3, n_max=7, top_k=3, d_v=2, lanes=3,
                                                   temperature=2**-10, exp_frac_bits=14,
                                                   out_frac_bits=4, runtime_temperature=True),
}
#: Temperatures far apart, from a nearly flat softmax to a nearly one-hot one, per
#: exponential (the fixed one takes 1e-9 to 1; int8 scores reach 3 * 2**14 here).
TEMPERATURES = {"table": [0.2, 0.01, 0.9, 0.35, 0.2, 3.0],
                "fixed": [2**-10, 1e-9, 3e-4, 1.0, 2**-10, 0.01]}


def _block(key: str) -> str:
    return key.split("-")[0]


def _golden(name):
    return BLOCKS[name].golden_module()


def entries(cfg, b: int, m: int, seed: int) -> dict[str, np.ndarray]:
    """A batched file of ``b`` contexts with a temperature per entry and, for a top-k design,
    a k per query (1, top_k and random ones, some above the entry's key count)."""
    rng = np.random.default_rng(seed)
    arrays = [random_arrays(cfg, m, seed=seed * 100 + e, key_pool=2 if e % 3 == 2 else None)
              for e in range(b)]
    out = {x: np.stack([a[x] for a in arrays]) for x in arrays[0]}
    taus = TEMPERATURES[cfg.exp]
    out["temperature"] = np.array([taus[e % len(taus)] for e in range(b)])
    if cfg.sparsifier == "topk":
        k = rng.integers(1, cfg.top_k + 1, (b, m))
        k[:, 0] = 1
        k[::2, -1] = cfg.top_k
        out["top_k"] = k
    return out


def run_amsim(key: str, cfg, arrays: dict[str, np.ndarray], **kw) -> dict[str, np.ndarray]:
    """Per entry: the table of its temperature, its context, its queries (each stream after
    the previous one), every entry in one simulation. Returns the batched outputs."""
    dut = BLOCKS[_block(key)].component_class()(cfg)
    inputs = []
    b, m = arrays["q"].shape[:2]
    for e in range(b):
        inputs.append((dut.tab_stream, table_beats(cfg, cfg.table_for(arrays["temperature"][e]))))
        inputs.append((dut.ctx_stream, ctx_beats(cfg, arrays["k"][e], arrays["v"][e])))
        top_k = arrays["top_k"][e] if "top_k" in arrays else None
        inputs.append((dut.q_stream, query_beats(cfg, arrays["q"][e], arrays["n_valid"][e],
                                                 top_k)))
    got, _, _ = run_streams(dut, inputs, dut.o_stream, b * m, sequential=True, **kw)
    assert len(got) == b * m
    out = decode_beats(cfg, got)
    return {x: a.reshape(b, m, *a.shape[1:]) for x, a in out.items()}


def assert_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for array in want:
        np.testing.assert_array_equal(got[array], want[array], err_msg=array)


@pytest.mark.parametrize("key", list(RUNTIME))
def test_amaranth_temperatures_and_k_per_query(key):
    """Six temperatures (and random k) in one simulation equal the golden model; each entry
    also equals the build-time ROM of its temperature (golden of that config)."""
    cfg = RUNTIME[key]
    a = entries(cfg, 6, 4, seed=3)
    got = run_amsim(key, cfg, a, idle=0.3, stall=0.4, seed=5)
    assert_equal(got, _golden(_block(key)).run_vectors(cfg, a))
    for e, tau in enumerate(a["temperature"]):
        rom = dataclasses.replace(cfg, temperature=float(tau), runtime_temperature=False)
        one = {x: a[x][e] for x in ("q", "k", "v", "n_valid")}
        if "top_k" in a:
            one["top_k"] = a["top_k"][e]
        want = _golden(_block(key)).run_vectors(rom, one)
        for array in want:
            np.testing.assert_array_equal(got[array][e], want[array], err_msg=f"{array}[{e}]")


def test_k_per_query_keeps_the_first_slots():
    """k = 1 keeps slot 0 only (the output is that key's value row); the kept slots are the
    first k of the top_k run's."""
    cfg = RUNTIME["attention"]
    a = entries(cfg, 2, 5, seed=8)
    full = dict(a, top_k=np.full_like(a["top_k"], cfg.top_k))
    got, got_full = run_amsim("attention", cfg, a), run_amsim("attention", cfg, full)
    for e in range(2):
        for j, k in enumerate(a["top_k"][e]):
            np.testing.assert_array_equal(got["topk_index"][e, j, :k],
                                          got_full["topk_index"][e, j, :k])
            assert (got["topk_index"][e, j, k:] == -1).all()
            if k == 1:
                row = a["v"][e, got["topk_index"][e, j, 0]].astype(np.int64)
                np.testing.assert_array_equal(got["out"][e, j], row << cfg.out_frac_bits)


@pytest.mark.parametrize("key", ["attention", "binary_dense_attention", "std_attention"])
def test_table_write_waits_for_the_query_in_flight(key):
    """A table offered while a query runs is written only after its output has been taken:
    that query still uses the old table, the next one the new."""
    cfg = RUNTIME[key]
    a = random_arrays(cfg, 2, seed=21)
    dut = BLOCKS[key].component_class()(cfg)
    tau = 2.0 if cfg.exp == "table" else 0.01
    hot = cfg.table_for(tau)
    inputs = [(dut.ctx_stream, ctx_beats(cfg, a["k"], a["v"])),
              (dut.q_stream, query_beats(cfg, a["q"][:1], a["n_valid"][:1])),
              (dut.tab_stream, table_beats(cfg, hot)),
              (dut.q_stream, query_beats(cfg, a["q"][1:], a["n_valid"][1:]))]
    got, ins, _ = run_streams(dut, inputs, dut.o_stream, 2, sequential=True, stall=0.5, seed=2)
    out = decode_beats(cfg, got)
    golden = _golden(key)
    first = golden.run_vectors(cfg, {x: a[x][:1] if x in ("q", "n_valid") else a[x] for x in a})
    hot_cfg = dataclasses.replace(cfg, temperature=tau)
    second = golden.run_vectors(hot_cfg, {x: a[x][1:] if x in ("q", "n_valid") else a[x]
                                          for x in a})
    np.testing.assert_array_equal(out["out"][0], first["out"][0])
    np.testing.assert_array_equal(out["out"][1], second["out"][0])
    assert ins[2][0] > ins[1][0]  # the table's first beat after the query was accepted


def test_addresses_beyond_the_table_are_dropped():
    """A beat with addr > d is accepted and changes nothing."""
    cfg = RUNTIME["attention"]
    a = random_arrays(cfg, 3, seed=4)
    dut = BLOCKS["attention"].component_class()(cfg)
    layout = AttentionCore.tab_layout(cfg)
    stray = [pack(layout, {"addr": addr, "data": 0})
             for addr in range(cfg.d + 1, 2**cfg.lut_address_width)]
    inputs = [(dut.tab_stream, stray), (dut.ctx_stream, ctx_beats(cfg, a["k"], a["v"])),
              (dut.q_stream, query_beats(cfg, a["q"], a["n_valid"]))]
    got, ins, _ = run_streams(dut, inputs, dut.o_stream, 3, sequential=True)
    assert len(ins[0]) == len(stray) > 0
    assert_equal(decode_beats(cfg, got), _golden("attention").run_vectors(cfg, a))


@pytest.mark.parametrize("key", ["attention", "std_attention"])
def test_rom_build_has_no_table_stream(key):
    cfg = dataclasses.replace(RUNTIME[key], runtime_temperature=False)
    for c, has in ((cfg, False), (RUNTIME[key], True)):
        dut = BLOCKS[key].component_class()(c)
        dut._MustUse__silence = True  # (never elaborated)
        assert ("tab_stream" in dut.signature.members) == has
    with pytest.raises(TypeError, match=r"^runtime_temperature must be true or false, not 1$"):
        dataclasses.replace(cfg, runtime_temperature=1)


def test_fixed_exp_unit_at_run_time_temperatures():
    """One run-time unit, (c, G) of many temperatures (G from H + 1 to its largest), equals
    the build-time arithmetic of each temperature (the golden E of that config)."""
    from hadware.golden.attention_core import fixed_exp_weights

    cfg = StdAttentionConfig(d=2, n_max=4, d_v=1, lanes=2, temperature=0.5,
                             exp_table_bits=10, exp_interp_bits=16, runtime_temperature=True)
    rng = np.random.default_rng(6)
    taus = [1e-9, 3.1e-7, 2**-20, 1e-4, 0.0123, 0.3, 0.5, 1.0]
    shifts = {cfg.table_for(t)[1] for t in taus}
    assert cfg.exp_index_bits + 1 in shifts and cfg.exp_scale_shift_max in shifts
    for tau in taus:
        rom = dataclasses.replace(cfg, temperature=tau, runtime_temperature=False)
        reach = min(cfg.delta_max, int((cfg.exp_frac_bits + 3) * math.log(2) / tau) + 1)
        deltas = [0, 1, cfg.delta_max, *rng.integers(0, reach + 1, 60).tolist(),
                  *rng.integers(0, cfg.delta_max + 1, 10).tolist()]
        want = fixed_exp_weights(rom, torch.tensor(deltas)).tolist()
        c, g = cfg.table_for(tau)
        got = run_exp_unit(Exp2Unit(cfg), deltas, [1] * len(deltas), {"scale": c, "shift": g})
        assert got == want, tau
