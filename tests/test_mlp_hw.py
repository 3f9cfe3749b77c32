"""Ternary GLU MLP RTL in the Amaranth simulator: bit for bit against the golden model
(hadware.golden.mlp) with random stalls on both streams, edge tokens and edge weights, the cycle
formulas, the ROM contents, and the arithmetic submodules on their own."""

from __future__ import annotations

import dataclasses
import math
import random
import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from hadware.config.mlp import MlpConfig
from hadware.errors import InputError
from hadware.golden import mlp as G
from hadware.hw.arith import IntSqrt
from hadware.hw.divider import RestoringDivider
from hadware.hw.generate import generate, lint
from hadware.hw.mlp import Mlp, mlp_interval, mlp_latency, rom_images
from hadware.hw.ternary_projection import TernaryProjection
from hadware.spec import mlp as S
from hadware.spec import ternary
from hadware.tb.amsim import run_stream
from hadware.tb.mlp import decode_int, edge_tokens, encode_int, latent_weights

# Narrow formats: truncation in the normalizer (mant_bits 8), K = 0, saturation of gate/up, h
# and y, and a SiLU without interpolation (segments one input step wide).
NARROW = MlpConfig(d_model=8, d_hidden=12, lanes=4, x_bits=10, x_frac_bits=6, gain_bits=10,
                   gain_frac_bits=7, mant_bits=8, recip_frac_bits=0, kappa_bits=8,
                   scale_bits=10, act_bits=8, act_frac_bits=5, silu_range_log2=2,
                   silu_seg_frac_bits=5, silu_frac_bits=6, h_bits=10, h_frac_bits=6, y_bits=8,
                   y_frac_bits=5)
# lanes = 3: weight groups straddle ROM words (two read ports, odd slot offsets).
STRADDLE = MlpConfig(d_model=6, d_hidden=12, lanes=3)
# lanes = 1: no adder tree; d_model < 16 codes per word.
SERIAL = MlpConfig(d_model=4, d_hidden=8, lanes=1)
# lanes = 8 with rows of 24 and 40 codes: padded ROM rows, slots 0 and 8.
PADDED = MlpConfig(d_model=24, d_hidden=40, lanes=8)
# Corners: one element per token; no SiLU interpolation and no GLU rounding shift
# (act_frac_bits = silu_seg_frac_bits = silu_frac_bits = 8, h_frac_bits = 16); the widest
# mantissas and reciprocal (mant_bits 24, recip_frac_bits 16) with lanes = 12.
TINY = MlpConfig(d_model=1, d_hidden=1, lanes=1)
NO_INTERP = MlpConfig(d_model=4, d_hidden=4, lanes=2, act_frac_bits=8, silu_seg_frac_bits=8,
                      silu_frac_bits=8, h_frac_bits=16)
WIDE = MlpConfig(d_model=12, d_hidden=24, lanes=12, mant_bits=24, recip_frac_bits=16,
                 kappa_bits=24, scale_bits=24)
# Int8 weights (the standard baseline's MLP): multipliers in the projection, four codes per
# ROM word (lanes 3 straddles words; the narrow formats saturate).
INT8 = MlpConfig(d_model=6, d_hidden=12, lanes=3, weights="int8")
INT8_NARROW = dataclasses.replace(NARROW, weights="int8")
CONFIGS = [NARROW, STRADDLE, SERIAL, PADDED, TINY, NO_INTERP, WIDE, INT8, INT8_NARROW]


def ident(c: MlpConfig) -> str:
    return f"d{c.d_model}h{c.d_hidden}l{c.lanes}w{c.mant_bits}{c.weights}"


def run_hw(cfg, weights, x_int, x_exp, **kw):
    """Drive integer tokens (mantissas, exponents) through the RTL; return (Y, input cycles,
    output cycles)."""
    dut = Mlp(cfg, weights)
    beats = encode_int(cfg, x_int, x_exp)
    got, ins, outs = run_stream(dut, beats, len(beats), **kw)
    assert len(got) == len(beats), "output beat count"
    return decode_int(cfg, got), ins, outs


def check(cfg, weights, x, **kw):
    want = G.run_vectors_int(cfg, weights, {"x": x})
    y, _, _ = run_hw(cfg, weights, want["x"], want["x_exp"], **kw)
    np.testing.assert_array_equal(y, want["y"])
    return want


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_random_tokens_with_stalls(cfg):
    w = latent_weights(cfg, seed=cfg.d_model)
    x = np.random.default_rng(cfg.d_hidden).normal(0, 1, (6, cfg.d_model))
    check(cfg, w, x, idle=0.3, stall=0.4, seed=cfg.d_model)


@pytest.mark.parametrize("cfg", CONFIGS, ids=ident)
def test_edge_tokens_with_stalls(cfg):
    w = latent_weights(cfg, seed=7, scale=3.0)
    want = check(cfg, w, edge_tokens(cfg, seed=8), idle=0.2, stall=0.5, seed=9)
    assert not want["y"][0].any(), "an all-zero token gives y = 0"


@pytest.mark.parametrize("cfg", [STRADDLE, WIDE], ids=ident)
def test_tokens_at_both_ends_of_the_scale_range(cfg):
    # RMS 2**-8 and 2**8, plain and with a 100x outlier, and the exponents' limits: the
    # per-token exponent (and with it the epsilon table) goes through the RTL bit for bit.
    rng = np.random.default_rng(17)
    x = rng.normal(0, 1, (6, cfg.d_model))
    x *= (np.array([2.0 ** -8, 2.0 ** 8] * 3) / np.sqrt((x * x).mean(axis=1)))[:, None]
    x[2:4, 1] = 100 * np.sqrt((x[2:4] ** 2).mean(axis=1))  # one element 100x the RMS
    want = check(cfg, latent_weights(cfg, seed=5), x, idle=0.3, stall=0.4, seed=18)
    g = cfg.gate_up
    assert want["x_exp"].min() <= -10 and want["x_exp"].max() >= 3
    edges = G.run_vectors_int(cfg, latent_weights(cfg, seed=5), {"x": edge_tokens(cfg, 2)})
    assert {g.exp_min, g.exp_max} <= set(edges["x_exp"].tolist())


def test_narrow_formats_saturate():
    # The NARROW runs above are only meaningful if they reach the saturation limits.
    cfg = NARROW
    w = S.quantize_weights(cfg, latent_weights(cfg, seed=7, scale=3.0))
    tr = G.mlp_int(cfg, w, *G.quantize_input(cfg, edge_tokens(cfg, seed=8)))
    assert (tr["gate_up.out"].abs() >= 2 ** (cfg.act_bits - 1) - 1).any()
    assert (tr["h"].abs() >= 2 ** (cfg.h_bits - 1) - 1).any()
    assert (tr["y"].abs() >= 2 ** (cfg.y_bits - 1) - 1).any()
    assert (tr["gate_up.e"] > cfg.mant_bits).any() and (tr["gate_up.e"] < cfg.mant_bits).any()


WEIGHT_CASES = [("zero", "zero"), ("plus", "plus"), ("minus", "minus"), ("plus", "minus"),
                ("minus", "zero"), ("zero", "plus"), ("random", "zero")]


@pytest.mark.parametrize("kinds", WEIGHT_CASES, ids=lambda k: f"{k[0]}-{k[1]}")
def test_edge_weights(kinds):
    cfg = STRADDLE
    w = latent_weights(cfg, seed=11, gate_up=kinds[0], down=kinds[1])
    rng = np.random.default_rng(12)
    x = np.vstack([rng.normal(0, 1, (3, cfg.d_model)), edge_tokens(cfg, seed=13)[[0, 3, 6]]])
    want = check(cfg, w, x, idle=0.3, stall=0.3, seed=14)
    if "zero" in kinds:
        assert not want["y"].any()


def formula_latency(cfg):
    """The latency formula of the hw/mlp.py docstring, restated."""
    k, w, lanes = cfg.recip_frac_bits, cfg.mant_bits, cfg.lanes
    d = math.ceil(math.log2(lanes))

    def x(n):
        return max(k + n + 17, 2 * w + 7)

    return (3 * cfg.d_model * cfg.d_hidden // lanes + cfg.d_model + x(cfg.d_model)
            + x(cfg.d_hidden) + 2 * d + 34)


def formula_interval(cfg):
    k, w, lanes = cfg.recip_frac_bits, cfg.mant_bits, cfg.lanes
    return (2 * cfg.d_model * cfg.d_hidden // lanes + math.ceil(math.log2(lanes))
            + max(k + cfg.d_model + 26, 2 * w + 16, k + cfg.d_hidden + 38))


@pytest.mark.parametrize("cfg", [*CONFIGS, MlpConfig(d_model=32, d_hidden=32, lanes=32)],
                         ids=ident)
def test_cycle_counts_follow_the_formulas(cfg):
    assert mlp_latency(cfg) == formula_latency(cfg)
    assert mlp_interval(cfg) == formula_interval(cfg)
    w = latent_weights(cfg, seed=3)
    t = 4
    x = np.random.default_rng(4).normal(0, 1, (t, cfg.d_model))
    want = G.run_vectors_int(cfg, w, {"x": x})
    y, ins, outs = run_hw(cfg, w, want["x"], want["x_exp"])  # back to back, no stalls
    np.testing.assert_array_equal(y, want["y"])
    bpt = cfg.d_model // cfg.lanes
    last = [outs[(i + 1) * bpt - 1] for i in range(t)]
    assert last[0] - ins[0] == formula_latency(cfg)
    assert np.diff(last).tolist() == [formula_interval(cfg)] * (t - 1)
    # Beats of a token leave every d_hidden cycles; the first is d_model d_hidden / L - d_hidden
    # cycles before the last.
    first = outs[:bpt]
    assert np.diff(first).tolist() == [cfg.d_hidden] * (bpt - 1)
    assert last[0] - first[0] == cfg.d_model * cfg.d_hidden // cfg.lanes - cfg.d_hidden
    # While the first layer loads, the input takes one beat every `lanes` cycles.
    assert np.diff(ins[:bpt]).tolist() == [cfg.lanes] * (bpt - 1)


@pytest.mark.parametrize("cfg", [NARROW, TINY, NO_INTERP, WIDE], ids=ident)
def test_generated_verilog_lints_clean(cfg, tmp_path):
    paths = generate("mlp", cfg, tmp_path, {"weights": latent_weights(cfg, seed=1)})
    assert lint(paths["verilog"], "mlp") == []


def test_component_attributes():
    cfg = SERIAL
    dut = Mlp(cfg, latent_weights(cfg, seed=1))
    assert dut.latency == formula_latency(cfg) and dut.interval == formula_interval(cfg)
    assert str(dut.latency) in dut.latency_formula
    assert "3*d_model*d_hidden/lanes" in dut.latency_formula
    layout_in, layout_out = Mlp.layouts(cfg)
    assert dut.i_stream.payload.shape() == layout_in
    assert dut.o_stream.payload.shape() == layout_out
    verilog.convert(dut, name="mlp", emit_src=False)  # elaborates


def test_code_roms_hold_layout_v1_words():
    cfg = STRADDLE
    w = latent_weights(cfg, seed=5)
    q = S.quantize_weights(cfg, w)
    images = rom_images(cfg, w)
    assert sorted(images) == ["down", "gate_up"]
    for layer in ("gate_up", "down"):
        codes = getattr(q, layer).codes
        assert images[layer] == [int(v) for v in ternary.pack(codes)]
        np.testing.assert_array_equal(
            ternary.unpack(images[layer], *codes.shape), codes)
    # Independently of pack(): word r * words_per_row + c // 16 holds code (r, c) at bits
    # [2*(c % 16) + 1 : 2*(c % 16)], +1 as 0b01 and -1 as 0b11.
    codes = q.gate_up.codes
    wpr = -(-cfg.d_model // 16)
    for r in range(codes.shape[0]):
        for c in range(codes.shape[1]):
            word = images["gate_up"][r * wpr + c // 16]
            assert (word >> (2 * (c % 16))) & 3 == {0: 0, 1: 1, -1: 3}[int(codes[r, c])]
    # The generated Verilog initializes the code ROM of each layer with exactly these words.
    dut = Mlp(cfg, w)
    assert dut.rom_images() == images
    text = verilog.convert(dut, name="mlp", emit_src=False)
    for layer in ("gate_up", "down"):
        body = text[text.index(f"module \\mlp.{layer}"):]
        body = body[:body.index("endmodule")]
        found = {int(i): int(v, 16 if base == "h" else 10) for i, base, v in
                 re.findall(r"codes\S* \[(\d+)\] = 32'([dh])([0-9a-f]+);", body)}
        expected = {i: v for i, v in enumerate(images[layer]) if v}
        assert {i: v for i, v in found.items() if v} == expected, layer


def test_bad_arguments_are_named():
    cfg = SERIAL
    w = latent_weights(cfg, seed=1)
    with pytest.raises(TypeError, match=r"config must be an MlpConfig, not 'mlp'"):
        Mlp("mlp", w)
    with pytest.raises(TypeError, match=r"weights must be a mapping of arrays"):
        Mlp(cfg, [1, 2])
    bad = dict(w)
    del bad["w_down"]
    with pytest.raises(InputError, match=r"'w_down' is missing"):
        Mlp(cfg, bad)
    bad = dict(w, g_down=np.full(cfg.d_hidden, 100.0))
    with pytest.raises(InputError, match=r"g_down\[0\] = 100.0 does not fit the gain format"):
        Mlp(cfg, bad)
    other = S.quantize_weights(STRADDLE, latent_weights(STRADDLE, seed=1))
    with pytest.raises(ValueError, match=r"weights were quantized for a different"):
        Mlp(cfg, other)
    with pytest.raises(ValueError, match=r"lanes must be an integer between 1 and 64, not 0"):
        TernaryProjection(0, 8)
    with pytest.raises(ValueError, match=r"fan_in must be a multiple of lanes \(3\), not 8"):
        TernaryProjection(3, 8)
    with pytest.raises(TypeError, match=r"lanes must be an integer, not 2.0"):
        TernaryProjection(2.0, 8)


def test_decode_checks_token_framing():
    cfg = STRADDLE
    layout = Mlp.layouts(cfg)[1]
    from hadware.tb.payload import pack

    good = [pack(layout, {"y": [i, -i, 1], "last": i == 1}) for i in range(2)]
    assert decode_int(cfg, good).tolist() == [[0, 0, 1, 1, -1, 1]]
    with pytest.raises(ValueError, match=r"output beat 1: last = 0, expected 1"):
        decode_int(cfg, [good[0], good[0]])
    with pytest.raises(ValueError, match=r"3 output beats are not a whole number of tokens"):
        decode_int(cfg, good + good[:1])


# -- submodules on their own --------------------------------------------------------------------


def run_sim(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("lanes,fan_in", [(1, 5), (3, 12), (8, 32)])
def test_ternary_projection_against_numpy(lanes, fan_in):
    dut = TernaryProjection(lanes, fan_in)
    rng = np.random.default_rng(lanes)
    rows = 12
    codes = rng.integers(0, 4, (rows, fan_in))  # includes the invalid code 0b10 (weight 0)
    q = rng.integers(-127, 128, (rows, fan_in))
    q[0] = 127
    q[1] = -127
    codes[0] = ternary.CODE_PLUS
    codes[1] = ternary.CODE_MINUS
    weight = {ternary.CODE_ZERO: 0, ternary.CODE_PLUS: 1,
              ternary.CODE_MINUS: -1, ternary.CODE_INVALID: 0}
    want = [int(sum(weight[int(c)] * int(v) for c, v in zip(cr, qr, strict=True)))
            for cr, qr in zip(codes, q, strict=True)]
    assert want[0] == 127 * fan_in and want[1] == 127 * fan_in
    groups = fan_in // lanes
    got = []
    stall = random.Random(lanes)

    async def bench(ctx):
        items = [(r, g) for r in range(rows) for g in range(groups)]
        pos = 0
        while len(got) < rows:
            en = stall.random() >= 0.3
            if pos < len(items) and en:
                r, g = items[pos]
                sl = slice(g * lanes, (g + 1) * lanes)
                word = sum(int(c) << (2 * i) for i, c in enumerate(codes[r, sl]))
                ctx.set(dut.codes, word)
                ctx.set(dut.act, [int(v) for v in q[r, sl]])
                ctx.set(dut.first, g == 0)
                ctx.set(dut.last, g == groups - 1)
                ctx.set(dut.valid, 1)
                pos += 1
            else:
                ctx.set(dut.valid, 0)
            ctx.set(dut.en, en)
            if en and ctx.get(dut.acc_valid):
                got.append(ctx.get(dut.acc))
            await ctx.tick()

    run_sim(dut, bench)
    assert got == want


def test_integer_square_root():
    w = 10
    dut = IntSqrt(w)
    rng = np.random.default_rng(2)
    values = [0, 1, 2, 3, 4, 2 ** (2 * w - 2), 2 ** (2 * w - 2) - 1, 2 ** (2 * w) - 1,
              (2 ** w - 1) ** 2, (2 ** w - 1) ** 2 - 1, 1023 ** 2 + 2 * 1023]
    values += [int(v) for v in rng.integers(0, 2 ** (2 * w), 60)]
    values += [r * r + d for r in rng.integers(0, 2 ** w, 20).tolist() for d in (-1, 0, 1)
               if 0 <= r * r + d < 2 ** (2 * w)]
    got = []

    async def bench(ctx):
        for v in values:
            ctx.set(dut.value, v)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            assert cycles == w + 1
            got.append(ctx.get(dut.root))

    run_sim(dut, bench)
    assert got == [math.isqrt(v) for v in values]


@pytest.mark.parametrize("width,q_bits", [(8, 8), (8, 9), (12, 5)])
def test_restoring_divider(width, q_bits):
    dut = RestoringDivider(width, q_bits)
    rng = np.random.default_rng(width + q_bits)
    cases = [(0, 0, 1), (0, 2 ** q_bits - 1, 1), (2 ** width - 2, 2 ** q_bits - 1, 2 ** width - 1),
             (2 ** (width - 1) - 1, 0, 2 ** (width - 1))]
    for _ in range(60):
        d = int(rng.integers(1, 2 ** width))
        cases.append((int(rng.integers(0, d)), int(rng.integers(0, 2 ** q_bits)), d))
    got = []

    async def bench(ctx):
        for rem0, low, d in cases:
            ctx.set(dut.rem0, rem0)
            ctx.set(dut.low, low)
            ctx.set(dut.divisor, d)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            assert cycles == q_bits + 1
            got.append(ctx.get(dut.quotient))

    run_sim(dut, bench)
    assert got == [(r * 2 ** q_bits + lo) // d for r, lo, d in cases]
