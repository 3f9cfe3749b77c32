"""Binarized dense attention baseline: configuration, the golden model against an independent
scalar model and the float softmax, and the RTL in the Amaranth simulator bit for bit against
the golden model (random stalls on every stream, edge cases, refill, the cycle formula)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from hadware.config.base import ConfigFileError
from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.errors import InputError
from hadware.golden.binary_dense_attention import check_inputs, float_reference, run_vectors
from hadware.hw.binary_dense_attention import BinaryDenseAttention
from hadware.hw.generate import generate, lint
from hadware.tb.amsim import run_streams
from hadware.tb.binary_dense_attention import ctx_beats, decode_beats, query_beats

BLOCK = BinaryDenseAttention
CONFIGS = [
    BinaryDenseAttentionConfig(d=8, n_max=6, d_v=1, lanes=1, temperature=0.3,
                               exp_frac_bits=10, out_frac_bits=2),
    BinaryDenseAttentionConfig(d=16, n_max=10, d_v=2, lanes=3, temperature=0.2,
                               exp_frac_bits=14, out_frac_bits=4),
    BinaryDenseAttentionConfig(d=24, n_max=16, d_v=3, lanes=4, temperature=0.05,
                               exp_frac_bits=12, out_frac_bits=6),
    BinaryDenseAttentionConfig(d=32, n_max=12, d_v=4, lanes=12, temperature=0.1,
                               exp_frac_bits=16, out_frac_bits=8),
]


def ident(c) -> str:
    return f"d{c.d}n{c.n_max}l{c.lanes}"


def random_arrays(cfg, m, seed, *, n=None, key_pool=None):
    rng = np.random.default_rng(seed)
    n = cfg.n_max if n is None else n
    pm1 = np.array([-1, 1], np.int8)
    if key_pool is None:
        k = rng.choice(pm1, (n, cfg.d))
    else:  # keys drawn from a few distinct rows: many equal scores
        k = rng.choice(pm1, (key_pool, cfg.d))[rng.integers(0, key_pool, n)]
    return {"q": rng.choice(pm1, (m, cfg.d)), "k": k,
            "v": rng.integers(-128, 128, (n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, m)}


# -- configuration ---------------------------------------------------------------------------


def test_config_fields_and_defaults():
    cfg = BinaryDenseAttentionConfig()
    assert BinaryDenseAttentionConfig.block == "binary_dense_attention"
    assert cfg.field_names() == ["d", "n_max", "d_v", "lanes", "temperature", "exp_frac_bits",
                                 "out_frac_bits"]
    # d=64, n_max=64, F=19, O=8 by hand: den <= 64 * 2**19 = 2**25 (26 bits); |num| <= 2**32
    # (33 bits); R = 8 + 19 + 6 + 10 = 43; recip <= 2**24 (25 bits); out in 8 + 8 bits.
    assert (cfg.score_width, cfg.den_width, cfg.num_width) == (8, 26, 33)
    assert (cfg.recip_bits, cfg.out_shift, cfg.recip_width, cfg.out_width) == (43, 35, 25, 16)
    assert cfg.lut[0] == 2**19 and len(cfg.lut) == 65
    assert cfg.lut[1] == math.floor(2**19 * math.exp(-0.25) + 0.5)
    assert BinaryDenseAttentionConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"d": 12}, ValueError, r"^d must be a positive multiple of 8, at most 1024, not 12$"),
    ({"d": "64"}, TypeError, r"^d must be an integer, not '64' \(str\)$"),
    ({"n_max": 0}, ValueError, r"^n_max must be an integer between 1 and 65536, not 0$"),
    ({"d_v": 257}, ValueError, r"^d_v must be an integer between 1 and 256, not 257$"),
    ({"n_max": 4, "lanes": 5}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(4\), not 5$"),
    ({"temperature": 0}, ValueError, r"^temperature must be greater than 0\.0, not 0$"),
    ({"temperature": "hot"}, TypeError, r"^temperature must be a number, not 'hot' \(str\)$"),
    ({"exp_frac_bits": 25}, ValueError,
     r"^exp_frac_bits must be an integer between 1 and 24, not 25$"),
    ({"out_frac_bits": -1}, ValueError,
     r"^out_frac_bits must be an integer between 0 and 16, not -1$"),
])
def test_config_errors_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        BinaryDenseAttentionConfig(**kwargs)


def test_config_file_errors():
    with pytest.raises(ConfigFileError, match=r"unknown key\(s\) 'top_k'; binary_dense_"):
        BinaryDenseAttentionConfig.from_dict({"top_k": 8})
    cfg = BinaryDenseAttentionConfig(temperature=1)
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)


# -- golden model ----------------------------------------------------------------------------


def scalar_model(cfg, arrays):
    """One query at a time in Python integers and fractions, from the specification."""
    q, k, v = (np.asarray(arrays[x], np.int64) for x in ("q", "k", "v"))
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    r = o + f + math.ceil(math.log2(cfg.n_max)) + 10
    out = np.zeros((q.shape[0], cfg.d_v), np.int64)
    for i in range(q.shape[0]):
        keys = range(int(arrays["n_valid"][i]))
        s = [int(k[j] @ q[i]) for j in keys]
        top = max(s)
        e = [math.floor(2.0**f * math.exp(-2.0 * cfg.temperature * ((top - sj) // 2)) + 0.5)
             for sj in s]
        recip = math.floor(Fraction(2**r, sum(e)) + Fraction(1, 2))
        for c in range(cfg.d_v):
            num = sum(ej * int(v[j, c]) for ej, j in zip(e, keys, strict=True))
            out[i, c] = math.floor(Fraction(num * recip, 2 ** (r - o)) + Fraction(1, 2))
    return out


@pytest.mark.parametrize("cfg", [*CONFIGS, BinaryDenseAttentionConfig()], ids=ident)
def test_golden_matches_the_scalar_model(cfg):
    for a in (random_arrays(cfg, 6, seed=cfg.d), random_arrays(cfg, 4, seed=1, key_pool=2)):
        np.testing.assert_array_equal(run_vectors(cfg, a)["out"], scalar_model(cfg, a))


def test_golden_worked_example():
    # d=8, F=4, O=0, tau=ln(2)/4: LUT = (16, 11, 8, 6, 4, 3, 2, 1, 1). Scores 8, 6, 4 (every
    # key weighed): e = (16, 11, 8), den = 35; R = 0 + 4 + 2 + 10 = 16,
    # recip = round(65536 / 35 = 1872.46) = 1872; v = (10, -20, -5): num = 160 - 220 - 40 =
    # -100, out = round(-100 * 1872 / 2**16 = -2.86) = -3.
    cfg = BinaryDenseAttentionConfig(d=8, n_max=3, d_v=1, lanes=1, temperature=math.log(2) / 4,
                                     exp_frac_bits=4, out_frac_bits=0)
    assert cfg.lut == (16, 11, 8, 6, 4, 3, 2, 1, 1)
    q = np.ones((1, 8), np.int8)
    k = np.ones((3, 8), np.int8)
    k[1, 0] = -1
    k[2, :2] = -1
    a = {"q": q, "k": k, "v": np.array([[10], [-20], [-5]])}
    assert run_vectors(cfg, a)["out"].tolist() == [[-3]]


@pytest.mark.parametrize("cfg", [*CONFIGS, BinaryDenseAttentionConfig(),
                                 BinaryDenseAttentionConfig(d=64, n_max=512, lanes=8,
                                                            exp_frac_bits=22)], ids=ident)
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
    cfg = CONFIGS[0]
    a = random_arrays(cfg, 2, seed=0)
    with pytest.raises(InputError, match=r"^q must hold only -1 and \+1, found 0 at \[0, 3\]$"):
        check_inputs(cfg, dict(a, q=np.where(np.arange(8) == 3, 0, a["q"])))
    with pytest.raises(InputError, match=r"^k has 7 rows \(keys\), more than n_max = 6$"):
        check_inputs(cfg, dict(a, k=np.ones((7, 8)), v=np.zeros((7, 1))))
    with pytest.raises(InputError, match=r"^v must hold integers in -128\.\.127 \(int8\), "
                                         r"found 128 at \[2, 0\]$"):
        check_inputs(cfg, dict(a, v=np.where(np.arange(6)[:, None] == 2, 128, 0)))
    with pytest.raises(InputError, match=r"^n_valid must hold integers between 1 and n = 6"):
        check_inputs(cfg, dict(a, n_valid=np.array([0, 1])))
    with pytest.raises(InputError, match=r"unknown array\(s\) 'x'; binary_dense_attention"):
        check_inputs(cfg, dict(a, x=np.zeros(1)))


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
    # All keys equal, extreme values, n = n_max and n = 1; a query equal to the key and one
    # opposite to it (every score d, or every score -d).
    a = random_arrays(cfg, 4, seed=2)
    a["k"][:] = a["k"][0]
    a["v"][:] = np.where(np.arange(cfg.n_max)[:, None] % 2 == 0, 127, -128)
    a["q"][0], a["q"][1] = a["k"][0], -a["k"][0]
    a["n_valid"] = np.array([cfg.n_max, cfg.n_max, 1, min(2, cfg.n_max)])
    check(cfg, a, idle=0.2, stall=0.3, seed=2)
    # Fewer keys stored than n_max; scores from -d to d in one row.
    n = max(1, cfg.n_max // 2)
    b = random_arrays(cfg, 2, seed=3, n=n)
    b["k"][0], b["k"][n - 1] = b["q"][0], -b["q"][0]
    check(cfg, b, idle=0.0, stall=0.5, seed=3)


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
    l_lane = 1 + math.ceil(math.log2(cfg.d // 8))
    for i, n in enumerate(a["n_valid"]):
        # 2 * ceil(n / lanes) + ceil(log2(lanes)) + L_lane + L_exp + R + d_v + 7, L_exp = 1.
        want = (2 * math.ceil(int(n) / cfg.lanes) + math.ceil(math.log2(cfg.lanes)) + l_lane
                + 1 + cfg.recip_bits + cfg.d_v + 7)
        assert outs[i] - q_in[i] == want == BLOCK.cycles(cfg, int(n)), (i, int(n))
    # The next query is taken the cycle after the previous output.
    assert [q_in[i + 1] - outs[i] for i in range(3)] == [1, 1, 1]


def test_wrong_config_type_is_a_clear_error():
    from hadware.config.attention import AttentionConfig

    with pytest.raises(TypeError, match=r"^config must be a BinaryDenseAttentionConfig, not "):
        BLOCK(AttentionConfig())


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2]], ids=ident)
def test_lint_clean(tmp_path, cfg):
    paths = generate("binary_dense_attention", cfg, tmp_path)
    assert lint(paths["verilog"], "binary_dense_attention") == []
