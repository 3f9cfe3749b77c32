"""Counting top-k RTL in the Amaranth simulator: bit-exact against the top-k golden model (itself
checked against a brute-force sort), random stalls on both streams, heavy ties, all-equal
scores, n < top_k, n = n_max, masks, the cycle formulas of the module docstring, TopK's
interface, the behaviour on input errors, and the config checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from topk_units import check_arbitrary_masks, check_same_as_topk

from hadware.blocks import get_block
from hadware.config.counting_topk import CountingTopKConfig
from hadware.config.topk import TopKConfig
from hadware.golden.counting_topk import run_vectors
from hadware.hw.counting_topk import CountingTopK
from hadware.hw.topk import TopK
from hadware.tb.amsim import run_stream
from hadware.tb.counting_topk import decode, encode
from hadware.tb.payload import pack

CFGS = [
    CountingTopKConfig(top_k=1, lanes=1, n_max=8, score_width=4, d=7),  # top_k 1, lanes 1
    CountingTopKConfig(top_k=4, lanes=3, n_max=20, score_width=6, d=16),  # lanes ∤ n_max
    CountingTopKConfig(top_k=8, lanes=4, n_max=32, score_width=8, d=64),
    CountingTopKConfig(top_k=10, lanes=2, n_max=10, score_width=3, d=2),  # top_k = n_max
    CountingTopKConfig(top_k=6, lanes=1, n_max=6, score_width=4, d=5),  # top_k = n_max, lanes 1
    CountingTopKConfig(top_k=3, lanes=8, n_max=16, score_width=2, d=1),  # two values
]
#: The same geometries with both passes at once.
OVERLAPPED = [dataclasses.replace(c, overlap=True) for c in CFGS]


def values(cfg, rng, shape, distinct=None):
    """Random binarized scores; ``distinct``: drawn from that many values (heavy ties)."""
    v = rng.integers(0, cfg.d + 1, shape) if distinct is None else \
        rng.choice(rng.integers(0, cfg.d + 1, distinct), shape)
    return 2 * v - cfg.d


def run(cfg, arrays, **kw):
    enc = encode(cfg, arrays)
    beats, n_out = enc["streams"]["i_stream"], enc["expected"]["o_stream"]
    got, ins, outs = run_stream(CountingTopK(cfg), beats, n_out, **kw)
    assert len(got) == n_out
    return decode(cfg, arrays, {"o_stream": got}), ins, outs


def check(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    got, _, _ = run(cfg, arrays, **kw)
    np.testing.assert_array_equal(got["topk_index"], want["topk_index"])
    np.testing.assert_array_equal(got["topk_score"], want["topk_score"])


@pytest.mark.parametrize("cfg", CFGS + OVERLAPPED, ids=str)
@pytest.mark.parametrize(("idle", "stall"), [(0.0, 0.0), (0.4, 0.5)])
def test_random_queries(cfg, idle, stall):
    rng = np.random.default_rng(cfg.top_k * 100 + cfg.lanes)
    m = 10
    n_valid = rng.integers(0, cfg.n_max + 1, m)
    n_valid[:4] = [cfg.n_max, 0, 1, min(cfg.n_max, max(1, cfg.top_k - 1))]
    scores = values(cfg, rng, (m, cfg.n_max), distinct=None if m % 2 else 3)
    scores[1::2] = values(cfg, rng, (m // 2, cfg.n_max), distinct=2)  # heavy ties
    check(cfg, {"scores": scores, "n_valid": n_valid}, idle=idle, stall=stall, seed=3)


@pytest.mark.parametrize("cfg", CFGS + OVERLAPPED, ids=str)
def test_ties_extremes_and_short_rows(cfg):
    n, d = cfg.n_max, cfg.d
    rows = [np.full(n, d), np.full(n, -d), np.full(n, d), np.resize([-d, d], n),
            np.resize([d, -d, -d], n), 2 * (np.arange(n) % (d + 1)) - d,
            2 * (np.arange(n)[::-1] % (d + 1)) - d, np.full(n, -d)]
    n_valid = [n, n, 1, max(1, cfg.top_k - 1), n, n, n, 0]
    arrays = {"scores": np.array(rows, dtype=np.int64), "n_valid": np.minimum(n_valid, n)}
    check(cfg, arrays, idle=0.2, stall=0.3, seed=5)


@pytest.mark.parametrize("overlap", [False, True])
def test_readme_size_n_max(overlap):
    """The README configuration (top_k 32, lanes 8, n_max 512, d 64) at n = n_max."""
    cfg = CountingTopKConfig(top_k=32, lanes=8, n_max=512, d=64, overlap=overlap)
    rng = np.random.default_rng(11)
    scores = np.stack([values(cfg, rng, 512), values(cfg, rng, 512, distinct=4),
                       np.full(512, 10)])
    check(cfg, {"scores": scores, "n_valid": np.array([512, 512, 100])}, idle=0.1,
          stall=0.2, seed=7)


@pytest.mark.parametrize("cfg", [CFGS[1], CFGS[2], CFGS[5], OVERLAPPED[2]], ids=str)
def test_arbitrary_masks(cfg):
    """Masks need not be a prefix: any lane of any beat may be left out."""
    check_arbitrary_masks(CountingTopK, cfg, values)


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_cycle_formulas(cfg):
    """Latency and cycles per query exactly as CountingTopK.first_output_latency and
    query_cycles (module docstring) say, for full, partial and one-beat queries back to back:
    each query is collected from the first output cycle of the one before, and its pass 2
    starts at its last beat or once the slots are empty, whichever is later."""
    rng = np.random.default_rng(9)
    ns = [cfg.n_max, 1, max(1, cfg.n_max - 1), min(cfg.n_max, cfg.lanes + 1), cfg.n_max, 1, 1]
    arrays = {"scores": values(cfg, rng, (len(ns), cfg.n_max)), "n_valid": np.array(ns)}
    _, ins, outs = run(cfg, arrays)
    first = 0  # index of the query's first input beat
    slots_free = None  # first cycle in which the previous query's slots are empty
    for q, n in enumerate(ns):
        b = max(1, -(-n // cfg.lanes))
        assert CountingTopK.beats(cfg, n) == b
        assert CountingTopK.first_output_latency(cfg, n) == b + 5
        assert CountingTopK.query_cycles(cfg, n) == b + 4 + max(b, cfg.top_k + 1)
        last_in = ins[first + b - 1]
        assert ins[first:first + b] == list(range(ins[first], ins[first] + b)), (n, q)
        start = last_in if slots_free is None else max(last_in, slots_free)
        assert outs[q * cfg.top_k] == start + b + 5, (n, q)
        assert outs[(q + 1) * cfg.top_k - 1] == start + b + 5 + cfg.top_k - 1, (n, q)
        if q + 1 < len(ns):
            assert ins[first + b] == outs[q * cfg.top_k], (n, q)  # collected meanwhile
            if q > 0:  # in the steady state (a query before it)
                assert ins[first + b] - ins[first] == CountingTopK.query_cycles(cfg, n)
        slots_free = outs[(q + 1) * cfg.top_k - 1] + 1
        first += b
    assert len(ins) == first
    # Query 0 covers n_max, into empty slots: from its last beat to its final output beat,
    # one cycle less than the worst case (which starts from the previous final output).
    assert outs[cfg.top_k - 1] - ins[cfg.rows - 1] + 1 == CountingTopK.worst_case_cycles(cfg) \
        == cfg.rows + cfg.top_k + 5


@pytest.mark.parametrize("cfg", OVERLAPPED, ids=str)
def test_overlapped_cycle_formulas(cfg):
    """With both passes at once: a query into an empty unit answers B' + 8 cycles after its
    last beat (two cycles to finish its counts, the read and its register, the row, lookup and
    slot stages, the
    output bank); back to back, the next query is collected before the previous one's first output,
    and from the third query on they leave every max(B + 2, B' + 5, top_k + 1) cycles (the
    collector, pass 2 or the output bank and its publication, whichever is slowest); top_k
    outputs in a row."""
    rng = np.random.default_rng(10)
    for n in sorted({1, max(1, cfg.n_max // 2), cfg.n_max}):
        m = 6
        arrays = {"scores": values(cfg, rng, (m, cfg.n_max)), "n_valid": np.array([n] * m)}
        _, ins, outs = run(cfg, arrays)
        b = max(1, -(-n // cfg.lanes))
        first_in = [ins[q * b] for q in range(m)]
        first_out = [outs[q * cfg.top_k] for q in range(m)]
        assert first_out[0] - ins[b - 1] == min(b, cfg.rows) + 8
        assert CountingTopK.first_output_latency(cfg, n) == min(b, cfg.rows) + 8
        period = max(b + 2, min(b, cfg.rows) + 5, cfg.top_k + 1)
        assert CountingTopK.query_cycles(cfg, n) == period
        assert [first_out[q + 1] - first_out[q] for q in range(2, m - 1)] == [period] * 3, n
        assert first_in[1] < first_out[0]
        for q in range(m):
            assert outs[q * cfg.top_k:(q + 1) * cfg.top_k] == \
                list(range(first_out[q], first_out[q] + cfg.top_k))
    assert CountingTopK.worst_case_cycles(cfg) == cfg.rows + cfg.top_k + 7


def test_same_interface_and_results_as_topk():
    """The drop-in: TopK's layouts, and TopK's RTL gives the same output beats."""
    cfg = CFGS[1]
    assert CountingTopK.layouts(cfg) == TopK.layouts(cfg)
    rng = np.random.default_rng(2)
    check_same_as_topk(CountingTopK, cfg, {"scores": values(cfg, rng, (8, cfg.n_max), distinct=4),
                                           "n_valid": rng.integers(0, cfg.n_max + 1, 8)})


@pytest.mark.parametrize("cfg", [CFGS[1], OVERLAPPED[1]], ids=str)
def test_input_errors_keep_the_stream_rules_and_the_next_query_is_exact(cfg):
    """Scores outside the binarized set and a query longer than n_max are input errors: the
    answer is unspecified, but every query still gets top_k beats, and the next is exact."""
    layout_in = CountingTopK.layouts(cfg)[0]
    rng = np.random.default_rng(3)
    lim = 1 << (cfg.score_width - 1)
    bad = []
    for n_beats in (3, cfg.rows + 3):  # out-of-set scores; more beats than the buffer holds
        for b in range(n_beats):
            bad.append(pack(layout_in, {"score": [int(x) for x in
                                                  rng.integers(-lim, lim, cfg.lanes)],
                                        "mask": int(rng.integers(0, 2**cfg.lanes)),
                                        "last": int(b == n_beats - 1)}))
    arrays = {"scores": values(cfg, rng, (2, cfg.n_max), distinct=3),
              "n_valid": np.array([cfg.n_max, 5])}
    enc = encode(cfg, arrays)
    n_out = 2 * cfg.top_k + enc["expected"]["o_stream"]
    got, _, _ = run_stream(CountingTopK(cfg), bad + enc["streams"]["i_stream"], n_out,
                           idle=0.2, stall=0.3, seed=6)
    assert len(got) == n_out
    dec = decode(cfg, arrays, {"o_stream": got[2 * cfg.top_k:]})
    want = run_vectors(cfg, arrays)
    np.testing.assert_array_equal(dec["topk_index"], want["topk_index"])
    np.testing.assert_array_equal(dec["topk_score"], want["topk_score"])


def test_registered_block():
    b = get_block("counting_topk")
    assert b.config_class() is CountingTopKConfig and b.component_class() is CountingTopK
    assert b.golden_module().run_vectors is run_vectors
    assert b.tb_module().encode is encode
    component = CountingTopK(CountingTopKConfig())
    component._MustUse__silence = True  # (never elaborated)
    assert component.latency == CountingTopKConfig().rows + 5


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), [
    ({"d": 0}, ValueError, r"^d must be an integer between 1 and 1024, not 0$"),
    ({"d": 1025, "score_width": 12}, ValueError,
     r"^d must be an integer between 1 and 1024, not 1025$"),
    ({"d": "64"}, TypeError, r"^d must be an integer, not '64' \(str\)$"),
    ({"d": True}, TypeError, r"^d must be an integer, not True \(bool\)$"),
    ({"d": 64, "score_width": 7}, ValueError,
     r"^score_width must be at least 8 to hold the scores -d\.\.d \(d = 64\), not 7$"),
    ({"d": 3, "score_width": 2}, ValueError,
     r"^score_width must be at least 3 to hold the scores -d\.\.d \(d = 3\), not 2$"),
    ({"top_k": 17, "n_max": 16}, ValueError,
     r"^top_k must be an integer between 1 and min\(n_max, 256\) \(16\), not 17$"),
    ({"lanes": 0}, ValueError, r"^lanes must be an integer between 1 and min\(n_max, 64\)"),
])
def test_config_messages(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        CountingTopKConfig(**kwargs)


def test_config_widths_and_component_type():
    cfg = CountingTopKConfig(top_k=32, lanes=8, n_max=512, d=64)
    assert (cfg.n_values, cfg.value_width, cfg.rows, cfg.count_width, cfg.position_width) == \
        (65, 7, 64, 6, 6)
    assert CountingTopKConfig(d=3, score_width=3).d == 3
    with pytest.raises(TypeError, match=r"^config must be a CountingTopKConfig, not TopKConfig"):
        CountingTopK(TopKConfig())


@pytest.mark.synth
@pytest.mark.parametrize("cfg", [CFGS[1], CFGS[2], OVERLAPPED[1], OVERLAPPED[2]], ids=str)
def test_flip_flop_formula(cfg, tmp_path):
    """CountingTopK.flip_flops against the register bits of the RTL (Yosys after ``proc``,
    before any optimisation that could merge or drop a register), less the one constant bit
    per lane (the valid bit of a slot-stage entry, which synthesis removes)."""
    import json

    from amaranth.back import rtlil

    from hadware.synth.flow import yosys_script

    (tmp_path / "a.il").write_text(rtlil.convert(CountingTopK(cfg)))
    yosys_script("read_rtlil a.il\nhierarchy -auto-top\nproc\nflatten\nopt_clean\n"
                 "tee -q -o s.json stat -json -width\n", tmp_path, "ff", 300)
    cells = json.loads((tmp_path / "s.json").read_text())["design"]["num_cells_by_type"]
    bits = sum(int(t.rsplit("_", 1)[1]) * n for t, n in cells.items() if t.startswith("$dff_"))
    assert CountingTopK.flip_flops(cfg) == bits - cfg.lanes
