"""Run-time parameters of the attention vector files, in the contract and the golden model: a
softmax ``temperature`` per batch entry (configs with ``runtime_temperature``: the table
exponential's table, the fixed exponential's scale constant and shift ``(c, G)``) and a
``top_k`` per query (top-k configs).

The expected values come from the build-time path (the golden model of a config built with
that ``temperature``, or with that ``top_k`` where the reciprocal has the same number of bits)
and from an independent scalar model written here from the specification (dot products,
``sorted()``, the table and scale formulas in float64, Python integers, exact fractions);
error messages are pinned whole.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from hadware.config.attention import AttentionConfig
from hadware.config.binary_dense_attention import BinaryDenseAttentionConfig
from hadware.config.int8_topk_attention import Int8TopKAttentionConfig
from hadware.config.std_attention import StdAttentionConfig
from hadware.errors import InputError
from hadware.golden.attention_core import (
    attention_core,
    fixed_exp_weights,
    float_reference,
    run_tables,
    run_vectors,
    table_weights,
    weights,
)
from hadware.spec.attention_vectors import OPTIONAL_NAMES, as_batched, check_inputs

# -- configurations --------------------------------------------------------------------------

_SMALL = dict(d=16, n_max=12, d_v=3, lanes=3, temperature=0.2, exp_frac_bits=14,
              out_frac_bits=4)
#: A small HAD core with its table in RAM, and the same with its table in ROM.
TOPK_RT = AttentionConfig(**_SMALL, top_k=4, runtime_temperature=True)
TOPK_ROM = dataclasses.replace(TOPK_RT, runtime_temperature=False)
#: The binarized dense core with its table in RAM.
DENSE_RT = BinaryDenseAttentionConfig(**_SMALL, runtime_temperature=True)
#: The default HAD core (error bound at most 1) with its table in RAM.
DEFAULT_RT = AttentionConfig(runtime_temperature=True)
DENSE_WIDE_RT = BinaryDenseAttentionConfig(n_max=64, exp_frac_bits=22, runtime_temperature=True)
#: top_k = 8: every k in 5..8 gives the reciprocal the same R as the config (ceil(log2 k) = 3).
INT8_TOPK = Int8TopKAttentionConfig(d=5, n_max=12, top_k=8, d_v=2, lanes=3,
                                    temperature=2**-13, exp_frac_bits=14, out_frac_bits=4)
HAD_TOPK8 = AttentionConfig(**_SMALL, top_k=8)
STD = StdAttentionConfig(d=5, n_max=12, d_v=2, lanes=3, temperature=2**-13)

#: Temperatures mixed in one file: the config's own, small, large (a table 2**F, 0, 0, ...),
#: tiny (every entry 2**F: the plain mean) and an exact integer.
TEMPERATURES = [0.2, 0.01, 0.45, 3.0, 1e-300, 1.0]

#: Fixed-exponential cores with a run-time (c, G). With P + Q = H = 24, every temperature from
#: 0.1733 (``temperature / ln 2 >= 1/4``) up has ``G = H + 1`` (c above 2**24); tiny ones have
#: G up to 53 (1e-9).
_INT8 = dict(d=5, n_max=12, d_v=2, lanes=3, temperature=2**-13, exp_table_bits=8,
             exp_interp_bits=16, runtime_temperature=True)
STD_RT = StdAttentionConfig(**_INT8)
INT8_TOPK_RT = Int8TopKAttentionConfig(**_INT8, top_k=8, exp_frac_bits=14, out_frac_bits=4)
#: The default int8 core (H = 16: G > H + 1 for every temperature up to 1) with a run-time (c, G).
STD_DEFAULT_RT = StdAttentionConfig(runtime_temperature=True)
#: (temperature, largest |q|, |k| element) of each entry of a fixed-exponential file: the
#: config's own; the range ends 1e-9 (G = 53: equal weights) and 1.0 (G = H + 1 at H = 24), the
#: latter with small elements (weights of differences 1, 2, ...) and with full int8 ones (only
#: the ties weigh); G = H + 1 also at 0.5 and 0.2; G = H + 2 at 0.1; 1e-6, 1e-3 and 0.01 between.
FIXED_ENTRIES = [(2**-13, 128), (1e-9, 128), (1.0, 2), (0.5, 3), (0.2, 4), (0.1, 6), (0.01, 20),
                 (1e-3, 60), (1e-6, 128), (1.0, 128)]


def ident(cfg: Any) -> str:
    k = f"k{cfg.top_k}" if cfg.sparsifier == "topk" else "dense"
    return f"{cfg.block}-d{cfg.d}n{cfg.n_max}{k}"


# -- vector sets -----------------------------------------------------------------------------


def _qk(cfg: Any, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    if cfg.scorer == "hamming":
        return rng.choice(np.array([-1, 1], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def batched(cfg: Any, b: int, m: int, n: int, seed: int, *,
            key_pool: int | None = 4) -> dict[str, np.ndarray]:
    """``b`` entries of ``m`` queries against ``n`` keys (drawn from ``key_pool`` distinct rows
    when given, so that scores tie), random ``n_valid``."""
    rng = np.random.default_rng(seed)
    if key_pool is None:
        k = _qk(cfg, rng, (b, n, cfg.d))
    else:
        pool = _qk(cfg, rng, (b, key_pool, cfg.d))
        k = np.take_along_axis(pool, rng.integers(0, key_pool, (b, n, 1)), axis=1)
    return {"q": _qk(cfg, rng, (b, m, cfg.d)), "k": k,
            "v": rng.integers(-128, 128, (b, n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, (b, m))}


def fixed_batched(cfg: Any, m: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """One entry per :data:`FIXED_ENTRIES` row: its ``temperature``, and ``q`` and ``k`` with
    elements in ``-a..min(a, 127)`` (``k`` from 4 distinct rows, so that scores tie)."""
    rng = np.random.default_rng(seed)
    q, k = [], []
    for _, a in FIXED_ENTRIES:
        q.append(rng.integers(-a, min(a, 127) + 1, (m, cfg.d)))
        pool = rng.integers(-a, min(a, 127) + 1, (4, cfg.d))
        k.append(pool[rng.integers(0, 4, n)])
    b = len(FIXED_ENTRIES)
    return {"q": np.array(q, np.int8), "k": np.array(k, np.int8),
            "v": rng.integers(-128, 128, (b, n, cfg.d_v)).astype(np.int8),
            "n_valid": rng.integers(1, n + 1, (b, m)),
            "temperature": np.array([t for t, _ in FIXED_ENTRIES])}


def entry(arrays: dict[str, np.ndarray], i: int, *names: str) -> dict[str, np.ndarray]:
    """Entry ``i`` of a batched set as an unbatched one (``names``: the arrays to keep)."""
    return {x: arrays[x][i] for x in (names or ("q", "k", "v", "n_valid"))}


# -- independent scalar model ----------------------------------------------------------------


def round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def scalar_fixed_weight(cfg: Any, tau: float, delta: int) -> int:
    """``E(delta)`` of the fixed exponential at temperature ``tau`` (steps a to e) in Python
    integers: ``G = max(H + 1, 24 - e)`` with ``tau / ln 2 = m * 2**e``, ``0.5 <= m < 1``."""
    f, p, q = cfg.exp_frac_bits, cfg.exp_table_bits, cfg.exp_interp_bits
    h = p + q
    g = max(h + 1, 24 - math.frexp(tau / math.log(2.0))[1])
    c = math.floor(tau / math.log(2.0) * 2.0**g + 0.5)
    t = (delta * c + 2 ** (g - h - 1)) // 2 ** (g - h)
    i, j, r = t // 2**h, (t // 2**q) % 2**p, t % 2**q
    node = [math.floor(2.0**f * 2.0 ** (-x / 2**p) + 0.5) for x in (j, j + 1)]
    y = node[0] * 2**q - (node[0] - node[1]) * r
    return round_half_up(Fraction(y, 2 ** (q + min(i, f + 2))))


def scalar_model(cfg: Any, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                 n_valid: np.ndarray, tau: float,
                 top_k: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One unbatched entry, one query at a time, at temperature ``tau`` (the table formula or
    :func:`scalar_fixed_weight`, by ``cfg.exp``), query ``i`` keeping its ``top_k[i]`` best
    keys (top-k configs); ``R`` and the slot count are the config's."""
    f, o = cfg.exp_frac_bits, cfg.out_frac_bits
    topk = cfg.sparsifier == "topk"
    n_weights = cfg.top_k if topk else cfg.n_max
    r = o + f + (n_weights - 1).bit_length() + 10  # ceil(log2(n_weights))
    if cfg.exp == "table":
        lut = [math.floor(2.0**f * math.exp(-2.0 * tau * a) + 0.5) for a in range(cfg.d + 1)]

        def exp(delta: int) -> int:
            return lut[delta // 2]
    else:
        def exp(delta: int) -> int:
            return scalar_fixed_weight(cfg, tau, delta)
    q, k, v = (np.asarray(x, dtype=np.int64) for x in (q, k, v))
    m, n = q.shape[0], k.shape[0]
    slots = cfg.top_k if topk else n
    out = np.zeros((m, cfg.d_v), np.int64)
    index = np.full((m, slots), -1, np.int64)
    score = np.zeros((m, slots), np.int64)
    for i in range(m):
        s = [int(x) for x in k[: int(n_valid[i])] @ q[i]]
        if topk:
            limit = cfg.top_k if top_k is None else int(top_k[i])
            chosen = sorted(range(len(s)), key=lambda j: (-s[j], j))[:limit]
        else:
            chosen = list(range(len(s)))
        index[i, : len(chosen)] = chosen
        score[i, : len(chosen)] = [s[j] for j in chosen]
        top = max(s[j] for j in chosen)
        e = [exp(top - s[j]) for j in chosen]
        recip = round_half_up(Fraction(2**r, sum(e)))
        for c in range(cfg.d_v):
            num = sum(ej * int(v[j, c]) for ej, j in zip(e, chosen, strict=True))
            out[i, c] = round_half_up(Fraction(num * recip, 2 ** (r - o)))
    return {"out": out, "topk_index": index, "topk_score": score} if topk else {"out": out}


def float_softmax(cfg: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The exact softmax average over the weighed keys of a batched set, in float64, with the
    entry's temperature and the query's k (numpy, one query at a time)."""
    b, m = arrays["q"].shape[:2]
    out = np.zeros((b, m, cfg.d_v))
    for e in range(b):
        tau = float(arrays["temperature"][e]) if "temperature" in arrays else cfg.temperature
        for i in range(m):
            s = arrays["k"][e, : arrays["n_valid"][e, i]].astype(np.int64) @ \
                arrays["q"][e, i].astype(np.int64)
            chosen = np.arange(len(s))
            if cfg.sparsifier == "topk":
                limit = int(arrays["top_k"][e, i]) if "top_k" in arrays else cfg.top_k
                chosen = sorted(chosen, key=lambda j: (-s[j], j))[:limit]
            w = np.exp(tau * (s[chosen] - s[chosen].max()))
            out[e, i] = (w / w.sum()) @ arrays["v"][e, chosen].astype(np.float64)
    return out * 2.0**cfg.out_frac_bits


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    assert list(got) == list(want), what
    for name in want:
        assert got[name].dtype == np.int32, f"{what}: {name}"
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}: {name}")


# -- run-time temperature --------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TOPK_RT, DENSE_RT, DEFAULT_RT], ids=ident)
def test_each_entry_equals_the_config_built_for_its_temperature(cfg: Any) -> None:
    """Entry i of a file with mixed temperatures is, bit for bit, the file entry i alone run
    by the golden model of the config whose ``temperature`` is ``temperature[i]`` (its ROM);
    and the scalar model agrees."""
    arrays = batched(cfg, len(TEMPERATURES), 5, min(cfg.n_max, 12), seed=1)
    arrays["temperature"] = np.array(TEMPERATURES)
    got = run_vectors(cfg, arrays)
    assert got["out"].shape == (len(TEMPERATURES), 5, cfg.d_v)
    for i, tau in enumerate(TEMPERATURES):
        rom = dataclasses.replace(cfg, temperature=tau, runtime_temperature=False)
        assert rom.recip_bits == cfg.recip_bits and rom.den_width == cfg.den_width
        want = run_vectors(rom, entry(arrays, i))
        assert_same({x: a[i] for x, a in got.items()}, want, f"entry {i}, temperature {tau}")
        scalar = scalar_model(cfg, *entry(arrays, i).values(), tau)
        assert_same({x: a[i] for x, a in got.items()}, scalar, f"scalar, entry {i}")


def test_tiny_temperature_is_the_plain_mean_and_huge_keeps_the_best() -> None:
    cfg = DENSE_RT
    arrays = batched(cfg, 2, 4, 6, seed=2)
    arrays["n_valid"][:] = 6
    arrays["temperature"] = np.array([1e-300, 50.0])
    got = run_vectors(cfg, arrays)["out"]
    mean = arrays["v"][0].astype(np.int64).sum(0) * 2**cfg.out_frac_bits / 6
    assert np.abs(got[0] - mean).max() <= 9 / 16  # equal weights: only the roundings
    # Huge temperature: the maximum's keys only (their mean, when several tie).
    s = arrays["k"][1].astype(np.int64) @ arrays["q"][1].astype(np.int64).T  # (n, m)
    for i in range(4):
        best = s[:, i] == s[:, i].max()
        want = arrays["v"][1][best].astype(np.int64).mean(0) * 2**cfg.out_frac_bits
        assert np.abs(got[1, i] - want).max() <= 9 / 16


@pytest.mark.parametrize("cfg", [TOPK_RT, DENSE_RT], ids=ident)
def test_unbatched_file_takes_one_temperature(cfg: Any) -> None:
    arrays = entry(batched(cfg, 1, 6, 10, seed=3), 0)
    rom = dataclasses.replace(cfg, temperature=0.07, runtime_temperature=False)
    for tau in (0.07, np.float32(0.07), np.array(0.07)):
        if isinstance(tau, np.float32):  # a float32 array stands for its exact value
            rom_tau = dataclasses.replace(rom, temperature=float(tau))
        else:
            rom_tau = rom
        assert_same(run_vectors(cfg, {**arrays, "temperature": tau}), run_vectors(rom_tau, arrays),
                    f"temperature {tau!r}")
    # The config's own temperature gives what a file without the array gives.
    assert_same(run_vectors(cfg, {**arrays, "temperature": cfg.temperature}),
                run_vectors(cfg, arrays), "config temperature")
    # An integer dtype is a real number too.
    one = dataclasses.replace(cfg, temperature=1.0)
    assert_same(run_vectors(cfg, {**arrays, "temperature": np.array(1, np.int16)}),
                run_vectors(one, arrays), "integer temperature")


@pytest.mark.parametrize("cfg", [DEFAULT_RT, DENSE_WIDE_RT, TOPK_RT], ids=ident)
def test_float_reference_with_mixed_temperatures(cfg: Any) -> None:
    """``float_reference`` is the exact softmax of each entry's temperature (and each query's
    k), and the golden output stays within ``error_bound_ulp`` of it."""
    arrays = batched(cfg, 5, 20, min(cfg.n_max, 40), seed=4, key_pool=None)
    arrays["temperature"] = np.array([cfg.temperature, 0.02, 0.3, 0.6, 0.011])
    if cfg.sparsifier == "topk":
        arrays["top_k"] = np.random.default_rng(5).integers(1, cfg.top_k + 1, (5, 20))
    ref = float_reference(cfg, arrays)
    np.testing.assert_allclose(ref, float_softmax(cfg, arrays), rtol=0, atol=1e-6)
    err = np.abs(run_vectors(cfg, arrays)["out"] - ref).max()
    assert err <= cfg.error_bound_ulp
    assert err > 0  # the check compares something


# -- run-time temperature of the fixed exponential ------------------------------------------


def rom_of(cfg: Any, tau: float) -> Any:
    """The config built for temperature ``tau``: its (c, G) are constants."""
    return dataclasses.replace(cfg, temperature=float(tau), runtime_temperature=False)


@pytest.mark.parametrize("cfg", [STD_RT, INT8_TOPK_RT, STD_DEFAULT_RT], ids=ident)
def test_fixed_each_entry_equals_the_config_built_for_its_temperature(cfg: Any) -> None:
    """Entry i of a file with mixed temperatures is, bit for bit, the file entry i alone run
    by the golden model of the config whose ``temperature`` is ``temperature[i]`` (its c and G
    constants); and the scalar model agrees. The temperatures cover G = H + 1 (at H = 24) and
    the largest G, 53."""
    arrays = fixed_batched(cfg, 5, min(cfg.n_max, 12), seed=21)
    temps = arrays["temperature"]
    got = run_vectors(cfg, arrays)
    b = len(temps)
    assert got["out"].shape == (b, 5, cfg.d_v)
    shifts = [cfg.table_for(t)[1] for t in temps]
    assert max(shifts) == 53 == cfg.exp_scale_shift_max
    h = cfg.exp_index_bits
    assert min(shifts) == h + 1 if h == 24 else min(shifts) > h + 1
    for i, tau in enumerate(temps):
        rom = rom_of(cfg, tau)
        assert (rom.exp_scale, rom.exp_scale_shift) == cfg.table_for(tau)
        assert rom.recip_bits == cfg.recip_bits and rom.den_width == cfg.den_width
        want = run_vectors(rom, entry(arrays, i))
        assert_same({x: a[i] for x, a in got.items()}, want, f"entry {i}, temperature {tau}")
        scalar = scalar_model(cfg, *entry(arrays, i).values(), tau)
        assert_same({x: a[i] for x, a in got.items()}, scalar, f"scalar, entry {i}")
    # The temperature array is used: without it every entry has the config's temperature.
    plain = run_vectors(cfg, {x: arrays[x] for x in ("q", "k", "v", "n_valid")})["out"]
    same = (plain == got["out"]).all(axis=(1, 2))
    assert same[0] and not same[1:].all()


@pytest.mark.parametrize("cfg", [STD_RT, INT8_TOPK_RT], ids=ident)
def test_fixed_unbatched_file_takes_one_temperature(cfg: Any) -> None:
    arrays = entry(fixed_batched(cfg, 6, 10, seed=22), 3)  # temperature 0.5, small elements
    for tau in (0.5, np.float32(0.5), np.array(0.5), 1, np.array(1e-9), 1.0):
        rom = rom_of(cfg, float(tau))
        assert_same(run_vectors(cfg, {**arrays, "temperature": tau}), run_vectors(rom, arrays),
                    f"temperature {tau!r}")
    # The config's own temperature gives what a file without the array gives.
    assert_same(run_vectors(cfg, {**arrays, "temperature": cfg.temperature}),
                run_vectors(cfg, arrays), "config temperature")


@pytest.mark.parametrize("cfg", [STD_RT, INT8_TOPK_RT, STD_DEFAULT_RT], ids=ident)
def test_fixed_float_reference_with_mixed_temperatures(cfg: Any) -> None:
    """``float_reference`` is the exact softmax of each entry's temperature (and each query's
    k); the golden output of entry i stays within ``error_bound_ulp`` of it, that of the
    config built for its temperature (the same arithmetic) and that of ``cfg`` alike."""
    arrays = fixed_batched(cfg, 20, min(cfg.n_max, 40), seed=23)
    if cfg.sparsifier == "topk":
        arrays["top_k"] = np.random.default_rng(24).integers(
            1, cfg.top_k + 1, arrays["n_valid"].shape)
    ref = float_reference(cfg, arrays)
    np.testing.assert_allclose(ref, float_softmax(cfg, arrays), rtol=0, atol=1e-6)
    err = np.abs(run_vectors(cfg, arrays)["out"] - ref).max(axis=(1, 2))
    for i, tau in enumerate(arrays["temperature"]):
        assert err[i] <= rom_of(cfg, tau).error_bound_ulp, f"entry {i}, temperature {tau}"
    assert err.max() <= cfg.error_bound_ulp
    assert err.max() > 0  # the check compares something


def test_fixed_top_k_and_temperature_together() -> None:
    """Per-query k with mixed temperatures on int8_topk_attention: entry i is the config built
    for its temperature given the same k (and the scalar model); the slots are the first k."""
    cfg = INT8_TOPK_RT
    arrays = fixed_batched(cfg, 8, 12, seed=25)
    b, m = arrays["n_valid"].shape
    k = np.random.default_rng(26).integers(1, cfg.top_k + 1, (b, m))
    k[:, 0], k[:, 1] = 1, cfg.top_k
    arrays["top_k"] = k
    got = run_vectors(cfg, arrays)
    assert got["topk_index"].shape == (b, m, cfg.top_k)
    full = run_vectors(cfg, {x: a for x, a in arrays.items() if x != "top_k"})
    kept = np.arange(cfg.top_k) < k[:, :, None]
    np.testing.assert_array_equal(got["topk_index"], np.where(kept, full["topk_index"], -1))
    np.testing.assert_array_equal(got["out"][:, 1], full["out"][:, 1])  # k = top_k
    for i, tau in enumerate(arrays["temperature"]):
        one = entry(arrays, i)
        want = run_vectors(rom_of(cfg, tau), {**one, "top_k": k[i]})
        assert_same({x: a[i] for x, a in got.items()}, want, f"entry {i}, temperature {tau}")
        assert_same({x: a[i] for x, a in got.items()},
                    scalar_model(cfg, *one.values(), tau, k[i]), f"scalar, entry {i}")
    # k = 1: the best key's value exactly, at any temperature.
    best = np.take_along_axis(arrays["v"].astype(np.int64), got["topk_index"][:, :, :1], axis=1)
    np.testing.assert_array_equal(got["out"][:, 0], best[:, 0] * 2**cfg.out_frac_bits)


def test_run_tables_of_each_exponential() -> None:
    """Table exponential: ``(*shape, d + 1)`` tables; fixed: ``(*shape, 2)`` pairs (c, G)."""
    tables = run_tables(TOPK_RT, np.array([0.2, 1.5, 0.2]))
    assert tables.dtype == torch.int64 and tables.shape == (3, TOPK_RT.d + 1)
    assert tables.tolist() == [list(TOPK_RT.table_for(t)) for t in (0.2, 1.5, 0.2)]
    scales = run_tables(STD_RT, np.array([1e-9, 1.0, 2**-13, 1.0]))
    assert scales.dtype == torch.int64 and scales.shape == (4, 2)
    assert scales.tolist() == [list(STD_RT.table_for(t)) for t in (1e-9, 1.0, 2**-13, 1.0)]
    assert scales[2].tolist() == [STD_RT.exp_scale, STD_RT.exp_scale_shift]
    assert run_tables(STD_RT, 0.5).tolist() == list(STD_RT.table_for(0.5))
    with pytest.raises(ValueError, match=r"^temperature: std_attention has no run-time "
                                         r"temperature \(runtime_temperature is not set\)$"):
        run_tables(rom_of(STD_RT, 0.5), [0.5])
    with pytest.raises(ValueError, match=r"^temperature must be at most 1\.0, not 2\.0$"):
        run_tables(STD_RT, [0.5, 2.0])
    with pytest.raises(ValueError, match=r"^temperature must be at least 1e-09, not 1e-10$"):
        run_tables(INT8_TOPK_RT, [1e-10])


def test_fixed_exp_weights_with_one_scale_per_row() -> None:
    """``(b, 2)`` pairs (c, G): row i uses its own c and shift G - H (a tensor shift), equal to
    the config built for that temperature and to the scalar model."""
    cfg = STD_RT
    temps = (1e-9, 0.1, 1.0)
    scales = run_tables(cfg, np.array(temps))
    rng = np.random.default_rng(27)
    delta = torch.from_numpy(np.stack([
        np.concatenate([[0, 1, 2, 17, cfg.delta_max], rng.integers(0, cfg.delta_max + 1, 11)])
        for _ in temps]).reshape(3, 4, 4))
    got = fixed_exp_weights(cfg, delta, scales)
    assert torch.equal(weights(cfg, delta, scales), got)
    for i, tau in enumerate(temps):
        assert torch.equal(got[i], fixed_exp_weights(rom_of(cfg, tau), delta[i]))
        assert torch.equal(got[i], fixed_exp_weights(cfg, delta[i], scales[i]))
        assert got[i].flatten().tolist() == [scalar_fixed_weight(cfg, tau, int(x))
                                             for x in delta[i].flatten()]
    assert torch.equal(fixed_exp_weights(cfg, delta), fixed_exp_weights(cfg, delta, torch.tensor(
        [cfg.exp_scale, cfg.exp_scale_shift])))
    with pytest.raises(ValueError, match=r"^table must have shape \(2,\) \(c, G\) or \(b, 2\) = "
                                         r"\(3, 2\), not \(2, 2\)$"):
        fixed_exp_weights(cfg, delta, scales[:2])
    with pytest.raises(ValueError, match=r"^table: the shift G must exceed H = 24$"):
        fixed_exp_weights(cfg, delta, torch.tensor([[1, 24], [1, 25], [1, 26]]))


def test_fixed_exp_is_exact_in_int64_for_every_config() -> None:
    """``x = delta * c < 2**(delta_width + exp_scale_width)`` and the rounding term
    ``2**(G - H - 1)`` stay far below 2**63 for every (P, Q) at the largest d, 1024, over the
    whole temperature range; the widest case (P + Q = 26, temperature 1.0) runs exactly."""
    widest = None
    for p in range(1, 11):
        for q in range(0, 17):
            cfg = StdAttentionConfig(d=1024, exp_table_bits=p, exp_interp_bits=q,
                                     runtime_temperature=True)
            bits = cfg.delta_width + cfg.exp_scale_width
            assert cfg.delta_max * cfg.exp_scale_max < 2**bits <= 2**53
            rounding = cfg.exp_scale_shift_max - cfg.exp_index_bits - 1
            assert rounding <= 51 and 2**bits + 2**rounding < 2**63
            if widest is None or bits > widest[0]:
                widest = (bits, cfg)
    bits, cfg = widest
    assert (bits, cfg.delta_width, cfg.exp_scale_width) == (53, 25, 28)
    assert (cfg.exp_table_bits, cfg.exp_interp_bits, cfg.d) == (10, 16, 1024)
    assert cfg.exp_scale_max == cfg.table_for(1.0)[0] > 2**27
    temps = (1.0, 1e-9, 0.17, 2**-13)
    rng = np.random.default_rng(28)
    delta = np.concatenate([[0, 1, 2, 3, cfg.delta_max - 1, cfg.delta_max],
                            rng.integers(0, 64, 20), rng.integers(0, cfg.delta_max + 1, 20)])
    got = fixed_exp_weights(cfg, torch.from_numpy(np.tile(delta, (len(temps), 1))),
                            run_tables(cfg, np.array(temps)))
    for i, tau in enumerate(temps):
        assert got[i].tolist() == [scalar_fixed_weight(cfg, tau, int(x)) for x in delta]


# -- per-query top_k -------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TOPK_RT, HAD_TOPK8, INT8_TOPK], ids=ident)
def test_top_k_per_query_keeps_the_first_slots(cfg: Any) -> None:
    """Mixed k in one batched file (1, top_k, random, above the valid key count): the slots are
    the first k of the top_k run's, the others padding; the output is that of the k best keys
    (scalar model for the table; a config with top_k = k where R is the same, and k = 1
    exactly, for the fixed exponential)."""
    b, m, n = 3, 8, 12
    arrays = batched(cfg, b, m, n, seed=6)
    rng = np.random.default_rng(7)
    k = rng.integers(1, cfg.top_k + 1, (b, m))
    k[:, 0], k[:, 1] = 1, cfg.top_k
    arrays["n_valid"][:, 2], k[:, 2] = 2, cfg.top_k  # k above the valid key count
    arrays["n_valid"][:, 3], k[:, 3] = 1, 3
    arrays["top_k"] = k
    got = run_vectors(cfg, arrays)
    full = run_vectors(cfg, {x: arrays[x] for x in ("q", "k", "v", "n_valid")})
    assert got["topk_index"].shape == got["topk_score"].shape == (b, m, cfg.top_k)
    slot = np.arange(cfg.top_k)
    kept = slot < k[:, :, None]
    np.testing.assert_array_equal(got["topk_index"], np.where(kept, full["topk_index"], -1))
    np.testing.assert_array_equal(got["topk_score"], np.where(kept, full["topk_score"], 0))
    valid = np.minimum(k, arrays["n_valid"])  # the slots that hold a key
    assert ((got["topk_index"] >= 0) == (slot < valid[:, :, None])).all()
    # k = 1: the best key's value exactly.
    v = arrays["v"].astype(np.int64)
    best = np.take_along_axis(v, got["topk_index"][:, :, :1], axis=1)  # (b, m, d_v)
    mask = k == 1
    np.testing.assert_array_equal(got["out"][mask], best[mask] * 2**cfg.out_frac_bits)
    # k = top_k is the run without the array.
    mask = k == cfg.top_k
    np.testing.assert_array_equal(got["out"][mask], full["out"][mask])
    checked = 0
    for e in range(b):
        one = entry(arrays, e)
        if cfg.exp == "table":
            want = scalar_model(cfg, *one.values(), cfg.temperature, k[e])
            assert_same({x: a[e] for x, a in got.items()}, want, f"scalar, entry {e}")
            continue
        for i in range(m):
            if (int(k[e, i]) - 1).bit_length() == (cfg.top_k - 1).bit_length():
                small = dataclasses.replace(cfg, top_k=int(k[e, i]))
                assert small.recip_bits == cfg.recip_bits
                query = {**one, "q": one["q"][i:i + 1], "n_valid": one["n_valid"][i:i + 1]}
                want = run_vectors(small, query)
                checked += 1
                np.testing.assert_array_equal(got["out"][e, i], want["out"][0])
                np.testing.assert_array_equal(got["topk_index"][e, i, : k[e, i]],
                                              want["topk_index"][0])
    assert cfg.exp == "table" or checked >= 5


def test_top_k_and_temperature_together_unbatched() -> None:
    cfg = TOPK_RT
    arrays = entry(batched(cfg, 1, 7, 9, seed=8), 0)
    k = np.array([1, 2, 3, 4, 4, 2, 1])
    got = run_vectors(cfg, {**arrays, "temperature": 0.9, "top_k": k})
    assert got["out"].shape == (7, cfg.d_v) and got["topk_index"].shape == (7, cfg.top_k)
    assert_same(got, scalar_model(cfg, *arrays.values(), 0.9, k), "scalar")


def test_attention_core_takes_tensors_and_arrays() -> None:
    cfg = TOPK_RT
    a = batched(cfg, 2, 3, 8, seed=9)
    q, k, v, n_valid = (torch.from_numpy(a[x].astype(np.int64)) for x in
                        ("q", "k", "v", "n_valid"))
    tau, top = torch.tensor([0.1, 0.6], dtype=torch.float64), torch.tensor([[1, 4, 2], [3, 3, 4]])
    res = attention_core(cfg, q, k, v, n_valid, temperature=tau, top_k=top)
    again = attention_core(cfg, q, k, v, n_valid, temperature=tau.numpy(), top_k=top.numpy())
    for x, y in zip(res, again, strict=True):
        assert torch.equal(x, y)
    assert res.weights.shape == (2, 3, cfg.top_k)
    assert ((res.weights == 0) == (res.index == -1)).any()
    assert (res.weights[res.index == -1] == 0).all()
    assert (res.weights.max(-1).values == 2**cfg.exp_frac_bits).all()
    for e in range(2):  # unbatched, one entry at a time
        one = attention_core(cfg, q[e], k[e], v[e], n_valid[e], temperature=tau[e], top_k=top[e])
        assert torch.equal(one.out, res.out[e]) and torch.equal(one.index, res.index[e])
    with pytest.raises(ValueError, match=r"^temperature must have shape \(2,\) \(one per batch "
                                         r"entry\), not \(\)$"):
        attention_core(cfg, q, k, v, n_valid, temperature=0.1)
    with pytest.raises(ValueError, match=r"^top_k must have shape \(2, 3\) \(one per query\), "
                                         r"not \(3,\)$"):
        attention_core(cfg, q, k, v, n_valid, top_k=top[0])
    with pytest.raises(ValueError, match=r"^temperature: attention has no run-time temperature "
                                         r"\(runtime_temperature is not set\)$"):
        attention_core(TOPK_ROM, q, k, v, n_valid, temperature=tau)
    with pytest.raises(ValueError, match=r"^top_k: binary_dense_attention has no top-k "
                                         r"sparsifier$"):
        attention_core(DENSE_RT, q, k, v, n_valid, top_k=top)


def test_table_weights_with_one_table_per_row() -> None:
    cfg = TOPK_RT
    tables = torch.tensor([cfg.table_for(t) for t in (0.2, 1.5)], dtype=torch.int64)
    delta = torch.tensor([[[0, 2], [4, 32]], [[0, 2], [4, 32]]])
    got = table_weights(cfg, delta, tables)
    lut = [cfg.table_for(0.2), cfg.table_for(1.5)]
    assert got.tolist() == [[[lut[i][0], lut[i][1]], [lut[i][2], lut[i][16]]] for i in (0, 1)]
    assert table_weights(cfg, delta[0]).tolist() == [[cfg.lut[0], cfg.lut[1]],
                                                     [cfg.lut[2], cfg.lut[16]]]
    with pytest.raises(ValueError, match=r"^table must have shape \(d \+ 1,\) = \(17,\) or "
                                         r"\(b, d \+ 1\) = \(2, 17\), not \(3, 17\)$"):
        table_weights(cfg, delta, torch.zeros((3, 17), dtype=torch.int64))


# -- the normalised form ---------------------------------------------------------------------


def test_normalised_form_keeps_the_optional_arrays_only_when_given() -> None:
    cfg = TOPK_RT
    arrays = batched(cfg, 2, 4, 6, seed=10)
    plain = check_inputs(cfg, arrays)
    assert list(plain) == ["q", "k", "v", "n_valid"]
    assert list(as_batched(plain)[0]) == ["q", "k", "v", "n_valid"]
    full = {**arrays, "top_k": np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.float32),
            "temperature": np.array([1, 2], np.uint8)}
    got = check_inputs(cfg, full)
    assert OPTIONAL_NAMES == ("temperature", "top_k")
    assert list(got) == ["q", "k", "v", "n_valid", "temperature", "top_k"]
    assert (got["temperature"].dtype, got["temperature"].shape) == (np.float64, (2,))
    assert (got["top_k"].dtype, got["top_k"].shape) == (np.int32, (2, 4))
    assert got["temperature"].tolist() == [1.0, 2.0]
    again = check_inputs(cfg, got)  # the normalised form checks to itself
    assert list(again) == list(got)
    for name in got:
        assert again[name].dtype == got[name].dtype
        np.testing.assert_array_equal(again[name], got[name])
    view, batched_ = as_batched(got)
    assert batched_ and all(view[x] is got[x] for x in got)
    # Unbatched: () and (m,), given the batch axis by as_batched.
    one = check_inputs(cfg, {**entry(arrays, 0), "temperature": 0.5, "top_k": [1, 1, 2, 4]})
    assert [a.shape for a in one.values()] == [(4, 16), (6, 16), (6, 3), (4,), (), (4,)]
    view, batched_ = as_batched(one)
    assert not batched_
    assert [a.shape for a in view.values()] == [(1, 4, 16), (1, 6, 16), (1, 6, 3), (1, 4),
                                                (1,), (1, 4)]
    assert view["temperature"].tolist() == [0.5] and view["top_k"].tolist() == [[1, 1, 2, 4]]
    # Each alone.
    assert list(check_inputs(cfg, {**arrays, "top_k": full["top_k"]}))[-1] == "top_k"
    assert list(check_inputs(DENSE_RT, {**arrays, "temperature": [0.1, 0.2]}))[-1] == \
        "temperature"
    assert list(check_inputs(INT8_TOPK, {**batched(INT8_TOPK, 1, 2, 3, seed=0),
                                         "top_k": [[8, 1]]})) == \
        ["q", "k", "v", "n_valid", "top_k"]


# -- error messages --------------------------------------------------------------------------

_WHY = (r"\(the table evaluates exp\(-2\.0 \* temperature \* a\), and 2\.0 \* temperature must "
        r"be a finite float64\)")
_RANGE = rf"finite numbers greater than 0 and at most 8\.988465674311579e\+307 {_WHY}"
_FIXED_RANGE = r"finite numbers at least 1e-09 and at most 1\.0"


def base(cfg: Any, batch: bool) -> dict[str, np.ndarray]:
    """4 queries, 6 keys: two entries, or one unbatched."""
    arrays = batched(cfg, 2, 4, 6, seed=11)
    return arrays if batch else entry(arrays, 0)


# (config, batched, changes, message)
ERRORS: list[tuple[Any, bool, dict[str, Any], str]] = [
    # Who takes what.
    (TOPK_ROM, False, {"temperature": 0.5},
     r"^temperature: attention's softmax table is built for temperature 0\.2 "
     r"\(runtime_temperature is false\); set runtime_temperature to pass one per batch entry$"),
    (dataclasses.replace(DENSE_RT, runtime_temperature=False), True, {"temperature": [1, 2]},
     r"^temperature: binary_dense_attention's softmax table is built for temperature 0\.2 "
     r"\(runtime_temperature is false\); set runtime_temperature to pass one per batch entry$"),
    (STD, False, {"temperature": 0.5},
     r"^temperature: std_attention's exponential scale \(c, G\) is built for temperature "
     r"0\.0001220703125 \(runtime_temperature is false\); set runtime_temperature to pass one "
     r"per batch entry$"),
    (INT8_TOPK, True, {"temperature": [0.5, 0.5]},
     r"^temperature: int8_topk_attention's exponential scale \(c, G\) is built for temperature "
     r"0\.0001220703125 \(runtime_temperature is false\); set runtime_temperature to pass one "
     r"per batch entry$"),
    (DENSE_RT, False, {"top_k": [1, 1, 1, 1]},
     r"^top_k: binary_dense_attention is dense \(no top-k sparsifier\): it weighs every valid "
     r"key; limit the keys of a query with n_valid$"),
    (STD, True, {"top_k": np.ones((2, 4))},
     r"^top_k: std_attention is dense \(no top-k sparsifier\): it weighs every valid key; "
     r"limit the keys of a query with n_valid$"),
    (TOPK_RT, False, {"temprature": 0.5},
     r"^unknown array\(s\) 'temprature'; attention takes q, k, v and optionally n_valid, "
     r"temperature and top_k$"),
    (DENSE_RT, False, {"topk": 1},
     r"^unknown array\(s\) 'topk'; binary_dense_attention takes q, k, v and optionally "
     r"n_valid and temperature$"),
    (STD_RT, False, {"topk": 1},
     r"^unknown array\(s\) 'topk'; std_attention takes q, k, v and optionally n_valid and "
     r"temperature$"),
    (INT8_TOPK, False, {"temprature": 1},
     r"^unknown array\(s\) 'temprature'; int8_topk_attention takes q, k, v and optionally "
     r"n_valid, temperature \(with runtime_temperature\) and top_k$"),
    # temperature: shapes and dtypes.
    (TOPK_RT, False, {"temperature": [0.1, 0.2]},
     r"^temperature has 1 dimension but q is unbatched \(2 dimensions\): temperature must "
     r"have shape \(\), not \(2,\)$"),
    (TOPK_RT, True, {"temperature": 0.1},
     r"^temperature has 0 dimensions but q is batched \(3 dimensions\): temperature must "
     r"have shape \(b,\) = \(2,\), not \(\)$"),
    (TOPK_RT, True, {"temperature": np.full((2, 1), 0.1)},
     r"^temperature has 2 dimensions but q is batched \(3 dimensions\): temperature must "
     r"have shape \(b,\) = \(2,\), not \(2, 1\)$"),
    (TOPK_RT, True, {"temperature": [0.1, 0.2, 0.3]},
     r"^temperature has batch size 3 but q has 2: temperature must have shape \(b,\) = "
     r"\(2,\), not \(3,\)$"),
    (TOPK_RT, False, {"temperature": "0.5"},
     r"^temperature must be an integer or real array, not dtype <U3$"),
    (TOPK_RT, True, {"temperature": [True, True]}, r"^temperature must hold numbers, not "
                                                   r"booleans$"),
    # temperature: values (the first bad one, with its entry).
    (TOPK_RT, True, {"temperature": [0.1, -0.5]}, rf"^temperature must hold {_RANGE}, found "
                                                  r"-0\.5 at \[1\]$"),
    (TOPK_RT, True, {"temperature": [0.0, 0.1]}, rf"^temperature must hold {_RANGE}, found "
                                                 r"0\.0 at \[0\]$"),
    (TOPK_RT, True, {"temperature": np.array([0, 1])}, rf"^temperature must hold {_RANGE}, "
                                                       r"found 0 at \[0\]$"),
    (TOPK_RT, True, {"temperature": [0.1, np.inf]}, rf"^temperature must hold {_RANGE}, found "
                                                    r"inf at \[1\]$"),
    (TOPK_RT, True, {"temperature": [np.nan, -1]}, rf"^temperature must hold {_RANGE}, found "
                                                   r"nan at \[0\]$"),
    (TOPK_RT, True, {"temperature": [1e308, 1e308]}, rf"^temperature must hold {_RANGE}, found "
                                                     r"1e\+308 at \[0\]$"),
    (TOPK_RT, False, {"temperature": -np.inf}, rf"^temperature must hold {_RANGE}, found "
                                               r"-inf$"),
    (DENSE_RT, False, {"temperature": np.float32(0)}, rf"^temperature must hold {_RANGE}, "
                                                      r"found 0\.0$"),
    # temperature of a fixed exponential: its field's range, 1e-9 to 1 inclusive.
    (STD_RT, True, {"temperature": [0.5, 2.0]}, rf"^temperature must hold {_FIXED_RANGE}, "
                                                 r"found 2\.0 at \[1\]$"),
    (STD_RT, True, {"temperature": [1e-10, 0.5]}, rf"^temperature must hold {_FIXED_RANGE}, "
                                                   r"found 1e-10 at \[0\]$"),
    (STD_RT, False, {"temperature": 1.0000000000000002},
     rf"^temperature must hold {_FIXED_RANGE}, found 1\.0000000000000002$"),
    (STD_RT, False, {"temperature": 0}, rf"^temperature must hold {_FIXED_RANGE}, found 0$"),
    (INT8_TOPK_RT, True, {"temperature": [0.5, -0.5]},
     rf"^temperature must hold {_FIXED_RANGE}, found -0\.5 at \[1\]$"),
    (INT8_TOPK_RT, True, {"temperature": [np.nan, 0.5]},
     rf"^temperature must hold {_FIXED_RANGE}, found nan at \[0\]$"),
    (INT8_TOPK_RT, True, {"temperature": np.array([1, 2], np.int8)},
     rf"^temperature must hold {_FIXED_RANGE}, found 2 at \[1\]$"),
    (INT8_TOPK_RT, False, {"temperature": np.float32(1e-10)},
     rf"^temperature must hold {_FIXED_RANGE}, found 1\.000000013351432e-10$"),
    # top_k: shapes and dtypes.
    (TOPK_RT, False, {"top_k": [1, 2]}, r"^top_k must have shape \(m,\) = \(4,\), not \(2,\)$"),
    (TOPK_RT, False, {"top_k": 2},
     r"^top_k has 0 dimensions but q is unbatched \(2 dimensions\): top_k must have shape "
     r"\(m,\) = \(4,\), not \(\)$"),
    (TOPK_RT, True, {"top_k": [1, 2, 3, 4]},
     r"^top_k has 1 dimension but q is batched \(3 dimensions\): top_k must have shape "
     r"\(b, m\) = \(2, 4\), not \(4,\)$"),
    (TOPK_RT, True, {"top_k": np.ones((3, 4))},
     r"^top_k has batch size 3 but q has 2: top_k must have shape \(b, m\) = \(2, 4\), "
     r"not \(3, 4\)$"),
    (TOPK_RT, True, {"top_k": np.ones((2, 5))},
     r"^top_k must have shape \(b, m\) = \(2, 4\), not \(2, 5\)$"),
    (TOPK_RT, False, {"top_k": np.ones(4, bool)}, r"^top_k must hold numbers, not booleans$"),
    (TOPK_RT, False, {"top_k": np.array(["1", "2", "3", "4"])},
     r"^top_k must be an integer or real array, not dtype <U1$"),
    # top_k: values, exact integers in 1..top_k (never rounded, never wrapped).
    (TOPK_RT, False, {"top_k": [1, 2.5, 3, 4]},
     r"^top_k must hold integers between 1 and top_k = 4, found 2\.5 at \[1\]$"),
    (TOPK_RT, False, {"top_k": [1, 2, 0, 4]},
     r"^top_k must hold integers between 1 and top_k = 4, found 0 at \[2\]$"),
    (TOPK_RT, False, {"top_k": [1, 2, 3, 5]},
     r"^top_k must hold integers between 1 and top_k = 4, found 5 at \[3\]$"),
    (TOPK_RT, False, {"top_k": [1, -1, 3, 4]},
     r"^top_k must hold integers between 1 and top_k = 4, found -1 at \[1\]$"),
    (TOPK_RT, False, {"top_k": np.array([1, 2, 3, 2**32 + 1])},
     r"^top_k must hold integers between 1 and top_k = 4, found 4294967297 at \[3\]$"),
    (TOPK_RT, True, {"top_k": [[1, 2, 3, 4], [1, 2, np.nan, 4]]},
     r"^top_k must hold integers between 1 and top_k = 4, found nan at \[1, 2\]$"),
    (INT8_TOPK, True, {"top_k": [[8, 8, 8, 8], [1, 9, 1, 1]]},
     r"^top_k must hold integers between 1 and top_k = 8, found 9 at \[1, 1\]$"),
]


@pytest.mark.parametrize(("cfg", "batch", "changes", "message"), [
    pytest.param(*case, id=f"{i}-{case[0].block}") for i, case in enumerate(ERRORS)
])
def test_errors(cfg: Any, batch: bool, changes: dict[str, Any], message: str) -> None:
    arrays = {**base(cfg, batch), **changes}
    with pytest.raises(InputError, match=message):
        check_inputs(cfg, arrays)
    with pytest.raises(InputError, match=message):
        run_vectors(cfg, arrays)
    with pytest.raises(InputError, match=message):
        float_reference(cfg, arrays)


def test_a_fixed_core_accepts_its_range_ends() -> None:
    """1e-9 and 1.0 are in the range (inclusive), also as a float32 1.0."""
    arrays = {**base(STD_RT, True), "temperature": [1e-9, np.float32(1.0)]}
    got = run_vectors(STD_RT, arrays)
    for i, tau in enumerate((1e-9, 1.0)):
        assert_same({x: a[i] for x, a in got.items()},
                    run_vectors(rom_of(STD_RT, tau), entry(arrays, i)), f"temperature {tau}")


def test_the_largest_temperature_is_accepted() -> None:
    """The upper bound is the config field's: half the largest float64, inclusive."""
    top = AttentionConfig.temperature_max
    arrays = {**base(TOPK_RT, True), "temperature": [top, 0.2]}
    got = run_vectors(TOPK_RT, arrays)
    rom = dataclasses.replace(TOPK_ROM, temperature=top)
    assert_same({x: a[0] for x, a in got.items()}, run_vectors(rom, entry(arrays, 0)), "max")


@pytest.mark.parametrize("cls", [StdAttentionConfig, Int8TopKAttentionConfig])
def test_runtime_fixed_bound_covers_every_temperature(cls):
    """A run-time fixed exponential states the bound of the worst scale rounding (2**-24), at
    least that of a build at any temperature of its range."""
    rt = cls(runtime_temperature=True)
    assert rt.exp_scale_error == 2.0**-24
    for tau in np.geomspace(1e-9, 1.0, 400):
        rom = dataclasses.replace(rt, temperature=float(tau), runtime_temperature=False)
        assert rom.exp_scale_error <= 2.0**-24
        assert rom.error_bound_ulp <= rt.error_bound_ulp
