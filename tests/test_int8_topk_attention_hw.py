"""Int8 top-k attention baseline: configuration, the golden model against an independent scalar
model and the float softmax, and the RTL in the Amaranth simulator bit for bit against the
golden model (random stalls on every stream, ties, equal keys, extreme values, n = 1, n < top_k,
n = n_max, refill, cycle formula)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from hadware.config.base import ConfigFileError
from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.config.std_attention import StdAttentionConfig
from hadware.errors import InputError
from hadware.golden.int8_topk_attention import check_inputs, float_reference, run_vectors
from hadware.golden.std_attention import exp_weights
from hadware.hw.generate import generate, lint
from hadware.hw.int8_topk_attention import Int8TopKAttention
from hadware.tb.amsim import run_streams
from hadware.tb.binary_dense_attention import ctx_beats, decode_beats, query_beats

BLOCK = Int8TopKAttention
CONFIGS = [
    Int8TopKAttentionConfig(d=1, n_max=6, top_k=2, d_v=1, lanes=1, temperature=2**-12,
                            exp_frac_bits=10, out_frac_bits=2, exp_table_bits=3,
                            exp_interp_bits=0),
    Int8TopKAttentionConfig(d=5, n_max=10, top_k=3, d_v=2, lanes=3, temperature=2**-13,
                            exp_frac_bits=14, out_frac_bits=4, exp_table_bits=4,
                            exp_interp_bits=6),
    Int8TopKAttentionConfig(d=16, n_max=16, top_k=16, d_v=3, lanes=4, temperature=2**-14,
                            exp_frac_bits=19, out_frac_bits=8),
    Int8TopKAttentionConfig(d=8, n_max=12, top_k=4, d_v=2, lanes=12, temperature=0.001,
                            exp_frac_bits=16, out_frac_bits=8),
]
PAPER = Int8TopKAttentionConfig(d=64, n_max=512, top_k=32, d_v=8, lanes=8, exp_frac_bits=22)
NAMES = ("out", "topk_index", "topk_score")


def ident(c) -> str:
    return f"d{c.d}n{c.n_max}k{c.top_k}l{c.lanes}"


def random_arrays(cfg, m, seed, *, n=None, key_pool=None):
    rng = np.random.default_rng(seed)
    n = cfg.n_max if n is None else n
    if key_pool is None:
        k = rng.integers(-128, 128, (n, cfg.d))
    else:  # keys drawn from a few distinct rows: many equal scores
        k = rng.integers(-128, 128, (key_pool, cfg.d))[rng.integers(0, key_pool, n)]
    return {"q": rng.integers(-128, 128, (m, cfg.d)).astype(np.int8), "k": k.astype(np.int8),
            "v": rng.integers(-128, 128, (n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, m)}


def extreme_arrays(cfg, m=3):
    """q all -128; keys alternately all 127 (score -16256 d) and all -128 (score 16384 d), so
    that the largest difference 32640 d occurs whenever top_k > n_max / 2."""
    n = cfg.n_max
    k = np.where(np.arange(n)[:, None] % 2 == 1, -128, 127) * np.ones((1, cfg.d), np.int64)
    return {"q": np.full((m, cfg.d), -128, np.int8), "k": k.astype(np.int8),
            "v": np.where(np.arange(n)[:, None] % 3 == 0, 127, -128)
            * np.ones((1, cfg.d_v), np.int64),
            "n_valid": np.array([n, 1, min(2, n)][:m])}


# -- configuration ---------------------------------------------------------------------------


def test_config_fields_and_derived_numbers():
    cfg = Int8TopKAttentionConfig()
    assert Int8TopKAttentionConfig.block == "int8_topk_attention"
    assert cfg.field_names()[-1] == "top_k" and cfg.top_k == 8
    # The exponential is the std baseline's; the sums weigh top_k = 8 entries:
    # R = 8 + 19 + 3 + 10 = 40, den <= 8 * 2**19 = 2**22 (23 bits).
    std = StdAttentionConfig()
    assert (cfg.exp_scale, cfg.exp_scale_shift, cfg.exp_table) == \
        (std.exp_scale, std.exp_scale_shift, std.exp_table)
    assert (cfg.recip_bits, cfg.den_width, cfg.score_width) == (40, 23, 22)
    assert Int8TopKAttentionConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"top_k": 0}, ValueError, r"^top_k must be an integer between 1 and n_max \(64\), not 0$"),
    ({"top_k": 65}, ValueError, r"^top_k must be an integer between 1 and n_max \(64\), not 65$"),
    ({"top_k": 2.0}, TypeError, r"^top_k must be an integer, not 2\.0 \(float\)$"),
    ({"d": 1025}, ValueError, r"^d must be an integer between 1 and 1024, not 1025$"),
    ({"temperature": -1}, ValueError, r"^temperature must be at least 1e-09, not -1$"),
])
def test_config_errors_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        Int8TopKAttentionConfig(**kwargs)


def test_config_file_errors():
    with pytest.raises(ValueError, match=r"^cfg\.json: top_k must be an integer between 1 and "
                                         r"n_max \(16\), not 17$"):
        Int8TopKAttentionConfig.from_dict({"n_max": 16, "top_k": 17}, source="cfg.json")
    with pytest.raises(ConfigFileError, match=r"unknown key\(s\) 'k'; int8_topk_attention"):
        Int8TopKAttentionConfig.from_dict({"k": 8})


# -- golden model ----------------------------------------------------------------------------


def scalar_model(cfg, arrays):
    """One query at a time in Python integers and fractions, from the specification (the
    exponential is checked against its own specification in test_std_attention_hw)."""
    q, k, v = (np.asarray(arrays[x], np.int64) for x in ("q", "k", "v"))
    m = q.shape[0]
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    r = o + f + math.ceil(math.log2(cfg.top_k)) + 10
    out = np.zeros((m, cfg.d_v), np.int64)
    index = np.full((m, cfg.top_k), -1, np.int64)
    score = np.zeros((m, cfg.top_k), np.int64)
    for i in range(m):
        s = [sum(int(a) * int(b) for a, b in zip(q[i], k[j], strict=True))
             for j in range(int(arrays["n_valid"][i]))]
        chosen = sorted(range(len(s)), key=lambda j: (-s[j], j))[:cfg.top_k]
        index[i, :len(chosen)] = chosen
        score[i, :len(chosen)] = [s[j] for j in chosen]
        e = [int(x) for x in exp_weights(cfg, torch.tensor([s[chosen[0]] - s[j]
                                                             for j in chosen]))]
        recip = math.floor(Fraction(2**r, sum(e)) + Fraction(1, 2))
        for c in range(cfg.d_v):
            num = sum(ej * int(v[j, c]) for ej, j in zip(e, chosen, strict=True))
            out[i, c] = math.floor(Fraction(num * recip, 2 ** (r - o)) + Fraction(1, 2))
    return {"out": out, "topk_index": index, "topk_score": score}


@pytest.mark.parametrize("cfg", [*CONFIGS, Int8TopKAttentionConfig()], ids=ident)
def test_golden_matches_the_scalar_model(cfg):
    for a in (random_arrays(cfg, 5, seed=cfg.d), random_arrays(cfg, 3, seed=1, key_pool=2),
              extreme_arrays(cfg)):
        got, want = run_vectors(cfg, a), scalar_model(cfg, a)
        for name in NAMES:
            assert got[name].dtype == np.int32
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("cfg", [*CONFIGS, Int8TopKAttentionConfig(), PAPER], ids=ident)
def test_float_error_within_the_proven_bound(cfg):
    rng = np.random.default_rng(3)
    worst = 0.0
    for seed in range(3):
        a = random_arrays(cfg, 8, seed=seed)
        b = dict(a, v=np.where(rng.random(a["v"].shape) < 0.5, -128, 127).astype(np.int8))
        for x in (a, b):
            err = np.abs(run_vectors(cfg, x)["out"] - float_reference(cfg, x)).max()
            worst = max(worst, float(err))
    assert worst <= cfg.error_bound_ulp


def test_input_errors_name_the_array():
    cfg = CONFIGS[1]
    a = random_arrays(cfg, 2, seed=0)
    with pytest.raises(InputError, match=r"^v must have shape \(n, d_v\) = \(10, 2\), not \(10,"):
        check_inputs(cfg, dict(a, v=np.zeros((10, 3))))
    with pytest.raises(InputError, match=r"^n_valid must have shape \(m,\) = \(2,\), not \(3,\)"):
        check_inputs(cfg, dict(a, n_valid=np.ones(3)))
    with pytest.raises(InputError, match=r"^missing array 'v'$"):
        check_inputs(cfg, {"q": a["q"], "k": a["k"]})


# -- RTL in the Amaranth simulator -----------------------------------------------------------


def run_hw(cfg, phases, **kw):
    dut = BLOCK(cfg)
    inputs = []
    for a in phases:
        inputs.append((dut.ctx_stream, ctx_beats(BLOCK, cfg, a["k"], a["v"])))
        inputs.append((dut.q_stream, query_beats(BLOCK, cfg, a["q"], a["n_valid"])))
    total = sum(a["q"].shape[0] for a in phases)
    got, ins, outs = run_streams(dut, inputs, dut.o_stream, total, sequential=True, **kw)
    assert len(got) == total
    res, pos = [], 0
    for a in phases:
        m = a["q"].shape[0]
        res.append(decode_beats(BLOCK, cfg, got[pos:pos + m]))
        pos += m
    return res, ins, outs


def check(cfg, arrays, **kw):
    (got,), _, _ = run_hw(cfg, [check_inputs(cfg, arrays)], **kw)
    want = run_vectors(cfg, arrays)
    for name in NAMES:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_random_with_stalls(cfg):
    check(cfg, random_arrays(cfg, 5, seed=cfg.d), idle=0.3, stall=0.4, seed=cfg.d)


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_edge_cases(cfg):
    # Ties: keys from two distinct rows (the lower index wins).
    check(cfg, random_arrays(cfg, 3, seed=1, key_pool=2), idle=0.2, stall=0.2, seed=1)
    # All keys equal; n = n_max, n = 1, n < top_k.
    a = random_arrays(cfg, 3, seed=2)
    a["k"][:] = a["k"][0]
    a["n_valid"] = np.array([cfg.n_max, 1, max(1, cfg.top_k - 1)])
    check(cfg, a, idle=0.2, stall=0.3, seed=2)
    # Extreme values.
    check(cfg, extreme_arrays(cfg), idle=0.3, stall=0.3, seed=3)
    # Fewer keys stored than n_max.
    check(cfg, random_arrays(cfg, 2, seed=4, n=max(1, cfg.n_max // 2)), stall=0.5, seed=4)


def test_context_cleared_and_refilled():
    cfg = CONFIGS[1]
    phases = [random_arrays(cfg, 3, seed=4, n=5), random_arrays(cfg, 3, seed=5),
              random_arrays(cfg, 2, seed=6, n=3)]
    got, _, _ = run_hw(cfg, [check_inputs(cfg, a) for a in phases], idle=0.3, stall=0.3, seed=7)
    for g, a in zip(got, phases, strict=True):
        want = run_vectors(cfg, a)
        for name in NAMES:
            np.testing.assert_array_equal(g[name], want[name], err_msg=name)


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_cycles_per_query_follow_the_formula(cfg):
    a = check_inputs(cfg, random_arrays(cfg, 4, seed=8))
    a["n_valid"] = np.array([cfg.n_max, 1, max(1, cfg.n_max // 3), cfg.n_max])
    _, ins, outs = run_hw(cfg, [a])
    q_in = ins[1]
    l_lane = max(1, math.ceil(math.log2(cfg.d)))
    for i, n in enumerate(a["n_valid"]):
        # ceil(n / lanes) + top_k + L_lane + L_exp + R + d_v + 5, L_exp = 2.
        want = (math.ceil(int(n) / cfg.lanes) + cfg.top_k + l_lane + 2 + cfg.recip_bits
                + cfg.d_v + 5)
        assert outs[i] - q_in[i] == want == BLOCK.cycles(cfg, int(n)), (i, int(n))
    assert [q_in[i + 1] - outs[i] for i in range(3)] == [1, 1, 1]


def test_hardware_limits_are_clear_errors():
    with pytest.raises(ValueError, match=r"^int8_topk_attention hardware: top_k must be an "
                                         r"integer between 1 and min\(n_max, 256\)"):
        BLOCK(Int8TopKAttentionConfig(n_max=1024, top_k=300))
    with pytest.raises(TypeError, match=r"^config must be an Int8TopKAttentionConfig, not "):
        BLOCK(StdAttentionConfig())


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[1]], ids=ident)
def test_lint_clean(tmp_path, cfg):
    paths = generate("int8_topk_attention", cfg, tmp_path)
    assert lint(paths["verilog"], "int8_topk_attention") == []
