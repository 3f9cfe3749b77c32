"""The attention family's golden model and configuration, every registered variant.

One copy of each check, parametrized over the variants of the registry (the blocks whose config
class is an :class:`AttentionCoreConfig`), with specific cases where a part (scorer,
exponential, sparsifier) is specific. The expected values come from an independent scalar
model written here from the specification in the module docstring of
``hadware.golden.attention_core`` (dot products, ``sorted()``, exact fractions, the exponential
steps in Python integers), or were worked out by hand; never from the code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from attention_family import configs

from hadware.blocks import BLOCKS
from hadware.config.attention import AttentionConfig
from hadware.config.attention_core import AttentionCoreConfig
from hadware.config.base import ConfigFileError
from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.config.std_attention import StdAttentionConfig
from hadware.golden.attention_core import (
    _mul_round_shift,
    attention_core,
    fixed_exp_weights,
    float_reference,
    hamming_scores,
    int8_scores,
    pack_bits,
    popcount32,
    reciprocal,
    run_vectors,
    scale_output,
    scores,
    select,
    table_weights,
    weights,
)
from hadware.spec.widths import signed_width, unsigned_width

#: The attention variants of the registry, by block name.
VARIANTS = {name: b.config_class() for name, b in BLOCKS.items()
            if issubclass(b.config_class(), AttentionCoreConfig)}


def test_the_registry_holds_the_four_variants() -> None:
    assert {name: cls.parts() for name, cls in VARIANTS.items()} == {
        "attention": {"scorer": "hamming", "exp": "table", "sparsifier": "topk"},
        "binary_dense_attention": {"scorer": "hamming", "exp": "table", "sparsifier": None},
        "int8_topk_attention": {"scorer": "int8", "exp": "fixed", "sparsifier": "topk"},
        "std_attention": {"scorer": "int8", "exp": "fixed", "sparsifier": None},
    }
    for name in VARIANTS:
        golden = BLOCKS[name].golden_module()
        assert golden.run_vectors is run_vectors and golden.float_reference is float_reference


# -- independent scalar model ----------------------------------------------------------------


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def table_spec(cfg: Any, delta: int) -> int:
    """LUT[delta / 2] = floor(2**F * exp(-2 * tau * a) + 0.5), evaluated in float64."""
    return math.floor(2.0**cfg.exp_frac_bits * math.exp(-2.0 * cfg.temperature * (delta // 2))
                      + 0.5)


def fixed_spec(cfg: Any, delta: int) -> int:
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
    return round_half_up(Fraction(y, 2**k))


def exp_spec(cfg: Any, delta: int) -> int:
    return table_spec(cfg, delta) if cfg.exp == "table" else fixed_spec(cfg, delta)


def weighed(cfg: Any) -> int:
    return cfg.top_k if cfg.sparsifier == "topk" else cfg.n_max


def scalar_model(cfg: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One query at a time, Python integers and fractions, straight from the specification."""
    q, k, v = (np.asarray(arrays[x], dtype=np.int64) for x in ("q", "k", "v"))
    m, n = q.shape[0], k.shape[0]
    n_valid = arrays.get("n_valid", np.full(m, n))
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    r = o + f + math.ceil(math.log2(weighed(cfg))) + 10
    topk = cfg.sparsifier == "topk"
    slots = cfg.top_k if topk else n
    out = np.zeros((m, cfg.d_v), dtype=np.int64)
    index = np.full((m, slots), -1, dtype=np.int64)
    score = np.zeros((m, slots), dtype=np.int64)
    for i in range(m):
        s = [int(x) for x in k[: int(n_valid[i])] @ q[i]]  # the dot product (+-1 or int8)
        chosen = sorted(range(len(s)), key=lambda j: (-s[j], j))[: cfg.top_k] if topk \
            else list(range(len(s)))
        index[i, : len(chosen)] = chosen
        score[i, : len(chosen)] = [s[j] for j in chosen]
        top = max(s)
        e = [exp_spec(cfg, top - s[j]) for j in chosen]
        recip = round_half_up(Fraction(2**r, sum(e)))
        for c in range(cfg.d_v):
            num = sum(ej * int(v[j, c]) for ej, j in zip(e, chosen, strict=True))
            out[i, c] = round_half_up(Fraction(num * recip, 2 ** (r - o)))
    if not topk:
        return {"out": out}
    return {"out": out, "topk_index": index, "topk_score": score}


def random_arrays(cfg: Any, m: int, seed: int, *, n: int | None = None,
                  key_pool: int | None = None, n_valid: bool = True) -> dict[str, np.ndarray]:
    """Random vectors for ``cfg``: +-1 or int8 queries and keys as its scorer takes; keys drawn
    from ``key_pool`` distinct rows when given (many equal scores)."""
    rng = np.random.default_rng(seed)
    n = min(cfg.n_max, 512) if n is None else n

    def draw(shape: tuple[int, int]) -> np.ndarray:
        if cfg.scorer == "hamming":
            return rng.choice(np.array([-1, 1], dtype=np.int8), size=shape)
        return rng.integers(-128, 128, size=shape).astype(np.int8)

    k = draw((n, cfg.d)) if key_pool is None else \
        draw((key_pool, cfg.d))[rng.integers(0, key_pool, size=n)]
    arrays = {"q": draw((m, cfg.d)), "k": k,
              "v": rng.integers(-128, 128, size=(n, cfg.d_v)).astype(np.int8)}
    if n_valid:
        arrays["n_valid"] = rng.integers(1, n + 1, size=m).astype(np.int32)
    return arrays


def extreme_arrays(cfg: Any, m: int = 3) -> dict[str, np.ndarray]:
    """Keys alternately giving the highest and the lowest score, so that the largest difference
    occurs (int8: q all -128, keys all -128 and all 127; +-1: q all +1, keys all +1 and all
    -1); values at the extremes; n_valid = n, 1, 2."""
    n = min(cfg.n_max, 512)
    hi, lo, qv = (-128, 127, -128) if cfg.scorer == "int8" else (1, -1, 1)
    k = np.where(np.arange(n)[:, None] % 2 == 0, hi, lo) * np.ones((1, cfg.d), np.int64)
    return {"q": np.full((m, cfg.d), qv, np.int8), "k": k.astype(np.int8),
            "v": np.where(np.arange(n)[:, None] % 3 == 0, 127, -128)
            * np.ones((1, cfg.d_v), np.int64),
            "n_valid": np.array([n, 1, min(2, n)][:m])}


def assert_bit_exact(cfg: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    got = run_vectors(cfg, arrays)
    want = scalar_model(cfg, arrays)
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == np.int32, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    return got


def max_error(cfg: Any, arrays: dict[str, np.ndarray]) -> float:
    out = run_vectors(cfg, arrays)["out"].astype(np.float64)
    return float(np.abs(out - float_reference(cfg, arrays)).max())


def ident(cfg: Any) -> str:
    changed = [f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
               if getattr(cfg, f.name) != f.default]
    return "-".join([cfg.block, *changed])


# -- the configurations under test -----------------------------------------------------------

# HAD. Each one in ONE_ULP has an error bound of at most 1 and must stay within one unit of
# the last place of the exact softmax.
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

# The small geometries shared with the hardware tests, and the defaults.
DENSE = [*configs("binary_dense_attention"), BinaryDenseAttentionConfig()]
DENSE_PAPER = BinaryDenseAttentionConfig(d=64, n_max=512, lanes=8, exp_frac_bits=22)

STD = [*configs("std_attention"), StdAttentionConfig()]
STD_PAPER = StdAttentionConfig(d=64, n_max=512, d_v=8, lanes=8, exp_frac_bits=22)
# A scale large enough that G is set by H + 1 rather than by the 24 significant bits of c.
COARSE_SCALE = StdAttentionConfig(d=2, n_max=4, d_v=1, lanes=2, temperature=0.5,
                                  exp_table_bits=10, exp_interp_bits=16)

INT8_TOPK = [*configs("int8_topk_attention"), Int8TopKAttentionConfig()]
INT8_TOPK_PAPER = Int8TopKAttentionConfig(d=64, n_max=512, top_k=32, d_v=8, lanes=8,
                                          exp_frac_bits=22)

#: One small and one default configuration at least of every variant.
EVERY = [*ONE_ULP, COARSE, *DENSE, *STD, *INT8_TOPK]
PAPER = [WIDE_TOPK, DENSE_PAPER, STD_PAPER, INT8_TOPK_PAPER]
TABLE = [c for c in EVERY if c.exp == "table"]
FIXED = [c for c in EVERY if c.exp == "fixed"]
TOPK = [c for c in EVERY if c.sparsifier == "topk"]


def test_every_variant_is_under_test() -> None:
    assert {c.block for c in EVERY} == set(VARIANTS)


# -- configuration ---------------------------------------------------------------------------

COMMON_FIELDS = [
    "d", "n_max", "d_v", "lanes", "temperature", "exp_frac_bits", "out_frac_bits", "scale_piece",
    "weight_mul"]

# Worked out by hand for the defaults (d = 64, n_max = 64, d_v = 8, F = 19, O = 8; top_k = 8):
# HAD: R = 8 + 19 + 3 + 10 = 40, S = 32, den <= 8 * 2**19 = 2**22 (23 bits), recip in
#   [2**40 / 2**22, 2**40 / 2**19] = [2**18, 2**21] (22 bits); 65 table entries of 20 bits.
# Binary dense: den <= 64 * 2**19 = 2**25 (26 bits); |num| <= 128 * 2**25 = 2**32 (33 bits);
#   R = 8 + 19 + 6 + 10 = 43, S = 35, recip <= 2**24 (25 bits).
# Int8 (tau = 2**-13): scores in [-128 * 127 * 64, 128 * 128 * 64] = [-1040384, 1048576]:
#   22 bits; differences up to 2088960: 21 bits. tau / ln 2 = 1.76e-4 = 0.72 * 2**-12, so
#   G = 24 + 12 = 36 and c = round(2**23 * 1.4427) = 12102203; the table has 2**6 + 1 nodes
#   from 2**19 down to 2**18. Dense: R = 43, den 26 bits, num 33 bits; top-k: R = 40, den 23.
DERIVED: dict[str, dict[str, Any]] = {
    "attention": {
        "field_names": [*COMMON_FIELDS, "top_k", "topk_unit", "runtime_temperature"],
        "top_k": 8,
        "score_width": 8, "index_width": 6, "count_width": 7, "lut_depth": 65,
        "recip_bits": 40, "out_shift": 32, "lut_width": 20, "den_width": 23,
        "recip_max": 2**21, "recip_width": 22, "recip_min": 2**18,
        "out_min": -128 * 256, "out_max": 127 * 256, "out_width": 16,
    },
    "binary_dense_attention": {
        "field_names": [*COMMON_FIELDS, "runtime_temperature"],
        "score_width": 8, "den_width": 26, "num_width": 33, "recip_bits": 43, "out_shift": 35,
        "recip_width": 25, "out_width": 16, "lut_depth": 65,
    },
    "std_attention": {
        "field_names": [*COMMON_FIELDS, "exp_table_bits", "exp_interp_bits",
                        "runtime_temperature"],
        "score_width": 22, "delta_max": 2088960, "delta_width": 21, "exp_scale_shift": 36,
        "exp_scale": 12102203, "recip_bits": 43, "den_width": 26, "num_width": 33,
    },
    "int8_topk_attention": {
        "field_names": [*COMMON_FIELDS, "top_k", "topk_unit", "exp_table_bits",
                        "exp_interp_bits", "runtime_temperature"],
        "top_k": 8, "score_width": 22, "delta_max": 2088960, "exp_scale_shift": 36,
        "exp_scale": 12102203, "recip_bits": 40, "den_width": 23,
    },
}


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_config_fields_and_derived_numbers(block: str) -> None:
    cls = VARIANTS[block]
    cfg = cls()
    assert cls.block == block
    got = {name: cls.field_names() if name == "field_names" else getattr(cfg, name)
           for name in DERIVED[block]}
    assert got == DERIVED[block]
    if cfg.exp == "table":
        assert cfg.lut[0] == 2**19 and len(cfg.lut) == 65
        assert cfg.lut[1] == math.floor(2**19 * math.exp(-0.25) + 0.5)
    else:
        assert cfg.exp_scale == round(2**36 * 2**-13 / math.log(2))
        assert cfg.exp_table[0] == 2**19 and cfg.exp_table[-1] == 2**18
        assert len(cfg.exp_table) == 65
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert cls.from_dict({"block": block, **cfg.to_dict()}) == cfg


def test_derived_numbers_of_specific_configs() -> None:
    assert DEFAULT.error_bound_ulp <= 1
    assert COARSE_SCALE.exp_scale_shift == 27  # H + 1 = 10 + 16 + 1
    # The int8 exponential is the same unit with or without the sparsifier.
    std, topk = StdAttentionConfig(), Int8TopKAttentionConfig()
    assert (topk.exp_scale, topk.exp_scale_shift, topk.exp_table) == \
        (std.exp_scale, std.exp_scale_shift, std.exp_table)


def _applies(part: str, cls: type) -> bool:
    return part in ("*", cls.scorer, cls.exp, cls.sparsifier or "dense")


# (part, kwargs, error, message): the part a case applies to ("*": every variant; a scorer,
# an exponential, "topk" or "dense"). Messages are pinned whole.
CONFIG_ERRORS = [
    ("*", {"d": "64"}, TypeError, r"^d must be an integer, not '64' \(str\)$"),
    ("*", {"d": 8.0}, TypeError, r"^d must be an integer, not 8\.0 \(float\)$"),
    ("*", {"lanes": True}, TypeError, r"^lanes must be an integer, not True \(bool\)$"),
    ("*", {"temperature": "hot"}, TypeError, r"^temperature must be a number, not 'hot' \(str\)$"),
    ("*", {"temperature": None}, TypeError, r"^temperature must be a number"),
    ("*", {"exp_frac_bits": 12.5}, TypeError, r"^exp_frac_bits must be an integer"),
    ("*", {"n_max": 0}, ValueError, r"^n_max must be an integer between 1 and 65536, not 0$"),
    ("*", {"n_max": 65537}, ValueError,
     r"^n_max must be an integer between 1 and 65536, not 65537$"),
    ("*", {"d_v": 0}, ValueError, r"^d_v must be an integer between 1 and 256, not 0$"),
    ("*", {"d_v": 257}, ValueError, r"^d_v must be an integer between 1 and 256, not 257$"),
    ("*", {"lanes": 0}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(64\), not 0$"),
    ("*", {"n_max": 256, "lanes": 65}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(64\), not 65$"),
    ("*", {"lanes": 65, "n_max": 100}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(64\), not 65$"),
    ("*", {"temperature": math.inf}, ValueError, r"^temperature must be a finite number, not inf$"),
    ("*", {"temperature": math.nan}, ValueError, r"^temperature must be a finite number, not nan$"),
    ("*", {"exp_frac_bits": 0}, ValueError,
     r"^exp_frac_bits must be an integer between 1 and 24, not 0$"),
    ("*", {"exp_frac_bits": 25}, ValueError,
     r"^exp_frac_bits must be an integer between 1 and 24, not 25$"),
    ("*", {"out_frac_bits": -1}, ValueError,
     r"^out_frac_bits must be an integer between 0 and 16, not -1$"),
    ("*", {"out_frac_bits": 17}, ValueError,
     r"^out_frac_bits must be an integer between 0 and 16, not 17$"),
    ("*", {"scale_piece": 1}, ValueError,
     r"^scale_piece must be an integer between 2 and 17, not 1$"),
    ("*", {"scale_piece": 18}, ValueError,
     r"^scale_piece must be an integer between 2 and 17, not 18$"),
    ("*", {"weight_mul": "lut"}, ValueError, r"^weight_mul must be one of dsp, adders, not 'lut'$"),
    ("*", {"weight_mul": 1}, TypeError, r"^weight_mul must be a string, not 1 \(int\)$"),
    ("hamming", {"d": 12}, ValueError,
     r"^d must be a positive multiple of 8, at most 1024, not 12$"),
    ("hamming", {"d": 0}, ValueError, r"^d must be a positive multiple of 8, at most 1024, not 0$"),
    ("hamming", {"d": 1032}, ValueError,
     r"^d must be a positive multiple of 8, at most 1024, not 1032$"),
    ("int8", {"d": 0}, ValueError, r"^d must be an integer between 1 and 1024, not 0$"),
    ("int8", {"d": 1025}, ValueError, r"^d must be an integer between 1 and 1024, not 1025$"),
    ("table", {"temperature": 0}, ValueError, r"^temperature must be greater than 0\.0, not 0$"),
    ("table", {"temperature": -0.5}, ValueError,
     r"^temperature must be greater than 0\.0, not -0\.5$"),
    ("fixed", {"temperature": 2.0}, ValueError, r"^temperature must be at most 1\.0, not 2\.0$"),
    ("fixed", {"temperature": 1e-10}, ValueError,
     r"^temperature must be at least 1e-09, not 1e-10$"),
    ("fixed", {"temperature": -1}, ValueError, r"^temperature must be at least 1e-09, not -1$"),
    ("fixed", {"exp_table_bits": 0}, ValueError,
     r"^exp_table_bits must be an integer between 1 and 10, not 0$"),
    ("fixed", {"exp_interp_bits": 17}, ValueError,
     r"^exp_interp_bits must be an integer between 0 and 16, not 17$"),
    ("fixed", {"exp_interp_bits": True}, TypeError,
     r"^exp_interp_bits must be an integer, not True"),
    ("topk", {"top_k": 8.0}, TypeError, r"^top_k must be an integer, not 8\.0 \(float\)$"),
    ("topk", {"top_k": 0}, ValueError,
     r"^top_k must be an integer between 1 and n_max \(64\), not 0$"),
    ("topk", {"top_k": 65}, ValueError,
     r"^top_k must be an integer between 1 and n_max \(64\), not 65$"),
    ("topk", {"n_max": 4, "top_k": 2, "lanes": 5}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(4\), not 5$"),
    ("dense", {"n_max": 4, "lanes": 5}, ValueError,
     r"^lanes must be an integer between 1 and min\(n_max, 64\) \(4\), not 5$"),
]


@pytest.mark.parametrize(("block", "kwargs", "error", "message"), [
    pytest.param(block, kwargs, error, message, id=f"{block}-{kwargs}")
    for part, kwargs, error, message in CONFIG_ERRORS
    for block, cls in sorted(VARIANTS.items()) if _applies(part, cls)
])
def test_config_errors_name_the_parameter(block: str, kwargs: dict, error: type,
                                          message: str) -> None:
    with pytest.raises(error, match=message):
        VARIANTS[block](**kwargs)


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_config_file_errors(block: str) -> None:
    cls = VARIANTS[block]
    with pytest.raises(ConfigFileError, match=rf"unknown key\(s\) 'tau'; {block} accepts d, "):
        cls.from_dict({"d": 64, "tau": 0.1})
    if cls.sparsifier is None:
        with pytest.raises(ConfigFileError, match=rf"unknown key\(s\) 'top_k'; {block}"):
            cls.from_dict({"top_k": 8})
    else:
        with pytest.raises(ValueError, match=r"^cfg\.json: top_k must be an integer between 1 "
                                             r"and n_max \(16\), not 17$"):
            cls.from_dict({"n_max": 16, "top_k": 17}, source="cfg.json")
    other = next(name for name in sorted(VARIANTS) if name != block)
    with pytest.raises(ConfigFileError, match=rf"configuration of block '{other}'"):
        cls.from_dict({"block": other})
    with pytest.raises(TypeError, match=r"^cfg\.json: d must be an integer"):
        cls.from_dict({"d": 6.4}, source="cfg.json")
    cfg = cls(temperature=1)
    assert cfg.temperature == 1.0 and isinstance(cfg.temperature, float)
    assert cfg.stable_hash() == cls(temperature=1.0).stable_hash()


def test_width_helpers() -> None:
    for lo in range(-40, 41):
        for hi in range(lo, 41):
            w = signed_width(lo, hi)
            assert -(2 ** (w - 1)) <= lo and hi < 2 ** (w - 1)
            assert w == 1 or not (-(2 ** (w - 2)) <= lo and hi < 2 ** (w - 2))
    for hi in range(0, 70):
        w = unsigned_width(hi)
        assert hi < 2**w and (w == 1 or hi >= 2 ** (w - 1))


TINY = AttentionConfig(d=8, n_max=1, top_k=1, lanes=1, exp_frac_bits=1, out_frac_bits=0)


@pytest.mark.parametrize("cfg", [*EVERY, HUGE, TINY, *PAPER, COARSE_SCALE], ids=ident)
def test_widths_hold_their_extremes(cfg: Any) -> None:
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    assert (cfg.out_min, cfg.out_max) == (-128 * 2**o, 127 * 2**o)
    assert cfg.out_width == 8 + o
    assert cfg.recip_width == cfg.recip_bits - f + 1
    assert cfg.recip_bits == o + f + math.ceil(math.log2(weighed(cfg))) + 10
    assert cfg.den_max == weighed(cfg) * 2**f < 2**cfg.den_width
    assert -(2 ** (cfg.num_width - 1)) <= -128 * cfg.den_max
    assert 127 * cfg.den_max < 2 ** (cfg.num_width - 1)
    table = cfg.lut if cfg.exp == "table" else cfg.exp_table
    assert len(table) == (cfg.d + 1 if cfg.exp == "table" else 2**cfg.exp_table_bits + 1)
    assert table[0] == 2**f
    assert all(a >= b >= 0 for a, b in itertools.pairwise(table))
    assert max(table) < 2 ** (cfg.lut_width if cfg.exp == "table" else cfg.exp_table_width)
    # Sweep denominators across the whole range (every one for small ranges).
    lo, hi = cfg.den_min, cfg.den_max
    dens = range(lo, hi + 1) if hi - lo < 5000 else np.linspace(lo, hi, 5000).astype(np.int64)
    half = 2 ** (cfg.out_shift - 1)
    limit = 2 ** (cfg.product_width - 1)
    for den in map(int, dens):
        recip = round_half_up(Fraction(2**cfg.recip_bits, den))
        assert cfg.recip_min <= recip <= cfg.recip_max < 2**cfg.recip_width
        assert -limit <= -128 * den * recip and 127 * den * recip + half < limit


# -- 1. scorers ------------------------------------------------------------------------------


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
def test_hamming_scores_are_the_dot_product(d: int) -> None:
    rng = np.random.default_rng(d)
    q = rng.choice([-1, 1], size=(37, d))
    k = rng.choice([-1, 1], size=(53, d))
    k[0] = q[0]
    k[1] = -q[0]
    got = hamming_scores(torch.from_numpy(q), torch.from_numpy(k))
    np.testing.assert_array_equal(got.numpy(), q @ k.T)
    assert int(got[0, 0]) == d and int(got[0, 1]) == -d
    # XNOR-popcount spelled out on Python integers, bit c = element c.
    q_bits = [sum(1 << c for c in range(d) if row[c] == 1) for row in q[:3]]
    k_bits = [sum(1 << c for c in range(d) if row[c] == 1) for row in k[:3]]
    xnor = [[2 * bin(~(a ^ b) & ((1 << d) - 1)).count("1") - d for b in k_bits] for a in q_bits]
    assert got[:3, :3].tolist() == xnor


def test_int8_scores_are_exact_dot_products() -> None:
    rng = np.random.default_rng(6)
    q = rng.integers(-128, 128, size=(9, 1024))
    k = rng.integers(-128, 128, size=(11, 1024))
    q[0], k[0], k[1] = -128, -128, 127  # 16384 d and -16256 d
    got = int8_scores(torch.from_numpy(q).to(torch.int8), torch.from_numpy(k).to(torch.int8))
    want = [[sum(int(a) * int(b) for a, b in zip(qi, kj, strict=True)) for kj in k] for qi in q]
    assert got.dtype == torch.int64 and got.tolist() == want
    assert want[0][:2] == [16384 * 1024, -16256 * 1024]


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_scores_dispatch_on_the_scorer(block: str) -> None:
    cfg = VARIANTS[block]()
    a = random_arrays(cfg, 4, seed=7, n=9)
    q, k = torch.from_numpy(a["q"]), torch.from_numpy(a["k"])
    np.testing.assert_array_equal(scores(cfg, q, k).numpy(),
                                  a["q"].astype(np.int64) @ a["k"].astype(np.int64).T)


# -- 2. sparsifiers --------------------------------------------------------------------------


@pytest.mark.parametrize("block", sorted(VARIANTS))
def test_select_keeps_the_best_or_every_valid_key(block: str) -> None:
    cfg = VARIANTS[block](n_max=16, lanes=1, **({"top_k": 3} if "top_k" in
                                                 VARIANTS[block].field_names() else {}))
    s = torch.tensor([[5, 9, 9, 1, 7], [2, 2, 2, 2, 2], [4, -3, 8, 8, 0]])
    index, score = select(cfg, s, torch.tensor([5, 2, 1]))
    if cfg.sparsifier == "topk":
        # Highest first, ties to the lower index, padding (-1, 0) past n_valid.
        assert index.tolist() == [[1, 2, 4], [0, 1, -1], [0, -1, -1]]
        assert score.tolist() == [[9, 9, 7], [2, 2, 0], [4, 0, 0]]
    else:
        # Slot j is key j up to n_valid, padding beyond.
        assert index.tolist() == [[0, 1, 2, 3, 4], [0, 1, -1, -1, -1], [0, -1, -1, -1, -1]]
        assert score.tolist() == [[5, 9, 9, 1, 7], [2, 2, 0, 0, 0], [4, 0, 0, 0, 0]]
    all_index, _ = select(cfg, s, None)
    assert (all_index != -1).sum(1).tolist() == [min(5, weighed(cfg))] * 3


# -- 3. exponentials -------------------------------------------------------------------------


def test_lut_is_the_rounded_exponential() -> None:
    for cfg in (DEFAULT, SMALL_D, COARSE, DENSE[0], AttentionConfig(d=16, temperature=3.0,
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


@pytest.mark.parametrize("cls", [AttentionConfig, BinaryDenseAttentionConfig])
def test_lut_small_case_by_hand(cls: type) -> None:
    # F = 4, tau = ln(2)/4: LUT[a] = 16 * 2**(-a/2) = 16, 11.31, 8, 5.66, 4, 2.83, 2, 1.41, 1.
    cfg = cls(d=8, temperature=math.log(2) / 4, exp_frac_bits=4)
    assert cfg.lut == (16, 11, 8, 6, 4, 3, 2, 1, 1)
    delta = torch.arange(0, 17, 2)
    assert table_weights(cfg, delta).tolist() == weights(cfg, delta).tolist() == list(cfg.lut)


def test_lut_rounds_halves_up() -> None:
    # tau = ln(2)/2, F = 3: in float64, 8 * exp(-2 * tau * 4) is exactly 0.5, which rounds up
    # to 1 (round half to even would give 0); 8 * exp(-2 * tau * 5) = 0.25 rounds down.
    cfg = AttentionConfig(d=8, temperature=math.log(2) / 2, exp_frac_bits=3)
    assert 8 * math.exp(-2.0 * cfg.temperature * 4) == 0.5
    assert cfg.lut == (8, 4, 2, 1, 1, 0, 0, 0, 0)
    # Just above a half: 2**22 * exp(-2 * 0.296875 * 25) = 1.50003... -> 2.
    cfg = AttentionConfig(d=32, temperature=0.296875, exp_frac_bits=22)
    assert cfg.lut[25] == 2


@pytest.mark.parametrize("cfg", TABLE[:2], ids=ident)
def test_table_rejects_impossible_differences(cfg: Any) -> None:
    for bad in ([1], [-2], [2 * cfg.d + 2]):
        with pytest.raises(ValueError, match=r"^score differences must be even and lie in "
                                             r"\[0, 2\*d\]$"):
            weights(cfg, torch.tensor(bad))


EXP_CONFIGS = [*FIXED, STD_PAPER, INT8_TOPK_PAPER, COARSE_SCALE]


@pytest.mark.parametrize("cfg", EXP_CONFIGS, ids=ident)
def test_exp_matches_the_specification_and_its_accuracy(cfg: Any) -> None:
    rng = np.random.default_rng(cfg.d)
    # Differences where the weight is not negligible, then the whole range.
    reach = int((cfg.exp_frac_bits + 3) * math.log(2) / cfg.temperature)
    deltas = np.unique(np.concatenate([
        np.arange(0, 64), rng.integers(0, min(reach, cfg.delta_max) + 1, 3000),
        rng.integers(0, cfg.delta_max + 1, 300), [cfg.delta_max]]))
    e = weights(cfg, torch.from_numpy(deltas)).numpy()
    assert e.tolist() == [fixed_spec(cfg, int(x)) for x in deltas]
    assert e[0] == 2**cfg.exp_frac_bits and np.all(np.diff(e) <= 0)
    w = 2.0**cfg.exp_frac_bits * np.exp(-cfg.temperature * deltas.astype(np.float64))
    assert np.all(np.abs(e - w) <= cfg.exp_relative_error * w + 1.0)


def test_exp_relative_error_of_the_defaults() -> None:
    # (ln 2)**2 / 8 * 2**-12 * 2**(1/64) = 1.48e-5 (interpolation), 2**(2**-17) - 1 = 5.3e-6
    # (rounding of t), 2**(22 * 1.3e-8) - 1 = 2e-7 (the scale constant, at u < F + 3 = 22).
    for cls in (StdAttentionConfig, Int8TopKAttentionConfig):
        eps = cls().exp_relative_error
        assert 2.0e-5 < eps < 2.05e-5


def test_exp_rejects_out_of_range_differences() -> None:
    cfg = StdAttentionConfig(d=5)  # delta_max = 32640 * 5
    for bad in ([-1], [163201]):
        with pytest.raises(ValueError, match=r"score differences must lie in \[0, 163200\]"):
            fixed_exp_weights(cfg, torch.tensor(bad))


# -- 5. reciprocal and 6. output -------------------------------------------------------------


@pytest.mark.parametrize("cfg", [DEFAULT, WIDE_TOPK, HUGE, TINY, DENSE[0], STD_PAPER,
                                 AttentionConfig(d=8, n_max=3, top_k=3, lanes=1,
                                                 exp_frac_bits=2, out_frac_bits=0)], ids=ident)
def test_reciprocal_is_rounded_half_up(cfg: Any) -> None:
    rng = np.random.default_rng(weighed(cfg))
    lo, hi = cfg.den_min, cfg.den_max
    dens = [lo, lo + 1, 2 * lo - 1, 2 * lo, 3 * lo + 1, hi - 1, hi]
    dens += [int(x) for x in rng.integers(lo, hi + 1, size=300)]
    dens = [x for x in dens if lo <= x <= hi]
    got = reciprocal(cfg, torch.tensor(dens, dtype=torch.int64)).tolist()
    assert got == [round_half_up(Fraction(2**cfg.recip_bits, x)) for x in dens]


def test_reciprocal_tiny_case_by_hand() -> None:
    # top_k = 3, F = 2, O = 0: R = 0 + 2 + 2 + 10 = 14; 2**14 / 5 = 3276.8 -> 3277,
    # 2**14 / 6 = 2730.67 -> 2731, 2**14 / 7 = 2340.57 -> 2341, 2**14 / 9 = 1820.44 -> 1820.
    # The dense rule with n_max = 3 in place of top_k gives the same R.
    for cfg in (AttentionConfig(d=8, n_max=3, top_k=3, lanes=1, exp_frac_bits=2,
                                out_frac_bits=0),
                BinaryDenseAttentionConfig(d=8, n_max=3, lanes=1, exp_frac_bits=2,
                                           out_frac_bits=0)):
        assert cfg.recip_bits == 14
        got = reciprocal(cfg, torch.tensor([4, 5, 6, 7, 9, 12])).tolist()
        assert got == [4096, 3277, 2731, 2341, 1820, 1365]
    with pytest.raises(ValueError, match="den must be positive"):
        reciprocal(cfg, torch.tensor([0]))


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


@pytest.mark.parametrize("cfg", [DEFAULT, WIDE_TOPK, HUGE, COARSE, DENSE_PAPER, STD_PAPER],
                         ids=ident)
def test_output_step_against_fractions(cfg: Any) -> None:
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


# -- the whole core --------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [*EVERY, HUGE], ids=ident)
def test_golden_matches_the_scalar_model(cfg: Any) -> None:
    m = 3 if cfg is HUGE else 6
    for a in (random_arrays(cfg, m, seed=cfg.d), random_arrays(cfg, m, seed=1, key_pool=2),
              random_arrays(cfg, m, seed=2, n_valid=False), extreme_arrays(cfg)):
        assert_bit_exact(cfg, a)


@pytest.mark.parametrize(
    ("cfg", "m", "n", "pool"),
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
        (DENSE_PAPER, 6, 512, 3),
        (STD_PAPER, 6, 512, None),
        (INT8_TOPK_PAPER, 6, 512, 4),
    ],
    ids=lambda x: ident(x) if isinstance(x, AttentionCoreConfig) else str(x),
)
def test_golden_matches_the_scalar_model_at_scale(cfg: Any, m: int, n: int,
                                                  pool: int | None) -> None:
    assert_bit_exact(cfg, random_arrays(cfg, m, seed=m * n + weighed(cfg), n=n, key_pool=pool))


WORKED = dict(d=8, n_max=3, d_v=1, lanes=1, temperature=math.log(2) / 4, exp_frac_bits=4,
              out_frac_bits=0)


@pytest.mark.parametrize(("cfg", "v", "out", "exact"), [
    # HAD, top_k = 2 (table above). Scores 8, 6, 4: keys 0 and 1 are kept, e = (16, 11),
    # den = 27. R = 0 + 4 + 1 + 10 = 15, recip = round(32768 / 27 = 1213.63) = 1214.
    # v = (10, -20, 127): num = 160 - 220 = -60, out = round(-60 * 1214 / 2**15 = -2.223) = -2.
    # The exact softmax gives 10 * (2 - sqrt 2) - 20 * (sqrt 2 - 1) = -2.43.
    (AttentionConfig(top_k=2, **WORKED), (10, -20, 127), -2,
     10 * (2 - 2**0.5) - 20 * (2**0.5 - 1)),
    # Binary dense: every key weighed, e = (16, 11, 8), den = 35; R = 0 + 4 + 2 + 10 = 16,
    # recip = round(65536 / 35 = 1872.46) = 1872; v = (10, -20, -5): num = 160 - 220 - 40 =
    # -100, out = round(-100 * 1872 / 2**16 = -2.86) = -3. Exact: weights 1, 2**-0.5, 1/2.
    (BinaryDenseAttentionConfig(**WORKED), (10, -20, -5), -3,
     (10 - 20 * 2**-0.5 - 5 / 2) / (1 + 2**-0.5 + 1 / 2)),
], ids=["attention", "binary_dense_attention"])
def test_golden_worked_example(cfg: Any, v: tuple[int, ...], out: int, exact: float) -> None:
    assert cfg.lut == (16, 11, 8, 6, 4, 3, 2, 1, 1)
    q = np.ones((1, 8), np.int8)
    k = np.ones((3, 8), np.int8)
    k[1, :1] = -1
    k[2, :2] = -1
    arrays = {"q": q, "k": k, "v": np.array(v)[:, None]}
    got = run_vectors(cfg, arrays)
    if cfg.sparsifier == "topk":
        assert got["topk_index"].tolist() == [[0, 1]] and got["topk_score"].tolist() == [[8, 6]]
    assert got["out"].tolist() == [[out]]
    assert float_reference(cfg, arrays)[0, 0] == pytest.approx(exact)
    res = attention_core(cfg, *(torch.from_numpy(arrays[x]).to(torch.int64)
                                for x in ("q", "k", "v")))
    assert int(res.den[0]) == (27 if cfg.sparsifier else 35)
    assert int(res.recip[0]) == (1214 if cfg.sparsifier else 1872)


@pytest.mark.parametrize("cfg", [*EVERY[:4], DENSE[0], STD[1], INT8_TOPK[2]], ids=ident)
def test_float_reference_against_numpy(cfg: Any) -> None:
    arrays = random_arrays(cfg, 20, seed=11)
    ref = float_reference(cfg, arrays)
    q, k, v = (arrays[x].astype(np.int64) for x in ("q", "k", "v"))
    for i in range(q.shape[0]):
        s = k[: arrays["n_valid"][i]] @ q[i]
        chosen = sorted(range(len(s)), key=lambda j: (-s[j], j))[: weighed(cfg)]
        logits = cfg.temperature * s[chosen].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        np.testing.assert_allclose(ref[i], 2**cfg.out_frac_bits * (p @ v[chosen]),
                                   rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("cfg", [*DENSE, *STD, *INT8_TOPK, *PAPER], ids=ident)
def test_float_error_within_the_proven_bound(cfg: Any) -> None:
    rng = np.random.default_rng(3)
    worst = 0.0
    for seed in range(3):
        a = random_arrays(cfg, 8, seed=seed)
        # Adversarial values: extremes in a random sign pattern.
        b = dict(a, v=np.where(rng.random(a["v"].shape) < 0.5, -128, 127).astype(np.int8))
        worst = max(worst, max_error(cfg, a), max_error(cfg, b))
    assert worst <= cfg.error_bound_ulp


@pytest.mark.parametrize("cfg", ONE_ULP, ids=ident)
def test_within_one_ulp_of_the_exact_softmax(cfg: AttentionConfig) -> None:
    assert cfg.error_bound_ulp <= 1
    for seed, pool in ((1, None), (2, 3), (3, 1)):
        arrays = random_arrays(cfg, 300, seed=seed, key_pool=pool)
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
    arrays = random_arrays(COARSE, 300, seed=4)
    assert max_error(COARSE, arrays) <= COARSE.error_bound_ulp


def test_huge_config_keeps_its_bound() -> None:
    arrays = random_arrays(HUGE, 4, seed=9, n=4096)
    assert max_error(HUGE, arrays) <= HUGE.error_bound_ulp


# -- corners ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [c for c in EVERY if c.n_max >= 10], ids=ident)
def test_all_keys_equal_is_the_plain_mean(cfg: Any) -> None:
    arrays = random_arrays(cfg, 5, seed=12)
    arrays["k"][:] = arrays["k"][0]
    got = assert_bit_exact(cfg, arrays)
    for i in range(5):
        kept = list(range(min(weighed(cfg), int(arrays["n_valid"][i]))))
        if cfg.sparsifier == "topk":
            assert got["topk_index"][i, : len(kept)].tolist() == kept
        mean = [Fraction(int(arrays["v"][kept, c].astype(np.int64).sum())
                         * 2**cfg.out_frac_bits, len(kept)) for c in range(cfg.d_v)]
        # Equal weights: no exponential error, only the reciprocal and the final rounding.
        assert all(abs(got["out"][i, c] - mean[c]) <= Fraction(9, 16) for c in range(cfg.d_v))


@pytest.mark.parametrize("cfg", [WIDE_TOPK, INT8_TOPK_PAPER], ids=ident)
def test_fewer_keys_than_top_k_pads(cfg: Any) -> None:
    arrays = random_arrays(cfg, 6, seed=13, n=5, n_valid=False)
    got = assert_bit_exact(cfg, arrays)
    assert (got["topk_index"][:, 5:] == -1).all() and (got["topk_score"][:, 5:] == 0).all()
    assert (np.sort(got["topk_index"][:, :5], axis=1) == np.arange(5)).all()
    assert max_error(cfg, arrays) <= cfg.error_bound_ulp


@pytest.mark.parametrize("cfg", PAPER, ids=ident)
def test_n_equals_n_max(cfg: Any) -> None:
    arrays = random_arrays(cfg, 10, seed=14, n=cfg.n_max)
    arrays["n_valid"][0] = cfg.n_max
    assert_bit_exact(cfg, arrays)


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL_D, HUGE, AttentionConfig(top_k=1), DENSE[1],
                                 STD[0], INT8_TOPK[1]], ids=ident)
def test_single_key_returns_its_value_exactly(cfg: Any) -> None:
    arrays = random_arrays(cfg, 7, seed=15, n=1)
    arrays["v"] = np.resize(np.array([-128, 127, 0, -1, 1, 5, -77, 100]), (1, cfg.d_v))
    got = assert_bit_exact(cfg, arrays)
    assert (got["out"] == arrays["v"][0] * 2**cfg.out_frac_bits).all()
    if cfg.sparsifier == "topk":
        assert (got["topk_index"][:, 0] == 0).all() and (got["topk_index"][:, 1:] == -1).all()


@pytest.mark.parametrize("cfg", [AttentionConfig(d=32, n_max=64, top_k=1),
                                 Int8TopKAttentionConfig(d=4, n_max=64, top_k=1)], ids=ident)
def test_top_k_one_returns_the_best_value_exactly(cfg: Any) -> None:
    arrays = random_arrays(cfg, 50, seed=16, n=64, key_pool=6)
    got = assert_bit_exact(cfg, arrays)
    best = arrays["v"].astype(np.int64)[got["topk_index"][:, 0]]
    np.testing.assert_array_equal(got["out"], best * 256)


@pytest.mark.parametrize("cfg", [*EVERY, HUGE, *PAPER], ids=ident)
@pytest.mark.parametrize("value", [-128, 127])
def test_constant_extreme_values_come_out_exactly(cfg: Any, value: int) -> None:
    arrays = random_arrays(cfg, 8, seed=17, n=min(cfg.n_max, 300))
    arrays["v"][:] = value
    got = run_vectors(cfg, arrays)["out"]
    assert (got == value * 2**cfg.out_frac_bits).all()


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL_D, LARGE_D, DENSE[3], STD[2], INT8_TOPK[3]],
                         ids=ident)
def test_alternating_extreme_values(cfg: Any) -> None:
    n = min(cfg.n_max, 128)
    arrays = random_arrays(cfg, 30, seed=18, n=n)
    arrays["v"] = np.where(np.arange(n)[:, None] % 2 == 0, 127, -128) * np.ones((1, cfg.d_v))
    assert_bit_exact(cfg, arrays)
    assert max_error(cfg, arrays) <= (1.0 if cfg in ONE_ULP else cfg.error_bound_ulp)


@pytest.mark.parametrize("cfg", PAPER, ids=ident)
def test_large_batch_shapes(cfg: Any) -> None:
    # 1000 queries against 512 keys in one vectorized call (speed is a benchmark, not a test).
    got = run_vectors(cfg, random_arrays(cfg, 1000, seed=19, n=512))
    assert got["out"].shape == (1000, 8)
    if cfg.sparsifier == "topk":
        assert got["topk_index"].shape == got["topk_score"].shape == (1000, cfg.top_k)


@pytest.mark.parametrize("cfg", [DEFAULT, DENSE[2], STD[3], INT8_TOPK[0]], ids=ident)
def test_result_holds_every_intermediate(cfg: Any) -> None:
    a = random_arrays(cfg, 6, seed=21)
    q, k, v, n_valid = (torch.from_numpy(np.asarray(a[x])).to(torch.int64)
                        for x in ("q", "k", "v", "n_valid"))
    res = attention_core(cfg, q, k, v, n_valid)
    slots = cfg.top_k if cfg.sparsifier == "topk" else k.shape[0]
    assert res.index.shape == res.score.shape == res.weights.shape == (6, slots)
    padding = res.index == -1
    assert (res.weights[padding] == 0).all() and (res.score[padding] == 0).all()
    assert (res.weights.max(1).values == 2**cfg.exp_frac_bits).all()
    assert res.den.tolist() == res.weights.sum(1).tolist()
    for i in range(6):
        rows = [int(j) for j in res.index[i] if j >= 0]
        want = [sum(int(e) * int(v[j, c]) for e, j in zip(res.weights[i], rows, strict=False))
                for c in range(cfg.d_v)]
        assert res.num[i].tolist() == want
        assert int(res.recip[i]) == round_half_up(Fraction(2**cfg.recip_bits, int(res.den[i])))
    np.testing.assert_array_equal(res.out.numpy(), scalar_model(cfg, a)["out"])


def test_topk_unit_is_checked() -> None:
    """``topk_unit``: one of the four units; the counting ones need binarized scores."""
    assert AttentionConfig(topk_unit="counting").topk_unit == "counting"
    assert AttentionConfig(topk_unit="counting_overlapped").counting_topk
    assert not AttentionConfig(topk_unit="merge").counting_topk
    with pytest.raises(ValueError, match=r"^topk_unit must be one of merge, counting, "
                                         r"counting_overlapped, systolic, not 'sorting'$"):
        AttentionConfig(topk_unit="sorting")
    with pytest.raises(TypeError, match=r"^topk_unit must be a string, not 1 \(int\)$"):
        AttentionConfig(topk_unit=1)
    with pytest.raises(ValueError, match=r"^topk_unit 'counting' needs binarized scores"):
        Int8TopKAttentionConfig(topk_unit="counting")
    with pytest.raises(ValueError, match=r"^topk_unit 'counting_overlapped' needs binarized "
                                         r"scores .*: use 'merge' or 'systolic'$"):
        Int8TopKAttentionConfig(topk_unit="counting_overlapped")
    assert Int8TopKAttentionConfig(topk_unit="systolic").topk_unit == "systolic"
    assert not AttentionConfig(topk_unit="systolic").counting_topk
