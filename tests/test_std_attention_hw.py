"""Standard attention baseline (int8 scores, dense softmax): configuration, the fixed-point
exponential and the golden model against an independent scalar model and the float softmax,
and the RTL in the Amaranth simulator bit for bit against the golden model (random stalls on
every stream, ties, equal keys, extreme values, n = 1 and n = n_max, refill, cycle formula)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from hadware.config.base import ConfigFileError
from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.config.std_attention import StdAttentionConfig
from hadware.errors import InputError
from hadware.golden.std_attention import check_inputs, exp_weights, float_reference, run_vectors
from hadware.hw.generate import generate, lint
from hadware.hw.std_attention import Exp2Unit, StdAttention
from hadware.tb.amsim import run_streams
from hadware.tb.binary_dense_attention import ctx_beats, decode_beats, query_beats

BLOCK = StdAttention
CONFIGS = [
    StdAttentionConfig(d=1, n_max=5, d_v=1, lanes=1, temperature=2**-12, exp_frac_bits=10,
                       out_frac_bits=2, exp_table_bits=3, exp_interp_bits=0),
    StdAttentionConfig(d=5, n_max=10, d_v=2, lanes=3, temperature=2**-13, exp_frac_bits=14,
                       out_frac_bits=4, exp_table_bits=4, exp_interp_bits=6),
    StdAttentionConfig(d=16, n_max=16, d_v=3, lanes=4, temperature=2**-14, exp_frac_bits=19,
                       out_frac_bits=8),
    StdAttentionConfig(d=8, n_max=12, d_v=2, lanes=12, temperature=0.001, exp_frac_bits=16,
                       out_frac_bits=8),
]
PAPER = StdAttentionConfig(d=64, n_max=512, d_v=8, lanes=8, exp_frac_bits=22)
# A scale large enough that G is set by H + 1 rather than by the 24 significant bits of c.
COARSE_SCALE = StdAttentionConfig(d=2, n_max=4, d_v=1, lanes=2, temperature=0.5,
                                  exp_table_bits=10, exp_interp_bits=16)


def ident(c) -> str:
    return f"d{c.d}n{c.n_max}l{c.lanes}P{c.exp_table_bits}Q{c.exp_interp_bits}"


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
    """q all -128; keys alternately all -128 (score 16384 d) and all 127 (score -16256 d), so
    that the largest difference 32640 d occurs; values at the extremes."""
    n = cfg.n_max
    k = np.where(np.arange(n)[:, None] % 2 == 0, -128, 127) * np.ones((1, cfg.d), np.int64)
    return {"q": np.full((m, cfg.d), -128, np.int8), "k": k.astype(np.int8),
            "v": np.where(np.arange(n)[:, None] % 3 == 0, 127, -128)
            * np.ones((1, cfg.d_v), np.int64),
            "n_valid": np.array([n, 1, min(2, n)][:m])}


# -- configuration ---------------------------------------------------------------------------


def test_config_fields_and_derived_numbers():
    cfg = StdAttentionConfig()
    assert StdAttentionConfig.block == "std_attention"
    assert cfg.field_names() == ["d", "n_max", "d_v", "lanes", "temperature", "exp_frac_bits",
                                 "out_frac_bits", "exp_table_bits", "exp_interp_bits"]
    # d = 64: scores in [-128 * 127 * 64, 128 * 128 * 64] = [-1040384, 1048576]: 22 bits;
    # differences up to 2088960: 21 bits. tau = 2**-13: tau / ln 2 = 1.76e-4 = 0.72 * 2**-12,
    # so G = 24 + 12 = 36 and c = round(2**23 * 1.4427) = 12102203.
    assert (cfg.score_width, cfg.delta_max, cfg.delta_width) == (22, 2088960, 21)
    assert cfg.exp_scale_shift == 36
    assert cfg.exp_scale == round(2**36 * 2**-13 / math.log(2)) == 12102203
    assert cfg.exp_table[0] == 2**19 and cfg.exp_table[-1] == 2**18
    assert len(cfg.exp_table) == 65
    assert (cfg.recip_bits, cfg.den_width, cfg.num_width) == (43, 26, 33)
    assert COARSE_SCALE.exp_scale_shift == 27  # H + 1 = 10 + 16 + 1
    assert StdAttentionConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"d": 0}, ValueError, r"^d must be an integer between 1 and 1024, not 0$"),
    ({"d": 8.0}, TypeError, r"^d must be an integer, not 8\.0 \(float\)$"),
    ({"lanes": 65, "n_max": 100}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(64\), not 65$"),
    ({"temperature": 2.0}, ValueError, r"^temperature must be at most 1\.0, not 2\.0$"),
    ({"temperature": 1e-10}, ValueError, r"^temperature must be at least 1e-09, not 1e-10$"),
    ({"exp_table_bits": 0}, ValueError,
     r"^exp_table_bits must be an integer between 1 and 10, not 0$"),
    ({"exp_interp_bits": 17}, ValueError,
     r"^exp_interp_bits must be an integer between 0 and 16, not 17$"),
    ({"exp_interp_bits": True}, TypeError, r"^exp_interp_bits must be an integer, not True"),
])
def test_config_errors_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        StdAttentionConfig(**kwargs)


def test_config_file_errors():
    with pytest.raises(ConfigFileError, match=r"unknown key\(s\) 'top_k'; std_attention"):
        StdAttentionConfig.from_dict({"top_k": 8})
    with pytest.raises(ConfigFileError, match=r"configuration of block 'int8_topk_attention'"):
        StdAttentionConfig.from_dict({"block": "int8_topk_attention"})


# -- the exponential -------------------------------------------------------------------------


def exp_spec(cfg, delta: int) -> int:
    """E(delta), steps a to e of the specification, in Python integers."""
    f, p, q = cfg.exp_frac_bits, cfg.exp_table_bits, cfg.exp_interp_bits
    h = p + q
    g = max(h + 1, 23 - math.floor(math.log2(cfg.temperature / math.log(2))))
    c = math.floor(cfg.temperature / math.log(2) * 2.0**g + 0.5)
    t = (delta * c + 2 ** (g - h - 1)) // 2 ** (g - h)
    i, j, r = t // 2**h, (t // 2**q) % 2**p, t % 2**q
    node = [math.floor(2.0**f * 2.0 ** (-x / 2**p) + 0.5) for x in (j, j + 1)]
    y = node[0] * 2**q - (node[0] - node[1]) * r
    k = q + min(i, f + 2)
    return math.floor(Fraction(y, 2**k) + Fraction(1, 2))


EXP_CONFIGS = [*CONFIGS, StdAttentionConfig(), PAPER, COARSE_SCALE]


@pytest.mark.parametrize("cfg", EXP_CONFIGS, ids=ident)
def test_exp_matches_the_specification_and_its_accuracy(cfg):
    rng = np.random.default_rng(cfg.d)
    # Differences where the weight is not negligible, then the whole range.
    reach = int((cfg.exp_frac_bits + 3) * math.log(2) / cfg.temperature)
    deltas = np.unique(np.concatenate([
        np.arange(0, 64), rng.integers(0, min(reach, cfg.delta_max) + 1, 3000),
        rng.integers(0, cfg.delta_max + 1, 300), [cfg.delta_max]]))
    e = exp_weights(cfg, torch.from_numpy(deltas)).numpy()
    assert e.tolist() == [exp_spec(cfg, int(x)) for x in deltas]
    assert e[0] == 2**cfg.exp_frac_bits and np.all(np.diff(e) <= 0)
    w = 2.0**cfg.exp_frac_bits * np.exp(-cfg.temperature * deltas.astype(np.float64))
    assert np.all(np.abs(e - w) <= cfg.exp_relative_error * w + 1.0)


def test_exp_relative_error_of_the_defaults():
    # (ln 2)**2 / 8 * 2**-12 * 2**(1/64) = 1.48e-5 (interpolation), 2**(2**-17) - 1 = 5.3e-6
    # (rounding of t), 2**(22 * 1.3e-8) - 1 = 2e-7 (the scale constant, at u < F + 3 = 22).
    eps = StdAttentionConfig().exp_relative_error
    assert 2.0e-5 < eps < 2.05e-5


def test_exp_rejects_out_of_range_differences():
    cfg = CONFIGS[1]
    with pytest.raises(ValueError, match=r"score differences must lie in \[0, 163200\]"):
        exp_weights(cfg, torch.tensor([-1]))


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[1], StdAttentionConfig(), COARSE_SCALE],
                         ids=ident)
def test_exp_unit_rtl(cfg):
    """The two-stage unit against the golden E, one difference per cycle, masked ones 0."""
    rng = np.random.default_rng(5)
    reach = int((cfg.exp_frac_bits + 3) * math.log(2) / cfg.temperature)
    deltas = [0, 1, cfg.delta_max, *rng.integers(0, min(reach, cfg.delta_max), 150).tolist(),
              *rng.integers(0, cfg.delta_max + 1, 30).tolist()]
    masks = [1, 1, 1, *rng.integers(0, 2, len(deltas) - 3).tolist()]
    want = exp_weights(cfg, torch.tensor(deltas)).tolist()
    dut = Exp2Unit(cfg)
    got = []

    async def tb(ctx):
        for i in range(len(deltas) + dut.latency):
            if i < len(deltas):
                ctx.set(dut.delta, deltas[i])
                ctx.set(dut.mask, masks[i])
            await ctx.tick()
            if i + 1 >= dut.latency:
                got.append(ctx.get(dut.e))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got[:len(deltas)] == [w if mk else 0 for w, mk in zip(want, masks, strict=True)]


# -- golden model ----------------------------------------------------------------------------


def scalar_model(cfg, arrays):
    """One query at a time in Python integers and fractions, from the specification."""
    q, k, v = (np.asarray(arrays[x], np.int64) for x in ("q", "k", "v"))
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    r = o + f + math.ceil(math.log2(cfg.n_max)) + 10
    out = np.zeros((q.shape[0], cfg.d_v), np.int64)
    for i in range(q.shape[0]):
        keys = range(int(arrays["n_valid"][i]))
        s = [sum(int(a) * int(b) for a, b in zip(q[i], k[j], strict=True)) for j in keys]
        e = [exp_spec(cfg, max(s) - sj) for sj in s]
        recip = math.floor(Fraction(2**r, sum(e)) + Fraction(1, 2))
        for c in range(cfg.d_v):
            num = sum(ej * int(v[j, c]) for ej, j in zip(e, keys, strict=True))
            out[i, c] = math.floor(Fraction(num * recip, 2 ** (r - o)) + Fraction(1, 2))
    return out


@pytest.mark.parametrize("cfg", [*CONFIGS, StdAttentionConfig()], ids=ident)
def test_golden_matches_the_scalar_model(cfg):
    for a in (random_arrays(cfg, 5, seed=cfg.d), random_arrays(cfg, 3, seed=1, key_pool=2),
              extreme_arrays(cfg)):
        np.testing.assert_array_equal(run_vectors(cfg, a)["out"], scalar_model(cfg, a))


@pytest.mark.parametrize("cfg", [*CONFIGS, StdAttentionConfig(), PAPER], ids=ident)
def test_float_error_within_the_proven_bound(cfg):
    rng = np.random.default_rng(3)
    worst = 0.0
    for seed in range(3):
        a = random_arrays(cfg, 8, seed=seed)
        # Adversarial values: extremes in a random sign pattern.
        b = dict(a, v=np.where(rng.random(a["v"].shape) < 0.5, -128, 127).astype(np.int8))
        for x in (a, b):
            err = np.abs(run_vectors(cfg, x)["out"] - float_reference(cfg, x)).max()
            worst = max(worst, float(err))
    assert worst <= cfg.error_bound_ulp


def test_input_errors_name_the_array():
    cfg = CONFIGS[1]
    a = random_arrays(cfg, 2, seed=0)
    with pytest.raises(InputError, match=r"^q must hold integers in -128\.\.127 \(int8\), "
                                         r"found 200 at \[1, 4\]$"):
        check_inputs(cfg, dict(a, q=np.where(np.arange(10).reshape(2, 5) == 9, 200, 0)))
    with pytest.raises(InputError, match=r"^k must have shape \(n, d\) = \(n, 5\), not \(10, 4\)"):
        check_inputs(cfg, dict(a, k=np.zeros((10, 4))))
    with pytest.raises(InputError, match=r"^k must hold integers in -128\.\.127 \(int8\), "
                                         r"found 0\.5 at \[0, 0\]$"):
        check_inputs(cfg, dict(a, k=np.full((10, 5), 0.5)))
    with pytest.raises(InputError, match=r"unknown array\(s\) 'w'; std_attention takes q, k, v"):
        check_inputs(cfg, dict(a, w=np.zeros(1)))


# -- RTL in the Amaranth simulator -----------------------------------------------------------


def run_hw(cfg, phases, **kw):
    """Each phase writes its context (after a clear), then runs its queries. Returns decoded
    outputs per phase and the transfer cycles."""
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
    np.testing.assert_array_equal(got["out"], run_vectors(cfg, arrays)["out"])


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_random_with_stalls(cfg):
    check(cfg, random_arrays(cfg, 5, seed=cfg.d), idle=0.3, stall=0.4, seed=cfg.d)


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_edge_cases(cfg):
    # Ties: keys from two distinct rows.
    check(cfg, random_arrays(cfg, 3, seed=1, key_pool=2), idle=0.2, stall=0.2, seed=1)
    # All keys equal, n = n_max, n = 1.
    a = random_arrays(cfg, 3, seed=2)
    a["k"][:] = a["k"][0]
    a["n_valid"] = np.array([cfg.n_max, 1, cfg.n_max])
    check(cfg, a, idle=0.2, stall=0.3, seed=2)
    # Extreme values: the largest score difference, -128 and 127 everywhere.
    check(cfg, extreme_arrays(cfg), idle=0.3, stall=0.3, seed=3)
    # Fewer keys stored than n_max.
    check(cfg, random_arrays(cfg, 2, seed=4, n=max(1, cfg.n_max // 2)), stall=0.5, seed=4)


def test_context_cleared_and_refilled():
    cfg = CONFIGS[1]
    phases = [random_arrays(cfg, 3, seed=4, n=5), random_arrays(cfg, 3, seed=5),
              random_arrays(cfg, 2, seed=6, n=3)]
    got, _, _ = run_hw(cfg, [check_inputs(cfg, a) for a in phases], idle=0.3, stall=0.3, seed=7)
    for g, a in zip(got, phases, strict=True):
        np.testing.assert_array_equal(g["out"], run_vectors(cfg, a)["out"])


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_cycles_per_query_follow_the_formula(cfg):
    a = check_inputs(cfg, random_arrays(cfg, 4, seed=8))
    a["n_valid"] = np.array([cfg.n_max, 1, max(1, cfg.n_max // 3), cfg.n_max])
    _, ins, outs = run_hw(cfg, [a])
    q_in = ins[1]
    l_lane = max(1, math.ceil(math.log2(cfg.d)))
    for i, n in enumerate(a["n_valid"]):
        # 2 * ceil(n / lanes) + ceil(log2(lanes)) + L_lane + L_exp + R + d_v + 7, L_exp = 2.
        want = (2 * math.ceil(int(n) / cfg.lanes) + math.ceil(math.log2(cfg.lanes)) + l_lane
                + 2 + cfg.recip_bits + cfg.d_v + 7)
        assert outs[i] - q_in[i] == want == BLOCK.cycles(cfg, int(n)), (i, int(n))
    assert [q_in[i + 1] - outs[i] for i in range(3)] == [1, 1, 1]


def test_wrong_config_type_is_a_clear_error():
    with pytest.raises(TypeError, match=r"^config must be a StdAttentionConfig, not "):
        BLOCK(Int8TopKAttentionConfig())


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[1]], ids=ident)
def test_lint_clean(tmp_path, cfg):
    paths = generate("std_attention", cfg, tmp_path)
    assert lint(paths["verilog"], "std_attention") == []
