"""Checks shared by the tests of the top-k units that are drop-ins for the streaming top-k
(:class:`~hadware.hw.topk.TopK`'s streams and outputs): arbitrary masks against a brute-force
sort, and the same output beats as TopK's RTL."""

from __future__ import annotations

import numpy as np

from hadware.config.topk import TopKConfig
from hadware.hw.topk import TopK
from hadware.tb.amsim import run_stream
from hadware.tb.payload import pack, unpack
from hadware.tb.topk import encode


def reference(scores, masks, lanes, top_k):
    """Best first by (score descending, index ascending) over the unmasked lanes."""
    cand = [(s, b * lanes + j) for b, (row, mk) in enumerate(zip(scores, masks, strict=True))
            for j, s in enumerate(row) if mk >> j & 1]
    chosen = sorted(cand, key=lambda c: (-c[0], c[1]))[:top_k]
    return chosen + [None] * (top_k - len(chosen))


def check_arbitrary_masks(unit, cfg, scores_for, seed=21):
    """Six queries of random length whose masks need not be a prefix (any lane of any beat
    may be left out), through ``unit(cfg)`` under stalls, against :func:`reference`;
    ``scores_for(cfg, rng, shape, distinct)`` draws the unit's scores."""
    rng = np.random.default_rng(seed)
    layout_in, layout_out = TopK.layouts(cfg)
    beats, want = [], []
    rows = -(-cfg.n_max // cfg.lanes)
    for _ in range(6):
        n_beats = int(rng.integers(1, rows + 1))
        sc = scores_for(cfg, rng, (n_beats, cfg.lanes), distinct=3)
        masks = [int(x) for x in rng.integers(0, 2**cfg.lanes, n_beats)]
        for b in range(n_beats):
            beats.append(pack(layout_in, {"score": [int(x) for x in sc[b]], "mask": masks[b],
                                          "last": int(b == n_beats - 1)}))
        want += reference(sc.tolist(), masks, cfg.lanes, cfg.top_k)
    got, _, _ = run_stream(unit(cfg), beats, len(want), idle=0.3, stall=0.3, seed=4)
    for n, (word, w) in enumerate(zip(got, want, strict=True)):
        b = unpack(layout_out, word)
        assert b["last"] == int(n % cfg.top_k == cfg.top_k - 1)
        assert (b["sel"], (b["score"], b["index"]) if b["sel"] else None) == \
            (int(w is not None), w), f"output beat {n}"


def check_same_as_topk(unit, cfg, arrays):
    """``unit(cfg)`` has TopK's signature and gives TopK's output beats on ``arrays`` (the
    score and index of an unselected slot, unspecified, left out)."""
    plain = TopKConfig(top_k=cfg.top_k, lanes=cfg.lanes, n_max=cfg.n_max,
                       score_width=cfg.score_width)
    dut, ref = unit(cfg), TopK(plain)
    assert dut.signature == ref.signature
    enc = encode(cfg, arrays)
    beats, n_out = enc["streams"]["i_stream"], enc["expected"]["o_stream"]
    a, _, _ = run_stream(dut, beats, n_out, idle=0.2, stall=0.2, seed=1)
    b, _, _ = run_stream(ref, beats, n_out, idle=0.2, stall=0.2, seed=1)
    layout = TopK.layouts(plain)[1]
    fields = [[(u["sel"], u["last"], *((u["score"], u["index"]) if u["sel"] else ()))
               for u in (unpack(layout, w) for w in x)] for x in (a, b)]
    assert fields[0] == fields[1]
