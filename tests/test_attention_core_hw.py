"""The attention family's RTL in the Amaranth simulator, every registered variant: bit for bit
against its golden model with random stalls on every stream (ties, equal keys, extreme values,
n = 1 and n = n_max, fewer keys than n_max, refill), the per-query cycle formula, the parts on
their own (exponential units, divider), clear errors, lint."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator
from attention_family import (
    FRONT_BOUND,
    VARIANTS,
    WEIGHTING_BOUND,
    cases,
    configs,
    extreme_arrays,
    ident,
    random_arrays,
    run_exp_unit,
    run_pipeline,
)

from hadware.blocks import BLOCKS
from hadware.hw.attention_core import Scaler
from hadware.hw.divider import RestoringDivider
from hadware.hw.generate import generate, lint
from hadware.hw.softmax_exp import Exp2Unit, TableExp
from hadware.tb.amsim import run_streams
from hadware.tb.attention_core import ctx_beats, decode_beats, query_beats


def _golden(name):
    return BLOCKS[name].golden_module()


def run_hw(name, cfg, phases, **kw):
    """Each phase writes its context (after a clear), then runs its queries. Returns decoded
    outputs per phase and the transfer cycles."""
    dut = BLOCKS[name].component_class()(cfg)
    inputs = []
    for a in phases:
        inputs.append((dut.ctx_stream, ctx_beats(cfg, a["k"], a["v"])))
        inputs.append((dut.q_stream, query_beats(cfg, a["q"], a["n_valid"])))
    total = sum(a["q"].shape[0] for a in phases)
    got, ins, outs = run_streams(dut, inputs, dut.o_stream, total, sequential=True, **kw)
    assert len(got) == total
    res, pos = [], 0
    for a in phases:
        m = a["q"].shape[0]
        res.append(decode_beats(cfg, got[pos:pos + m]))
        pos += m
    return res, ins, outs


def check(name, cfg, phases, **kw):
    """The RTL's outputs of every phase equal the golden model's, array by array."""
    golden = _golden(name)
    got, _, _ = run_hw(name, cfg, [golden.check_inputs(cfg, a) for a in phases], **kw)
    for g, a in zip(got, phases, strict=True):
        want = golden.run_vectors(cfg, a)
        assert sorted(g) == sorted(want)
        for array in want:
            np.testing.assert_array_equal(g[array], want[array], err_msg=array)


@pytest.mark.parametrize("case", cases(), ids=ident)
def test_random_with_stalls(case):
    name, cfg = case
    check(name, cfg, [random_arrays(cfg, 5, seed=cfg.d)], idle=0.3, stall=0.4, seed=cfg.d)


@pytest.mark.parametrize("case", cases(), ids=ident)
def test_edge_cases(case):
    name, cfg = case
    # Ties: keys from two distinct rows (the lower index wins).
    check(name, cfg, [random_arrays(cfg, 3, seed=1, key_pool=2)], idle=0.2, stall=0.2, seed=1)
    # All keys equal; n = n_max, n = 1, n just below top_k.
    a = random_arrays(cfg, 3, seed=2)
    a["k"][:] = a["k"][0]
    a["n_valid"] = np.array([cfg.n_max, 1, max(1, getattr(cfg, "top_k", 2) - 1)])
    check(name, cfg, [a], idle=0.2, stall=0.3, seed=2)
    # The largest score difference, values at -128 and 127.
    check(name, cfg, [extreme_arrays(cfg)], idle=0.3, stall=0.3, seed=3)
    # Fewer keys stored than n_max.
    check(name, cfg, [random_arrays(cfg, 2, seed=4, n=max(1, cfg.n_max // 2))], stall=0.5,
          seed=4)


@pytest.mark.parametrize("name", VARIANTS)
def test_context_cleared_and_refilled(name):
    cfg = configs(name)[1]
    phases = [random_arrays(cfg, 3, seed=4, n=5), random_arrays(cfg, 3, seed=5),
              random_arrays(cfg, 2, seed=6, n=3)]
    check(name, cfg, phases, idle=0.3, stall=0.3, seed=7)


def latencies(cfg) -> tuple[int, int, int]:
    """(L_lane, L_exp, L_scale) as the module docstring of hw/attention_core.py gives them."""
    if cfg.scorer == "hamming":
        l_lane = 1 + math.ceil(math.log2(cfg.d // 8)) if cfg.d > 8 else 1
    else:
        l_lane = max(1, math.ceil(math.log2(cfg.d))) if cfg.d > 1 else 1
    l_exp = {"table": 1, "fixed": 4}[cfg.exp]

    # The output scaler: registered operands, registered partial products of pieces of
    # P = scale_piece bits (the top piece up to P + 1), a registered two-input adder tree over
    # them and the rounding constant.
    p = cfg.scale_piece

    def pieces(w):
        return 1 if w <= p + 1 else 1 + math.ceil((w - p - 1) / p)

    l_scale = 2 + math.ceil(math.log2(pieces(cfg.num_width) * pieces(cfg.recip_width) + 1))
    return l_lane, l_exp, l_scale


def expected_cycles(cfg, n: int) -> int:
    """The documented per-query cycle count, written out from the module docstring of
    hw/attention_core.py."""
    l_lane, l_exp, l_scale = latencies(cfg)
    rows = math.ceil(max(1, n) / cfg.lanes)
    tail = l_lane + l_exp + cfg.recip_bits + cfg.d_v + l_scale
    if cfg.sparsifier == "topk" and cfg.topk_unit == "counting":
        # the counting top-k: its first selection rows + 5 cycles after the last score beat,
        # where the merging one gives it the next cycle
        return rows + cfg.top_k + tail + 10 + (rows + 4)
    if cfg.sparsifier == "topk" and cfg.topk_unit == "counting_overlapped":
        # with its passes overlapped: rows + 8 (two cycles to complete the counts, one to
        # publish the selections into the output bank)
        return rows + cfg.top_k + tail + 10 + (rows + 7)
    if cfg.sparsifier == "topk" and cfg.topk_unit == "systolic":
        # the systolic top-k: its flush token enters the cycle after the last score beat and
        # passes the top_k cells, then a lane's drain buffer and the tree's ceil(log2(lanes))
        # levels, then the first output
        h = math.ceil(math.log2(cfg.lanes)) if cfg.lanes > 1 else 0
        return rows + cfg.top_k + tail + 10 + (cfg.top_k + h + 2)
    if cfg.sparsifier == "topk":
        # 10: the control and handshake cycles, the key row's register after the memory, the
        # slot weighting's registered difference, its registered weight and value row, its
        # registered partial products and its product register
        return rows + cfg.top_k + tail + 10
    # dense: the maximum tree of the score pass and the column sums' registered adder
    # trees, ceil(log2(lanes)) levels each; the key row's register after the memory, the
    # score buffer's row and the differences registered before the weight lanes, which
    # register the weight and the value row before the multipliers, and the partial products
    # before their sum
    return 2 * rows + 2 * (math.ceil(math.log2(cfg.lanes)) if cfg.lanes > 1 else 0) + tail + 12


@pytest.mark.parametrize("case", cases(), ids=ident)
def test_cycles_per_query_follow_the_formula(case):
    """A query that finds every stage free (each one after a context write, which waits
    until no query is in flight) is answered in exactly the documented cycles."""
    name, cfg = case
    golden = _golden(name)
    phases = []
    for i, n in enumerate([cfg.n_max, 1, max(1, cfg.n_max // 3), cfg.n_max]):
        a = golden.check_inputs(cfg, random_arrays(cfg, 1, seed=8 + i))
        a["n_valid"] = np.array([n])
        phases.append(a)
    _, ins, outs = run_hw(name, cfg, phases)
    core = BLOCKS[name].component_class()
    for i, a in enumerate(phases):
        n = int(a["n_valid"][0])
        (q_in,) = ins[2 * i + 1]
        want = expected_cycles(cfg, n)
        assert outs[i] - q_in == want == core.cycles(cfg, n), (i, n)
        if i:  # the context write waited for the previous output
            assert ins[2 * i][0] > outs[i - 1]


def expected_interval(cfg, n: int) -> int:
    """The documented steady-state cycles between outputs of back-to-back queries over n
    entries, written out from the module docstring of hw/attention_core.py: the period of
    the slowest stage."""
    l_lane, l_exp, l_scale = latencies(cfg)
    rows = math.ceil(max(1, n) / cfg.lanes)
    # the output stage: from taking the sums to the output (the reciprocal in R + 2 cycles,
    # the d_v columns through the scaler), then the cycle after the output transfer
    output = cfg.recip_bits + 2 + cfg.d_v + l_scale + 1 + 1
    if cfg.sparsifier != "topk":  # the next query enters the cycle after the hand-over
        return max(expected_cycles(cfg, n) - (output - 1) + 1, output)
    # the weighting: a slot a cycle, then the difference register, the exponential, the weight
    # and value registers, the partial products, the products and the sums, the release, the
    # next first slot
    weighting = cfg.top_k + l_exp + 5
    if cfg.topk_unit == "systolic":
        # the scan, ready again the cycle after the token entered; or the drain: a token
        # every 2 top_k + ceil(log2(lanes)) + 2 cycles (its cells, the drain buffer, the tree,
        # top_k outputs)
        h = math.ceil(math.log2(cfg.lanes)) if cfg.lanes > 1 else 0
        front = max(rows + l_lane + 4, 2 * cfg.top_k + h + 2)
    elif cfg.topk_unit == "counting_overlapped":
        # the next query's scan starts once the collector has handed the counts on, three
        # cycles after the last score beat
        front = rows + l_lane + 5
    elif cfg.topk_unit == "counting":
        front = rows + 5 + max(rows + l_lane + 2, cfg.top_k)
    else:
        # the key row's read and its register, the lanes, the sparsifier's input
        front = rows + l_lane + 3 + cfg.top_k
    return max(front, weighting, output)


@pytest.mark.parametrize("case", cases(index=0) + cases(index=1) + [
    (name, BLOCKS[name].config_class()(**kw)) for name, kw in FRONT_BOUND + WEIGHTING_BOUND],
    ids=ident)
def test_back_to_back_queries_leave_at_the_interval(case):
    """Queries back to back, output always ready: each is answered within its latency of the
    later of its acceptance and the stage it waits for, and from the third output on they
    leave exactly every interval cycles; several are in flight at once."""
    name, cfg = case
    golden = _golden(name)
    core = BLOCKS[name].component_class()
    for n in sorted({1, cfg.n_max}):
        a = golden.check_inputs(cfg, random_arrays(cfg, 6, seed=n))
        a["n_valid"] = np.array([n] * 6)
        got, ins, outs = run_hw(name, cfg, [a])
        for array, want in golden.run_vectors(cfg, a).items():
            np.testing.assert_array_equal(got[0][array], want, err_msg=array)
        want = expected_interval(cfg, n)
        assert core.interval(cfg, n) == want, n
        assert [outs[i + 1] - outs[i] for i in range(2, 5)] == [want] * 3, (n, outs)
        assert outs[0] - ins[1][0] == expected_cycles(cfg, n)
        # overlap: the second query is accepted before the first one's output
        assert ins[1][1] < outs[0], n


@pytest.mark.parametrize("name", VARIANTS)
def test_wrong_config_type_is_a_clear_error(name):
    other = next(n for n in VARIANTS if n != name)
    cls = BLOCKS[name].config_class().__name__
    with pytest.raises(TypeError, match=rf"^config must be an? {cls}, not "):
        BLOCKS[name].component_class()(BLOCKS[other].config_class()())


@pytest.mark.parametrize("name", [n for n in VARIANTS
                                  if BLOCKS[n].config_class().sparsifier == "topk"])
def test_top_k_beyond_the_sparsifier_is_a_clear_error(name):
    cfg = BLOCKS[name].config_class()(n_max=1024, top_k=300)
    with pytest.raises(ValueError, match=rf"^{name} hardware: top_k must be an integer "
                                         r"between 1 and min\(n_max, 256\)"):
        BLOCKS[name].component_class()(cfg)


@pytest.mark.parametrize("case", cases(index=0) + cases(index=1), ids=ident)
def test_lint_clean(tmp_path, case):
    name, cfg = case
    paths = generate(name, cfg, tmp_path)
    assert lint(paths["verilog"], name) == []


def test_largest_d():
    name = "attention"
    cfg = BLOCKS[name].config_class()(d=1024, n_max=5, top_k=2, d_v=2, lanes=2,
                                      temperature=0.01, exp_frac_bits=12, out_frac_bits=4)
    a = random_arrays(cfg, 3, seed=11)
    a["q"][1] = a["k"][3]  # the extreme score +1024
    a["q"][2] = -a["k"][0]  # and -1024
    check(name, cfg, [a], idle=0.2, stall=0.3, seed=11)


# -- the parts on their own ------------------------------------------------------------------


FIXED = [configs("std_attention")[0], configs("std_attention")[1],
         BLOCKS["std_attention"].config_class()(),
         # A scale large enough that G is set by H + 1 rather than by the bits of c.
         BLOCKS["std_attention"].config_class()(d=2, n_max=4, d_v=1, lanes=2, temperature=0.5,
                                                exp_table_bits=10, exp_interp_bits=16)]


@pytest.mark.parametrize("cfg", FIXED, ids=lambda c: f"d{c.d}P{c.exp_table_bits}"
                                                     f"Q{c.exp_interp_bits}t{c.temperature}")
def test_fixed_exp_unit_rtl(cfg):
    """The two-stage unit against the golden E, one difference per cycle, masked ones 0."""
    rng = np.random.default_rng(5)
    reach = int((cfg.exp_frac_bits + 3) * math.log(2) / cfg.temperature)
    deltas = [0, 1, cfg.delta_max, *rng.integers(0, min(reach, cfg.delta_max), 150).tolist(),
              *rng.integers(0, cfg.delta_max + 1, 30).tolist()]
    masks = [1, 1, 1, *rng.integers(0, 2, len(deltas) - 3).tolist()]
    from hadware.golden.attention_core import fixed_exp_weights

    want = fixed_exp_weights(cfg, torch.tensor(deltas)).tolist()
    got = run_exp_unit(Exp2Unit(cfg), deltas, masks)
    assert got == [w if mk else 0 for w, mk in zip(want, masks, strict=True)]


def test_table_exp_unit_rtl():
    """LUT[delta / 2] with the table written out here: floor(2**F exp(-2 tau a) + 1/2)."""
    cfg = configs("attention")[1]
    deltas = list(range(0, 2 * cfg.d + 1, 2)) * 2
    masks = [1] * (cfg.d + 1) + [i % 2 for i in range(cfg.d + 1)]
    table = [math.floor(2**cfg.exp_frac_bits * math.exp(-2 * cfg.temperature * a) + 0.5)
             for a in range(cfg.d + 1)]
    got = run_exp_unit(TableExp(cfg), deltas, masks)
    assert got == [table[dl // 2] if mk else 0 for dl, mk in zip(deltas, masks, strict=True)]


@pytest.mark.parametrize("name", VARIANTS)
def test_divider_rounds_the_reciprocal_half_up(name):
    """recip = floor((2**R + floor(den / 2)) / den), R + 2 cycles, as the core drives it."""
    cfg = configs(name)[2]
    r = cfg.recip_bits
    dut = RestoringDivider(cfg.den_width, r + 1, quotient_width=cfg.recip_width)
    rng = np.random.default_rng(10)
    dens = [cfg.den_min, cfg.den_max, cfg.den_min + 1, 3 * cfg.den_min // 2, 0,
            *rng.integers(cfg.den_min, cfg.den_max + 1, 30).tolist()]
    got = []

    async def tb(ctx):
        for den in dens:
            ctx.set(dut.divisor, den)
            ctx.set(dut.rem0, 0)
            ctx.set(dut.low, (1 << r) | (den >> 1))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 0
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            assert cycles == r + 1
            got.append(ctx.get(dut.quotient))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    for den, rec in zip(dens, got, strict=True):
        if den == 0:
            assert rec == (1 << cfg.recip_width) - 1
            continue
        assert abs(Fraction(rec) - Fraction(2**r, den)) <= Fraction(1, 2), den
        assert rec == ((1 << r) + den // 2) // den


@pytest.mark.parametrize("cfg", [configs("attention")[1], configs("std_attention")[0],
                                 BLOCKS["std_attention"].config_class()(
                                     d=1024, n_max=4096, d_v=2, lanes=2, exp_frac_bits=24,
                                     out_frac_bits=16),
                                 dataclasses.replace(configs("std_attention")[0], scale_piece=2),
                                 dataclasses.replace(configs("attention")[1], scale_piece=7)],
                         ids=["had", "std", "widest", "std-piece2", "had-piece7"])
def test_scaler_rounds_half_up(cfg):
    """out = floor((num * recip + 2**(S-1)) / 2**S) at the extremes of num and recip, one
    column per cycle through the pipeline."""
    dut = Scaler(cfg)
    r = cfg.recip_bits
    pairs = []
    for den in (cfg.den_min, cfg.den_max, 3 * cfg.den_min - 1):
        rec = ((1 << r) + den // 2) // den
        pairs += [(-128 * den, rec), (127 * den, rec), (0, rec), (-den // 2, rec),
                  (den // 2, rec), (-3 * den // 2, rec)]
    got = run_pipeline(dut, [{"num": n, "recip": rec} for n, rec in pairs], "out")
    s = cfg.out_shift
    assert got == [math.floor(Fraction(n * r, 2**s) + Fraction(1, 2)) for n, r in pairs]


@pytest.mark.synth
def test_weight_mul_adders_leave_no_multiplication(tmp_path):
    """``weight_mul = "adders"``: the weight multiplier's RTL holds no multiplication for
    synthesis to map onto a DSP block; the default holds one per weight piece."""
    import json

    from amaranth.back import rtlil

    from hadware.hw.weighted_sum import WeightMul
    from hadware.synth.flow import yosys_script

    muls = {}
    for adders in (False, True):
        (tmp_path / "a.il").write_text(rtlil.convert(WeightMul(23, adders=adders)))
        yosys_script("read_rtlil a.il\nhierarchy -auto-top\nproc\nopt\n"
                     "tee -q -o s.json stat -json\n", tmp_path, "mul", 300)
        cells = json.loads((tmp_path / "s.json").read_text())["design"]["num_cells_by_type"]
        muls[adders] = cells.get("$mul", 0)
    assert muls == {False: 2, True: 0}
