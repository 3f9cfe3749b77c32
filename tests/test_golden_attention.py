"""The attention golden model: configuration, input checks, exact arithmetic and accuracy.

The expected values come from an independent scalar model written from the specification in
the module docstring of ``hadware.golden.attention`` (dot products, sorted(), exact fractions),
not from the code under test.
"""

from __future__ import annotations

import itertools
import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
import torch

from hadware.config.attention import AttentionConfig, signed_width, unsigned_width
from hadware.config.base import ConfigFileError
from hadware.errors import InputError
from hadware.golden.attention import (
    _mul_round_shift,
    check_inputs,
    float_reference,
    hamming_scores,
    pack_bits,
    popcount32,
    reciprocal,
    run_vectors,
    scale_output,
)

# -- independent scalar model ----------------------------------------------------------------


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def scalar_model(cfg: AttentionConfig, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One query at a time, Python integers and fractions, straight from the specification."""
    q = np.asarray(arrays["q"], dtype=np.int64)
    k = np.asarray(arrays["k"], dtype=np.int64)
    v = np.asarray(arrays["v"], dtype=np.int64)
    m, n = q.shape[0], k.shape[0]
    n_valid = arrays.get("n_valid", np.full(m, n))
    f, o, tau = cfg.exp_frac_bits, cfg.out_frac_bits, cfg.temperature
    r = o + f + math.ceil(math.log2(cfg.top_k)) + 10
    s_shift = r - o
    out = np.zeros((m, cfg.d_v), dtype=np.int64)
    index = np.full((m, cfg.top_k), -1, dtype=np.int64)
    score = np.zeros((m, cfg.top_k), dtype=np.int64)
    for i in range(m):
        s = [int(x) for x in k @ q[i]]  # the +-1 dot product
        chosen = sorted(range(int(n_valid[i])), key=lambda j: (-s[j], j))[: cfg.top_k]
        index[i, : len(chosen)] = chosen
        score[i, : len(chosen)] = [s[j] for j in chosen]
        top = s[chosen[0]]
        e = [math.floor(2.0**f * math.exp(-2.0 * tau * ((top - s[j]) // 2)) + 0.5)
             for j in chosen]
        den = sum(e)
        recip = round_half_up(Fraction(2**r, den))
        for c in range(cfg.d_v):
            num = sum(ei * int(v[j, c]) for ei, j in zip(e, chosen, strict=True))
            out[i, c] = round_half_up(Fraction(num * recip, 2**s_shift))
    return {"out": out, "topk_index": index, "topk_score": score}


def random_arrays(cfg: AttentionConfig, m: int, n: int, seed: int, *, n_valid: bool = True,
                  distinct_keys: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.choice(np.array([-1, 1], dtype=np.int8), size=(m, cfg.d))
    if distinct_keys is None:
        k = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, cfg.d))
    else:
        pool = rng.choice(np.array([-1, 1], dtype=np.int8), size=(distinct_keys, cfg.d))
        k = pool[rng.integers(0, distinct_keys, size=n)]
    v = rng.integers(-128, 128, size=(n, cfg.d_v)).astype(np.int8)
    arrays = {"q": q, "k": k, "v": v}
    if n_valid:
        arrays["n_valid"] = rng.integers(1, n + 1, size=m).astype(np.int32)
    return arrays


def assert_bit_exact(cfg: AttentionConfig, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    got = run_vectors(cfg, arrays)
    want = scalar_model(cfg, arrays)
    for name in ("out", "topk_index", "topk_score"):
        assert got[name].dtype == np.int32, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    return got


def max_error(cfg: AttentionConfig, arrays: dict[str, np.ndarray]) -> float:
    out = run_vectors(cfg, arrays)["out"].astype(np.float64)
    return float(np.abs(out - float_reference(cfg, arrays)).max())


# The configurations under test. Each one with an error bound of at most 1 must stay within
# one unit of the last place of the exact softmax.
DEFAULT = AttentionConfig()
WIDE_TOPK = AttentionConfig(d=64, n_max=512, top_k=32, d_v=8, exp_frac_bits=22)
SMALL_D = AttentionConfig(d=8, n_max=16, top_k=4, d_v=3, temperature=0.5, exp_frac_bits=17,
                          out_frac_bits=6)
LARGE_D = AttentionConfig(d=256, n_max=128, top_k=16, d_v=5, temperature=1 / 16,
                          exp_frac_bits=21, out_frac_bits=8)
COARSE = AttentionConfig(exp_frac_bits=12)  # bound far above 1: see test_coarse_table
# product_width above 64: the output step runs on limbs.
HUGE = AttentionConfig(d=128, n_max=4096, top_k=4096, d_v=2, lanes=64, temperature=0.02,
                       exp_frac_bits=24, out_frac_bits=16)
ONE_ULP = [DEFAULT, WIDE_TOPK, SMALL_D, LARGE_D]


# -- configuration ---------------------------------------------------------------------------


def test_defaults_and_fields() -> None:
    assert AttentionConfig.block == "attention"
    assert AttentionConfig.field_names() == [
        "d", "n_max", "top_k", "d_v", "lanes", "temperature", "exp_frac_bits", "out_frac_bits"]
    assert DEFAULT.error_bound_ulp <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d": "64"}, r"^d must be an integer, not '64' \(str\)$"),
        ({"top_k": 8.0}, r"^top_k must be an integer, not 8\.0 \(float\)$"),
        ({"lanes": True}, r"^lanes must be an integer, not True \(bool\)$"),
        ({"temperature": "hot"}, r"^temperature must be a number, not 'hot' \(str\)$"),
        ({"temperature": None}, r"^temperature must be a number"),
        ({"exp_frac_bits": 12.5}, r"^exp_frac_bits must be an integer"),
    ],
)
def test_config_type_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        AttentionConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d": 12}, r"^d must be a positive multiple of 8, at most 1024, not 12$"),
        ({"d": 0}, r"^d must be a positive multiple of 8, at most 1024, not 0$"),
        ({"d": 1032}, r"^d must be a positive multiple of 8, at most 1024, not 1032$"),
        ({"n_max": 0}, r"^n_max must be an integer between 1 and 65536, not 0$"),
        ({"n_max": 65537}, r"^n_max must be an integer between 1 and 65536, not 65537$"),
        ({"top_k": 0}, r"^top_k must be an integer between 1 and n_max \(64\), not 0$"),
        ({"top_k": 65}, r"^top_k must be an integer between 1 and n_max \(64\), not 65$"),
        ({"d_v": 0}, r"^d_v must be an integer between 1 and 256, not 0$"),
        ({"d_v": 257}, r"^d_v must be an integer between 1 and 256, not 257$"),
        ({"lanes": 0}, r"^lanes must be an integer between 1 and min\(n_max, 64\) \(64\), not 0$"),
        ({"n_max": 4, "top_k": 2, "lanes": 5},
         r"^lanes must be an integer between 1 and min\(n_max, 64\) \(4\), not 5$"),
        ({"n_max": 256, "lanes": 65},
         r"^lanes must be an integer between 1 and min\(n_max, 64\) \(64\), not 65$"),
        ({"temperature": 0}, r"^temperature must be greater than 0\.0, not 0$"),
        ({"temperature": -0.5}, r"^temperature must be greater than 0\.0, not -0\.5$"),
        ({"temperature": math.inf}, r"^temperature must be a finite number, not inf$"),
        ({"temperature": math.nan}, r"^temperature must be a finite number, not nan$"),
        ({"exp_frac_bits": 0}, r"^exp_frac_bits must be an integer between 1 and 24, not 0$"),
        ({"exp_frac_bits": 25}, r"^exp_frac_bits must be an integer between 1 and 24, not 25$"),
        ({"out_frac_bits": -1}, r"^out_frac_bits must be an integer between 0 and 16, not -1$"),
        ({"out_frac_bits": 17}, r"^out_frac_bits must be an integer between 0 and 16, not 17$"),
    ],
)
def test_config_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttentionConfig(**kwargs)


def test_config_json() -> None:
    with pytest.raises(ConfigFileError, match=r"unknown key\(s\) 'tau'; attention accepts d, "):
        AttentionConfig.from_dict({"d": 64, "tau": 0.1})
    with pytest.raises(ValueError, match=r"^cfg\.json: top_k must be an integer between 1 and "
                                         r"n_max \(16\), not 17$"):
        AttentionConfig.from_dict({"n_max": 16, "top_k": 17}, source="cfg.json")
    with pytest.raises(TypeError, match=r"^cfg\.json: d must be an integer"):
        AttentionConfig.from_dict({"d": 6.4}, source="cfg.json")
    cfg = AttentionConfig(temperature=1)
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)
    assert cfg.stable_hash() == AttentionConfig(temperature=1.0).stable_hash()
    assert AttentionConfig.from_dict({"block": "attention", **WIDE_TOPK.to_dict()}) == WIDE_TOPK


def test_width_helpers() -> None:
    for lo in range(-40, 41):
        for hi in range(lo, 41):
            w = signed_width(lo, hi)
            assert -(2 ** (w - 1)) <= lo and hi < 2 ** (w - 1)
            assert w == 1 or not (-(2 ** (w - 2)) <= lo and hi < 2 ** (w - 2))
    for hi in range(0, 70):
        w = unsigned_width(hi)
        assert hi < 2**w and (w == 1 or hi >= 2 ** (w - 1))


def test_derived_numbers_of_the_default() -> None:
    c = DEFAULT  # d=64, n_max=64, top_k=8, F=19, O=8, worked out by hand
    assert (c.score_width, c.index_width, c.count_width, c.lut_depth) == (8, 6, 7, 65)
    assert c.recip_bits == 8 + 19 + 3 + 10 == 40
    assert c.out_shift == 32
    assert c.lut_width == 20 and c.lut[0] == 2**19
    assert c.den_width == 23  # 8 * 2**19 = 2**22
    assert c.recip_max == 2**21 and c.recip_width == 22
    assert c.recip_min == 2**18  # 2**40 / 2**22 exactly
    assert (c.out_min, c.out_max, c.out_width) == (-128 * 256, 127 * 256, 16)


@pytest.mark.parametrize("cfg", [*ONE_ULP, COARSE, HUGE,
                                 AttentionConfig(d=8, n_max=1, top_k=1, lanes=1, exp_frac_bits=1,
                                                 out_frac_bits=0)])
def test_widths_hold_their_extremes(cfg: AttentionConfig) -> None:
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    assert (cfg.out_min, cfg.out_max) == (-128 * 2**o, 127 * 2**o)
    assert cfg.out_width == 8 + o
    assert cfg.recip_width == cfg.recip_bits - f + 1
    assert cfg.den_max < 2**cfg.den_width
    assert -(2 ** (cfg.num_width - 1)) <= -128 * cfg.den_max
    table = cfg.lut
    assert len(table) == cfg.d + 1 and table[0] == 2**f
    assert all(a >= b >= 0 for a, b in itertools.pairwise(table))
    assert max(table) < 2**cfg.lut_width
    # Sweep denominators across the whole range (every one for small ranges).
    lo, hi = cfg.den_min, cfg.den_max
    dens = range(lo, hi + 1) if hi - lo < 5000 else np.linspace(lo, hi, 5000).astype(np.int64)
    half = 2 ** (cfg.out_shift - 1)
    limit = 2 ** (cfg.product_width - 1)
    for den in map(int, dens):
        recip = round_half_up(Fraction(2**cfg.recip_bits, den))
        assert cfg.recip_min <= recip <= cfg.recip_max < 2**cfg.recip_width
        assert -limit <= -128 * den * recip and 127 * den * recip + half < limit


# -- pieces ----------------------------------------------------------------------------------


def test_lut_is_the_rounded_exponential() -> None:
    for cfg in (DEFAULT, SMALL_D, COARSE, AttentionConfig(d=16, temperature=3.0,
                                                          exp_frac_bits=3)):
        scale = 2**cfg.exp_frac_bits
        for a, entry in enumerate(cfg.lut):
            # The specification: float64 exp, then exact round half up.
            x = Fraction(math.exp(-2.0 * cfg.temperature * a)) * scale
            assert entry == round_half_up(x)
            # And against a 40-digit exponential: off by at most a half plus float noise.
            with localcontext() as ctx:
                ctx.prec = 40
                exact = (Decimal(-2) * Decimal(cfg.temperature) * a).exp() * scale
            assert abs(Decimal(entry) - exact) <= Decimal("0.5000001")


def test_lut_small_case_by_hand() -> None:
    # F = 4, tau = ln(2)/4: LUT[a] = 16 * 2**(-a/2) = 16, 11.31, 8, 5.66, 4, 2.83, 2, 1.41, 1.
    cfg = AttentionConfig(d=8, temperature=math.log(2) / 4, exp_frac_bits=4)
    assert cfg.lut == (16, 11, 8, 6, 4, 3, 2, 1, 1)


def test_lut_rounds_halves_up() -> None:
    # tau = ln(2)/2, F = 3: in float64, 8 * exp(-2 * tau * 4) is exactly 0.5, which rounds up
    # to 1 (round half to even would give 0); 8 * exp(-2 * tau * 5) = 0.25 rounds down.
    cfg = AttentionConfig(d=8, temperature=math.log(2) / 2, exp_frac_bits=3)
    assert 8 * math.exp(-2.0 * cfg.temperature * 4) == 0.5
    assert cfg.lut == (8, 4, 2, 1, 1, 0, 0, 0, 0)
    # Just above a half: 2**22 * exp(-2 * 0.296875 * 25) = 1.50003... -> 2.
    cfg = AttentionConfig(d=32, temperature=0.296875, exp_frac_bits=22)
    assert cfg.lut[25] == 2


def test_worked_example_by_hand() -> None:
    # d = 8, top_k = 2, F = 4, O = 0, tau = ln(2)/4 (table above). Scores 8, 6, 4: keys 0 and 1
    # are kept, e = (16, 11), den = 27. R = 0 + 4 + 1 + 10 = 15, recip = round(32768 / 27 =
    # 1213.63) = 1214. v = (10, -20, 127): num = 160 - 220 = -60, out = round(-60 * 1214 / 2**15
    # = -2.223) = -2. The exact softmax gives 10 * 0.586 - 20 * 0.414 = -2.43.
    cfg = AttentionConfig(d=8, n_max=3, top_k=2, d_v=1, lanes=1, temperature=math.log(2) / 4,
                          exp_frac_bits=4, out_frac_bits=0)
    q = np.ones((1, 8))
    k = np.ones((3, 8))
    k[1, :1] = -1
    k[2, :2] = -1
    arrays = {"q": q, "k": k, "v": np.array([[10], [-20], [127]])}
    got = run_vectors(cfg, arrays)
    assert got["topk_index"].tolist() == [[0, 1]] and got["topk_score"].tolist() == [[8, 6]]
    assert got["out"].tolist() == [[-2]]
    exact = 10 * (2 - 2**0.5) - 20 * (2**0.5 - 1)
    assert float_reference(cfg, arrays)[0, 0] == pytest.approx(exact)


@pytest.mark.parametrize("cfg", [DEFAULT, WIDE_TOPK, HUGE,
                                 AttentionConfig(d=8, n_max=3, top_k=3, lanes=1,
                                                 exp_frac_bits=2, out_frac_bits=0)])
def test_reciprocal_is_rounded_half_up(cfg: AttentionConfig) -> None:
    rng = np.random.default_rng(cfg.top_k)
    lo, hi = cfg.den_min, cfg.den_max
    dens = [lo, lo + 1, 2 * lo - 1, 2 * lo, 3 * lo + 1, hi - 1, hi]
    dens += [int(x) for x in rng.integers(lo, hi + 1, size=300)]
    dens = [x for x in dens if lo <= x <= hi]
    got = reciprocal(cfg, torch.tensor(dens, dtype=torch.int64)).tolist()
    assert got == [round_half_up(Fraction(2**cfg.recip_bits, x)) for x in dens]


def test_reciprocal_tiny_case_by_hand() -> None:
    # top_k = 3, F = 2, O = 0: R = 0 + 2 + 2 + 10 = 14; 2**14 / 5 = 3276.8 -> 3277,
    # 2**14 / 6 = 2730.67 -> 2731, 2**14 / 7 = 2340.57 -> 2341, 2**14 / 9 = 1820.44 -> 1820.
    cfg = AttentionConfig(d=8, n_max=3, top_k=3, lanes=1, exp_frac_bits=2, out_frac_bits=0)
    assert cfg.recip_bits == 14
    got = reciprocal(cfg, torch.tensor([4, 5, 6, 7, 9, 12])).tolist()
    assert got == [4096, 3277, 2731, 2341, 1820, 1365]


def test_output_rounding_halves_go_up() -> None:
    cfg = DEFAULT
    s = cfg.out_shift
    half = 2 ** (s - 1)
    # num * recip = x * 2**(s-1): results x/2 rounded half toward +infinity.
    num = torch.tensor([5, -5, 3, -3, 1, -1, 0, 7, -7])
    recip = torch.full_like(num, half)
    assert scale_output(cfg, num, recip).tolist() == [3, -2, 2, -1, 1, 0, 0, 4, -3]
    # Just below and above a half.
    num = torch.tensor([1, -1])
    assert scale_output(cfg, num, torch.tensor([half - 1, half + 1])).tolist() == [0, -1]


@pytest.mark.parametrize("cfg", [DEFAULT, WIDE_TOPK, HUGE, COARSE])
def test_output_step_against_fractions(cfg: AttentionConfig) -> None:
    rng = np.random.default_rng(cfg.exp_frac_bits)
    dens = [cfg.den_min, cfg.den_max] + [int(x) for x in
                                         rng.integers(cfg.den_min, cfg.den_max + 1, size=400)]
    nums, recips, want = [], [], []
    for den in dens:
        recip = round_half_up(Fraction(2**cfg.recip_bits, den))
        for num in (-128 * den, 127 * den, int(rng.integers(-128 * den, 127 * den + 1))):
            nums.append(num)
            recips.append(recip)
            want.append(round_half_up(Fraction(num * recip, 2**cfg.out_shift)))
    a, b = torch.tensor(nums), torch.tensor(recips)
    assert scale_output(cfg, a, b).tolist() == want
    if cfg.product_width <= 64:
        # The limb path must agree with the direct one wherever both apply.
        assert _mul_round_shift(a, b, cfg.out_shift, wide=True).tolist() == want


def test_limb_product_for_every_shift() -> None:
    rng = np.random.default_rng(3)
    for shift in range(1, 67):
        nums, recips, want = [], [], []
        for _ in range(60):
            b = int(rng.integers(0, 2**42))
            a_max = min(2**47, (2**23 << shift) // max(b, 1))
            a = int(rng.integers(-a_max, a_max + 1))
            nums.append(a)
            recips.append(b)
            want.append(round_half_up(Fraction(a * b, 2**shift)))
        got = _mul_round_shift(torch.tensor(nums), torch.tensor(recips), shift, wide=True)
        assert got.tolist() == want, shift


def test_popcount_and_packing() -> None:
    rng = np.random.default_rng(5)
    values = [0, 1, 2**31, 2**32 - 1] + [int(x) for x in rng.integers(0, 2**32, size=500)]
    assert popcount32(torch.tensor(values)).tolist() == [bin(x).count("1") for x in values]
    x = -torch.ones((40, 40), dtype=torch.int64)
    x.fill_diagonal_(1)
    words = pack_bits(x)
    for c in range(40):
        assert words[c].tolist() == [1 << c if c < 32 else 0, 1 << (c - 32) if c >= 32 else 0]


@pytest.mark.parametrize("d", [8, 24, 40, 64, 96, 256, 1024])
def test_scores_are_the_dot_product(d: int) -> None:
    rng = np.random.default_rng(d)
    q = rng.choice([-1, 1], size=(37, d))
    k = rng.choice([-1, 1], size=(53, d))
    k[0] = q[0]
    k[1] = -q[0]
    got = hamming_scores(torch.from_numpy(q), torch.from_numpy(k))
    np.testing.assert_array_equal(got.numpy(), q @ k.T)
    assert int(got[0, 0]) == d and int(got[0, 1]) == -d


# -- the whole model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "m", "n", "distinct"),
    [
        (DEFAULT, 40, 64, None),
        (DEFAULT, 40, 50, 3),  # many ties
        (WIDE_TOPK, 12, 512, None),
        (WIDE_TOPK, 12, 300, 4),
        (SMALL_D, 40, 16, None),
        (LARGE_D, 20, 128, None),
        (COARSE, 40, 64, None),
        (HUGE, 3, 200, None),  # top_k above n everywhere, limb output path
        (HUGE, 2, 4096, 2),
    ],
)
def test_bit_exact_against_scalar_model(cfg: AttentionConfig, m: int, n: int,
                                        distinct: int | None) -> None:
    arrays = random_arrays(cfg, m, n, seed=m * n + cfg.top_k, distinct_keys=distinct)
    assert_bit_exact(cfg, arrays)


def test_float_reference_against_numpy() -> None:
    cfg = WIDE_TOPK
    arrays = random_arrays(cfg, 20, 300, seed=11)
    ref = float_reference(cfg, arrays)
    q, k, v = (arrays[x].astype(np.int64) for x in ("q", "k", "v"))
    for i in range(q.shape[0]):
        s = k[: arrays["n_valid"][i]] @ q[i]
        chosen = sorted(range(len(s)), key=lambda j: (-s[j], j))[: cfg.top_k]
        logits = cfg.temperature * s[chosen].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        np.testing.assert_allclose(ref[i], 256 * (p @ v[chosen]), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("cfg", ONE_ULP)
def test_within_one_ulp_of_the_exact_softmax(cfg: AttentionConfig) -> None:
    assert cfg.error_bound_ulp <= 1
    n = min(cfg.n_max, 512)
    for seed, distinct in ((1, None), (2, 3), (3, 1)):
        arrays = random_arrays(cfg, 300, n, seed=seed, distinct_keys=distinct)
        assert max_error(cfg, arrays) <= 1.0 + 1e-9


def adversarial_table_case(cfg: AttentionConfig, a: int, sign: int) -> dict[str, np.ndarray]:
    """One top key with v = 127 * sign, top_k - 1 keys at table address a with v = -128 * sign:
    every table rounding error then pushes the mean the same way."""
    n = cfg.top_k
    q = np.ones((1, cfg.d), dtype=np.int8)
    k = np.ones((n, cfg.d), dtype=np.int8)
    k[1:, :a] = -1  # score d - 2a
    v = np.full((n, cfg.d_v), -128 if sign > 0 else 127, dtype=np.int64)
    v[0] = 127 if sign > 0 else -128
    return {"q": q, "k": k, "v": v}


def test_coarse_table_breaks_one_ulp_but_keeps_its_bound() -> None:
    # exp_frac_bits = 12 is too few for top_k = 8 at out_frac_bits = 8: the table rounding alone
    # can move the output by tens of units of its last place. The bound must still hold.
    for cfg, must_exceed_one in ((COARSE, True), (DEFAULT, False)):
        worst = max(max_error(cfg, adversarial_table_case(cfg, a, sign))
                    for a in range(1, cfg.d + 1) for sign in (1, -1))
        assert worst <= cfg.error_bound_ulp
        assert (worst > 1) == must_exceed_one, worst
    arrays = random_arrays(COARSE, 300, 64, seed=4)
    assert max_error(COARSE, arrays) <= COARSE.error_bound_ulp


def test_huge_config_keeps_its_bound() -> None:
    arrays = random_arrays(HUGE, 4, 4096, seed=9)
    assert max_error(HUGE, arrays) <= HUGE.error_bound_ulp


# -- corners -----------------------------------------------------------------------------------


def test_all_keys_equal_is_the_plain_mean() -> None:
    cfg = DEFAULT
    rng = np.random.default_rng(12)
    arrays = random_arrays(cfg, 5, 64, seed=12)
    arrays["k"][:] = arrays["k"][0]
    arrays["v"] = rng.integers(-128, 128, size=(64, cfg.d_v))
    got = assert_bit_exact(cfg, arrays)
    for i in range(5):
        chosen = list(range(min(cfg.top_k, int(arrays["n_valid"][i]))))
        assert got["topk_index"][i, : len(chosen)].tolist() == chosen
        mean = [Fraction(int(arrays["v"][chosen, c].sum()) * 256, len(chosen))
                for c in range(cfg.d_v)]
        # Equal weights: no table error, only the reciprocal and the final rounding.
        assert all(abs(got["out"][i, c] - mean[c]) <= Fraction(9, 16) for c in range(cfg.d_v))


def test_fewer_keys_than_top_k_pads() -> None:
    cfg = WIDE_TOPK
    arrays = random_arrays(cfg, 6, 5, seed=13, n_valid=False)
    got = assert_bit_exact(cfg, arrays)
    assert (got["topk_index"][:, 5:] == -1).all() and (got["topk_score"][:, 5:] == 0).all()
    assert (np.sort(got["topk_index"][:, :5], axis=1) == np.arange(5)).all()
    assert max_error(cfg, arrays) <= 1


def test_n_equals_n_max() -> None:
    cfg = AttentionConfig(d=64, n_max=512, top_k=32, exp_frac_bits=22)
    arrays = random_arrays(cfg, 10, cfg.n_max, seed=14)
    arrays["n_valid"][0] = cfg.n_max
    assert_bit_exact(cfg, arrays)


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL_D, HUGE, AttentionConfig(top_k=1)])
def test_single_key_returns_its_value_exactly(cfg: AttentionConfig) -> None:
    arrays = random_arrays(cfg, 7, 1, seed=15)
    arrays["v"] = np.array([[-128, 127, 0, -1, 1, 5, -77, 100][: cfg.d_v] * 1], dtype=np.int64)
    arrays["v"] = np.resize(arrays["v"], (1, cfg.d_v))
    got = assert_bit_exact(cfg, arrays)
    assert (got["out"] == arrays["v"][0] * 2**cfg.out_frac_bits).all()
    assert (got["topk_index"][:, 0] == 0).all() and (got["topk_index"][:, 1:] == -1).all()


def test_top_k_one_returns_the_best_value_exactly() -> None:
    cfg = AttentionConfig(d=32, n_max=64, top_k=1)
    arrays = random_arrays(cfg, 50, 64, seed=16, distinct_keys=6)
    got = assert_bit_exact(cfg, arrays)
    best = arrays["v"].astype(np.int64)[got["topk_index"][:, 0]]
    np.testing.assert_array_equal(got["out"], best * 256)


@pytest.mark.parametrize("cfg", [*ONE_ULP, COARSE, HUGE])
@pytest.mark.parametrize("value", [-128, 127])
def test_constant_extreme_values_come_out_exactly(cfg: AttentionConfig, value: int) -> None:
    n = min(cfg.n_max, 300)
    arrays = random_arrays(cfg, 8, n, seed=17)
    arrays["v"] = np.full((n, cfg.d_v), value, dtype=np.int8)
    got = run_vectors(cfg, arrays)["out"]
    assert (got == value * 2**cfg.out_frac_bits).all()


def test_alternating_extreme_values() -> None:
    for cfg in (DEFAULT, SMALL_D, LARGE_D):
        n = min(cfg.n_max, 128)
        arrays = random_arrays(cfg, 30, n, seed=18)
        v = np.full((n, cfg.d_v), -128, dtype=np.int8)
        v[::2] = 127
        arrays["v"] = v
        assert_bit_exact(cfg, arrays)
        assert max_error(cfg, arrays) <= 1


def test_large_batch_shapes() -> None:
    # 1000 queries against 512 keys in one vectorized call (speed is a benchmark, not a test).
    arrays = random_arrays(WIDE_TOPK, 1000, 512, seed=19)
    got = run_vectors(WIDE_TOPK, arrays)
    assert got["out"].shape == (1000, 8) and got["topk_index"].shape == (1000, 32)


# -- input checks ------------------------------------------------------------------------------


def good_arrays() -> dict[str, np.ndarray]:
    return random_arrays(DEFAULT, 3, 10, seed=20)


def test_check_inputs_normalises() -> None:
    arrays = good_arrays()
    del arrays["n_valid"]
    arrays["q"] = arrays["q"].astype(np.float64)
    arrays["k"] = arrays["k"].astype(np.int32)
    arrays["v"] = arrays["v"].astype(np.float32)
    got = check_inputs(DEFAULT, arrays)
    assert list(got) == ["q", "k", "v", "n_valid"]
    assert [a.dtype for a in got.values()] == [np.int8, np.int8, np.int8, np.int32]
    assert got["n_valid"].tolist() == [10, 10, 10]
    np.testing.assert_array_equal(got["v"], arrays["v"])


def _with(**changes: object) -> dict[str, object]:
    arrays: dict[str, object] = dict(good_arrays())
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    return arrays


def _set(name: str, index: tuple[int, ...], value: object, dtype: object = None) -> np.ndarray:
    a = good_arrays()[name].astype(dtype or np.int64)
    a[index] = value
    return a


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (_with(v=None), r"^missing array 'v'$"),
        (_with(q=None), r"^missing array 'q'$"),
        (_with(x=np.zeros(3), mask=np.zeros(3)), r"^unknown array\(s\) 'mask', 'x'; attention "),
        (_with(q=np.ones(64)), r"^q must be a 2-D array \(m, d\) = \(m, 64\), not of shape"),
        (_with(q=np.ones((3, 32))), r"^q must have d = 64 columns, not 32"),
        (_with(q=np.ones((0, 64))), r"^q must have at least one row"),
        (_with(k=np.ones((10, 63))), r"^k must have d = 64 columns, not 63"),
        (_with(k=np.ones((0, 64)), v=np.ones((0, 8))), r"^k must have at least one row"),
        (_with(k=np.ones((65, 64)), v=np.ones((65, 8))), r"^k has 65 rows \(keys\), more than "
                                                         r"n_max = 64$"),
        (_with(v=np.ones((10, 7))), r"^v must have shape \(n, d_v\) = \(10, 8\), not \(10, 7\)$"),
        (_with(v=np.ones((9, 8))), r"^v must have shape \(n, d_v\) = \(10, 8\), not \(9, 8\)$"),
        (_with(q=_set("q", (1, 5), 0)), r"^q must hold only -1 and \+1, found 0 at \[1, 5\]$"),
        (_with(k=_set("k", (9, 63), 2)), r"^k must hold only -1 and \+1, found 2 at \[9, 63\]$"),
        (_with(k=_set("k", (0, 0), 0.5, np.float64)), r"^k must hold only -1 and \+1, found 0\.5"),
        (_with(q=np.ones((3, 64), dtype=bool)), r"^q must hold numbers, not booleans$"),
        (_with(v=_set("v", (2, 3), 300, np.int32)),
         r"^v must hold integers in -128\.\.127 \(int8\), found 300 at \[2, 3\]$"),
        (_with(v=_set("v", (0, 1), -129)), r"^v must hold integers in -128\.\.127 .*-129 at"),
        (_with(v=_set("v", (4, 2), 0.5, np.float64)),
         r"^v must hold integers, found 0\.5 at \[4, 2\]$"),
        (_with(v=_set("v", (4, 2), np.nan, np.float64)), r"^v must hold integers, found nan at"),
        (_with(v=_set("v", (4, 2), 1e30, np.float64)), r"^v must hold integers in -128\.\.127"),
        (_with(v=np.full((10, 8), "a")), r"^v must be an integer or real array, not dtype <U1$"),
        (_with(v=[[1, 2], [3]]), r"^v is not a rectangular array$"),
        (_with(n_valid=np.array([1, 2])), r"^n_valid must have shape \(m,\) = \(3,\), not \(2,\)$"),
        (_with(n_valid=np.array([1, 0, 2])),
         r"^n_valid must hold integers between 1 and n = 10, found 0 at \[1\]$"),
        (_with(n_valid=np.array([1, 11, 2])), r"^n_valid must hold integers between 1 and n = 10, "
                                               r"found 11 at \[1\]$"),
        (_with(n_valid=np.array([1, 2.5, 2])), r"^n_valid must hold integers, found 2\.5 at"),
    ],
)
def test_check_inputs_errors(arrays: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_inputs(DEFAULT, arrays)
    with pytest.raises(InputError, match=message):
        run_vectors(DEFAULT, arrays)
