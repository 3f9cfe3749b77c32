"""cocotb testbench of the XNOR-popcount score unit.

Each query is sent as ``ceil(n / lanes)`` beats, one query and ``lanes`` keys per beat; the last
beat of a query is padded with all-zero keys whose scores are dropped on decoding.
"""

from __future__ import annotations

import cocotb
import numpy as np

from hadware.config.score_unit import ScoreUnitConfig
from hadware.hw.score_unit import ScoreUnit
from hadware.spec.attention_vectors import pm1_to_int
from hadware.tb.harness import run_vector_test
from hadware.tb.payload import pack, unpack

__all__ = ["decode", "encode"]


def encode(cfg: ScoreUnitConfig, arrays: dict[str, np.ndarray]) -> dict:
    layout = ScoreUnit.layouts(cfg)[0]
    q, k = arrays["q"], arrays["k"]
    n = k.shape[0]
    groups = -(-n // cfg.lanes)
    keys = [pm1_to_int(r) for r in k] + [0] * (groups * cfg.lanes - n)
    beats = []
    for row in q:
        qi = pm1_to_int(row)
        for g in range(groups):
            beats.append(pack(layout, {"q": qi, "k": keys[g * cfg.lanes:(g + 1) * cfg.lanes]}))
    return {"streams": {"i_stream": beats}, "expected": {"o_stream": len(beats)}}


def decode(cfg: ScoreUnitConfig, arrays: dict[str, np.ndarray],
           beats: dict[str, list[int]]) -> dict[str, np.ndarray]:
    layout = ScoreUnit.layouts(cfg)[1]
    m, n = arrays["q"].shape[0], arrays["k"].shape[0]
    flat = [s for b in beats["o_stream"] for s in unpack(layout, b)["s"]]
    groups = -(-n // cfg.lanes)
    s = np.array(flat, dtype=np.int32).reshape(m, groups * cfg.lanes)[:, :n]
    return {"s": s}


@cocotb.test()
async def vectors(dut):
    """Drive the run folder's vectors through the score unit and score them."""
    import sys

    await run_vector_test(dut, sys.modules[__name__])
