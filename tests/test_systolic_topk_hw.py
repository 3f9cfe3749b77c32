"""Systolic top-k RTL in the Amaranth simulator: bit-exact against the top-k golden model and
a brute-force sort, random stalls on both streams, heavy ties, extreme scores, n < top_k,
n = 1, n = n_max, arbitrary masks, the cycle formulas of the module docstring, TopK's
interface, queries longer than n_max, and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
from topk_units import check_arbitrary_masks, check_same_as_topk

from hadware.blocks import get_block
from hadware.config.systolic_topk import SystolicTopKConfig
from hadware.config.topk import TopKConfig
from hadware.golden.systolic_topk import run_vectors
from hadware.hw.systolic_topk import SystolicTopK
from hadware.hw.topk import TopK
from hadware.tb.amsim import run_stream
from hadware.tb.payload import pack
from hadware.tb.systolic_topk import decode, encode

CFGS = [
    SystolicTopKConfig(top_k=1, lanes=1, n_max=8, score_width=4),  # top_k 1, lanes 1
    SystolicTopKConfig(top_k=4, lanes=3, n_max=20, score_width=6),  # lanes ∤ n_max, odd tree
    SystolicTopKConfig(top_k=8, lanes=4, n_max=32, score_width=22),  # int8 dot-product scores
    SystolicTopKConfig(top_k=10, lanes=2, n_max=10, score_width=3),  # top_k = n_max
    SystolicTopKConfig(top_k=6, lanes=1, n_max=6, score_width=4),  # top_k = n_max, lanes 1
    SystolicTopKConfig(top_k=3, lanes=5, n_max=16, score_width=2),  # lanes 5: three levels
    SystolicTopKConfig(top_k=2, lanes=8, n_max=64, score_width=8),  # top_k < lanes
]


def scores_for(cfg, rng, shape, distinct=None):
    """Random scores over the whole signed range; ``distinct``: drawn from that many values
    (heavy ties)."""
    lim = 1 << (cfg.score_width - 1)
    if distinct is None:
        return rng.integers(-lim, lim, shape)
    return rng.choice(rng.integers(-lim, lim, distinct), shape)


def run(cfg, arrays, **kw):
    enc = encode(cfg, arrays)
    beats, n_out = enc["streams"]["i_stream"], enc["expected"]["o_stream"]
    got, ins, outs = run_stream(SystolicTopK(cfg), beats, n_out, **kw)
    assert len(got) == n_out
    return decode(cfg, arrays, {"o_stream": got}), ins, outs


def check(cfg, arrays, **kw):
    want = run_vectors(cfg, arrays)
    got, _, _ = run(cfg, arrays, **kw)
    np.testing.assert_array_equal(got["topk_index"], want["topk_index"])
    np.testing.assert_array_equal(got["topk_score"], want["topk_score"])


@pytest.mark.parametrize("cfg", CFGS, ids=str)
@pytest.mark.parametrize(("idle", "stall"), [(0.0, 0.0), (0.4, 0.5)])
def test_random_queries(cfg, idle, stall):
    rng = np.random.default_rng(cfg.top_k * 100 + cfg.lanes)
    m = 10
    n_valid = rng.integers(0, cfg.n_max + 1, m)
    n_valid[:4] = [cfg.n_max, 0, 1, min(cfg.n_max, max(1, cfg.top_k - 1))]
    scores = scores_for(cfg, rng, (m, cfg.n_max))
    scores[1::2] = scores_for(cfg, rng, (m // 2, cfg.n_max), distinct=2)  # heavy ties
    check(cfg, {"scores": scores, "n_valid": n_valid}, idle=idle, stall=stall, seed=3)


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_ties_extremes_and_short_rows(cfg):
    n = cfg.n_max
    lo, hi = -(1 << (cfg.score_width - 1)), (1 << (cfg.score_width - 1)) - 1
    rows = [np.full(n, hi), np.full(n, lo), np.full(n, hi), np.resize([lo, hi], n),
            np.resize([hi, lo, lo], n), np.arange(n) % 3 - 1, (np.arange(n)[::-1] % 3) - 1,
            np.full(n, lo)]
    n_valid = [n, n, 1, max(1, cfg.top_k - 1), n, n, n, 0]
    arrays = {"scores": np.clip(np.array(rows, dtype=np.int64), lo, hi),
              "n_valid": np.minimum(n_valid, n)}
    check(cfg, arrays, idle=0.2, stall=0.3, seed=5)


def test_readme_size_n_max():
    """The compare configuration (top_k 32, lanes 8, n_max 512, int8 dot products of d = 64:
    22-bit scores) at n = n_max, with ties."""
    cfg = SystolicTopKConfig(top_k=32, lanes=8, n_max=512, score_width=22)
    rng = np.random.default_rng(11)
    scores = np.stack([scores_for(cfg, rng, 512), scores_for(cfg, rng, 512, distinct=4),
                       np.full(512, 10)])
    check(cfg, {"scores": scores, "n_valid": np.array([512, 512, 100])}, idle=0.1,
          stall=0.2, seed=7)


@pytest.mark.parametrize("cfg", [CFGS[1], CFGS[2], CFGS[5], CFGS[6]], ids=str)
def test_arbitrary_masks(cfg):
    """Masks need not be a prefix: any lane of any beat may be left out."""
    check_arbitrary_masks(SystolicTopK, cfg, scores_for)


@pytest.mark.parametrize("cfg", CFGS, ids=str)
def test_cycle_formulas(cfg):
    """Latency and cycles per query exactly as the module docstring says, for full, partial
    and one-beat queries back to back, consumer always ready: a query's flush token enters the
    cycle after its last beat or the cycle after the previous query's final output, whichever
    is later; its first output follows top_k + h + 2 cycles after that (h the tree's levels),
    then top_k outputs in a row; the next query's first beat is taken the cycle after the
    token entered."""
    h = {1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 8: 3}[cfg.lanes]
    assert cfg.tree_levels == h
    rng = np.random.default_rng(9)
    ns = [cfg.n_max, 1, max(1, cfg.n_max - 1), min(cfg.n_max, cfg.lanes + 1), cfg.n_max, 1, 1]
    arrays = {"scores": scores_for(cfg, rng, (len(ns), cfg.n_max)), "n_valid": np.array(ns)}
    _, ins, outs = run(cfg, arrays)
    assert SystolicTopK.first_output_latency(cfg) == cfg.top_k + h + 3
    first = 0  # index of the query's first input beat
    free = 0  # first cycle in which the previous query has left the drain registers
    injects = []
    for q, n in enumerate(ns):
        b = max(1, -(-n // cfg.lanes))
        assert SystolicTopK.beats(cfg, n) == b
        assert SystolicTopK.query_cycles(cfg, n) == max(b + 1, 2 * cfg.top_k + h + 2)
        assert ins[first:first + b] == list(range(ins[first], ins[first] + b)), (n, q)
        inject = max(ins[first + b - 1] + 1, free)
        injects.append(inject)
        if q > 0:
            assert ins[first] == injects[q - 1] + 1, (n, q)
        out = outs[q * cfg.top_k:(q + 1) * cfg.top_k]
        assert out == list(range(inject + cfg.top_k + h + 2,
                                 inject + cfg.top_k + h + 2 + cfg.top_k)), (n, q)
        free = out[-1] + 1
        first += b
    assert len(ins) == first
    # back to back, each query's token enters query_cycles after the one before
    for q in range(1, len(ns)):
        b = max(1, -(-ns[q] // cfg.lanes))
        assert injects[q] - injects[q - 1] == SystolicTopK.query_cycles(cfg, ns[q]), q


def test_same_interface_and_results_as_topk():
    """The drop-in: TopK's signature, and TopK's RTL gives the same output beats."""
    cfg = CFGS[1]
    rng = np.random.default_rng(2)
    check_same_as_topk(SystolicTopK, cfg,
                       {"scores": scores_for(cfg, rng, (8, cfg.n_max), distinct=4),
                        "n_valid": rng.integers(0, cfg.n_max + 1, 8)})


def test_a_query_longer_than_n_max_keeps_the_stream_rules_and_the_next_query_is_exact():
    """More beats than n_max candidates is an input error (indices wrap): every query still
    gets top_k beats, and the next one is exact."""
    cfg = CFGS[1]
    layout_in = TopK.layouts(cfg)[0]
    rng = np.random.default_rng(3)
    rows = -(-cfg.n_max // cfg.lanes)
    bad = [pack(layout_in, {"score": [int(x) for x in scores_for(cfg, rng, cfg.lanes)],
                            "mask": int(rng.integers(0, 2**cfg.lanes)),
                            "last": int(b == rows + 2)}) for b in range(rows + 3)]
    arrays = {"scores": scores_for(cfg, rng, (2, cfg.n_max), distinct=3),
              "n_valid": np.array([cfg.n_max, 5])}
    enc = encode(cfg, arrays)
    n_out = cfg.top_k + enc["expected"]["o_stream"]
    got, _, _ = run_stream(SystolicTopK(cfg), bad + enc["streams"]["i_stream"], n_out,
                           idle=0.2, stall=0.3, seed=6)
    assert len(got) == n_out
    dec = decode(cfg, arrays, {"o_stream": got[cfg.top_k:]})
    want = run_vectors(cfg, arrays)
    np.testing.assert_array_equal(dec["topk_index"], want["topk_index"])
    np.testing.assert_array_equal(dec["topk_score"], want["topk_score"])


def test_registered_block():
    b = get_block("systolic_topk")
    assert b.config_class() is SystolicTopKConfig and b.component_class() is SystolicTopK
    assert b.golden_module().run_vectors is run_vectors
    assert b.tb_module().encode is encode
    component = SystolicTopK(SystolicTopKConfig())
    component._MustUse__silence = True  # (never elaborated)
    assert component.latency == 8 + 2 + 3


def test_config_checks():
    with pytest.raises(TypeError, match=r"^config must be a SystolicTopKConfig, not "):
        SystolicTopK(TopKConfig())
    with pytest.raises(ValueError, match=r"^top_k must be an integer between 1 and "
                                         r"min\(n_max, 256\) \(16\), not 17$"):
        SystolicTopKConfig(top_k=17, n_max=16)
    assert SystolicTopKConfig(score_width=22, n_max=512).key_width == 1 + 22 + 9
