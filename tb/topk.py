"""cocotb testbench of the streaming top-k sparsifier.

Each query row is sent as ``max(1, ceil(n_valid / lanes))`` beats (lane j of beat b carries
index ``b*lanes + j``, masked when it is not below n_valid), the last with ``last`` set; the
unit answers with ``top_k`` beats. Unselected slots decode to index -1 and score 0.
"""

from __future__ import annotations

import sys

import cocotb
import numpy as np

from hadware.config.topk import TopKConfig
from hadware.hw.topk import TopK
from hadware.tb.harness import run_vector_test
from hadware.tb.payload import pack, unpack

__all__ = ["decode", "encode"]


def encode(cfg: TopKConfig, arrays: dict[str, np.ndarray]) -> dict:
    layout = TopK.layouts(cfg)[0]
    beats = []
    for row, nv in zip(arrays["scores"], arrays["n_valid"], strict=True):
        nv = int(nv)
        groups = max(1, -(-nv // cfg.lanes))
        for g in range(groups):
            lanes = range(g * cfg.lanes, (g + 1) * cfg.lanes)
            beats.append(pack(layout, {
                "score": [int(row[i]) if i < nv else 0 for i in lanes],
                "mask": sum(1 << j for j, i in enumerate(lanes) if i < nv),
                "last": int(g == groups - 1),
            }))
    m = arrays["scores"].shape[0]
    return {"streams": {"i_stream": beats}, "expected": {"o_stream": m * cfg.top_k}}


def decode(cfg: TopKConfig, arrays: dict[str, np.ndarray],
           beats: dict[str, list[int]]) -> dict[str, np.ndarray]:
    layout = TopK.layouts(cfg)[1]
    m = arrays["scores"].shape[0]
    idx = np.full((m, cfg.top_k), -1, dtype=np.int32)
    sc = np.zeros((m, cfg.top_k), dtype=np.int32)
    for n, word in enumerate(beats["o_stream"]):
        b = unpack(layout, word)
        r, p = divmod(n, cfg.top_k)
        if b["last"] != int(p == cfg.top_k - 1):
            raise AssertionError(f"output beat {n}: last = {b['last']} at slot {p}")
        if b["sel"]:
            idx[r, p], sc[r, p] = b["index"], b["score"]
    return {"topk_index": idx, "topk_score": sc}


@cocotb.test()
async def vectors(dut):
    """Drive the run folder's score rows through the sparsifier and score the selections."""
    await run_vector_test(dut, sys.modules[__name__])
