"""cocotb testbench of the binarized dense attention baseline, and the stream encoding shared by
the three attention baselines (``binary_dense_attention``, ``std_attention``,
``int8_topk_attention``).

Encoding (as the HAD core's testbench): ``ctx_stream`` gets one ``clear`` beat, then one beat
per key/value row in index order; ``q_stream`` gets one beat per query ``{q, n_valid}``, only
after the whole context has been written. ``o_stream`` gives one beat per query. A binary key is
packed as bits (element j at bit j, 1 for +1), an int8 key as ``d`` signed bytes; the block's
``key_layout`` tells which. Unselected top-k slots decode to index -1 and score 0.
"""

from __future__ import annotations

import random
import sys

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.triggers import ClockCycles, FallingEdge

from hadware.hw.binary_dense_attention import BinaryDenseAttention
from hadware.tb.attention import bits_to_int
from hadware.tb.harness import load_run, run_vector_test, write_results
from hadware.tb.payload import pack, unpack
from hadware.tb.streams import StreamSink, StreamSource, reset, run_streams, start_clock

__all__ = [
    "ctx_beats",
    "decode",
    "decode_beats",
    "encode",
    "encode_block",
    "query_beats",
    "refill_test",
    "reset_mid_query_test",
]

BLOCK = BinaryDenseAttention


def _key(block, cfg, row) -> object:
    if isinstance(block.key_layout(cfg), data.ArrayLayout):
        return [int(x) for x in row]
    return bits_to_int(row)


def ctx_beats(block, cfg, k: np.ndarray, v: np.ndarray, clear: bool = True) -> list[int]:
    """Context beats of ``block`` (a core class): a ``clear`` beat, then one per key row."""
    layout = block.layouts(cfg)[0]
    zero_key = _key(block, cfg, np.full(cfg.d, -1))
    beats = [pack(layout, {"clear": 1, "key": zero_key, "value": [0] * cfg.d_v})] if clear \
        else []
    for krow, vrow in zip(k, v, strict=True):
        beats.append(pack(layout, {"clear": 0, "key": _key(block, cfg, krow),
                                   "value": [int(x) for x in vrow]}))
    return beats


def query_beats(block, cfg, q: np.ndarray, n_valid: np.ndarray) -> list[int]:
    """One ``q_stream`` beat per query row."""
    layout = block.layouts(cfg)[1]
    return [pack(layout, {"q": _key(block, cfg, row), "n": int(n)})
            for row, n in zip(q, n_valid, strict=True)]


def decode_beats(block, cfg, words: list[int]) -> dict[str, np.ndarray]:
    """Output arrays from ``o_stream`` beats: ``out`` and, for the top-k core, ``topk_index``
    and ``topk_score``."""
    layout = block.layouts(cfg)[2]
    m = len(words)
    out = np.zeros((m, cfg.d_v), dtype=np.int32)
    res = {"out": out}
    if block.sparse:
        idx = np.full((m, cfg.top_k), -1, dtype=np.int32)
        sc = np.zeros((m, cfg.top_k), dtype=np.int32)
        res.update(topk_index=idx, topk_score=sc)
    for r, word in enumerate(words):
        b = unpack(layout, word)
        out[r] = b["out"]
        if block.sparse:
            for p in range(cfg.top_k):
                if (b["sel"] >> p) & 1:
                    idx[r, p], sc[r, p] = b["index"][p], b["score"][p]
    return res


def encode_block(block, cfg, arrays: dict[str, np.ndarray]) -> dict:
    """The harness encoding (context first, then the queries) for ``block``."""
    return {
        "streams": {"ctx_stream": ctx_beats(block, cfg, arrays["k"], arrays["v"]),
                    "q_stream": query_beats(block, cfg, arrays["q"], arrays["n_valid"])},
        "expected": {"o_stream": arrays["q"].shape[0]},
        "sequential": True,
    }


def encode(cfg, arrays: dict[str, np.ndarray]) -> dict:
    return encode_block(BLOCK, cfg, arrays)


def decode(cfg, arrays: dict[str, np.ndarray], beats: dict[str, list[int]]) -> dict:
    return decode_beats(BLOCK, cfg, beats["o_stream"])


async def _phase(dut, params: dict, seed: int, ctx: list[int], queries: list[int]) -> list[int]:
    """Write ``ctx`` beats, then send ``queries``; return the output beats (one per query)."""
    src_c = StreamSource(dut, "ctx_stream", ctx, idle_prob=params["idle_prob"],
                         rng=random.Random(seed))
    src_q = StreamSource(dut, "q_stream", queries, idle_prob=params["idle_prob"],
                         rng=random.Random(seed + 1))
    src_q.after = src_c
    sink = StreamSink(dut, "o_stream", stall_prob=params["stall_prob"],
                      rng=random.Random(seed + 2))
    await run_streams(dut, [src_c, src_q], [sink], [len(queries)])
    assert len(sink.beats) == len(queries), \
        f"o_stream: received {len(sink.beats)} beats, expected {len(queries)}"
    return sink.beats


async def refill_test(dut, block) -> None:
    """Context A (the first half of the keys), all queries; clear; context B (all keys), all
    queries again. Outputs: the two passes stacked (2m rows), queries clamped to A's size in
    the first pass."""
    run_dir, params, cfg, a = load_run()
    seed = int(params["seed"])
    half = max(1, a["k"].shape[0] // 2)
    start_clock(dut)
    await reset(dut)
    for s in ("ctx_stream", "q_stream"):
        getattr(dut, f"{s}__valid").value = 0
    n1 = np.minimum(a["n_valid"], half)
    beats = await _phase(dut, params, seed, ctx_beats(block, cfg, a["k"][:half], a["v"][:half]),
                         query_beats(block, cfg, a["q"], n1))
    beats += await _phase(dut, params, seed + 10, ctx_beats(block, cfg, a["k"], a["v"]),
                          query_beats(block, cfg, a["q"], a["n_valid"]))
    write_results(run_dir, decode_beats(block, cfg, beats), {})


async def reset_mid_query_test(dut, block) -> None:
    """Write the context, start the first query, assert reset while it is being scored, then
    write the context again and run every query: only the complete run's outputs may appear."""
    run_dir, params, cfg, a = load_run()
    seed = int(params["seed"])
    start_clock(dut)
    await reset(dut)
    dut.q_stream__valid.value = 0
    await _phase(dut, params, seed, ctx_beats(block, cfg, a["k"], a["v"]), [])
    first_query = query_beats(block, cfg, a["q"][:1], a["n_valid"][:1])[0]
    await FallingEdge(dut.clk)
    dut.o_stream__ready.value = 1
    dut.q_stream__payload.value = first_query
    dut.q_stream__valid.value = 1
    await FallingEdge(dut.clk)
    dut.q_stream__valid.value = 0
    await ClockCycles(dut.clk, 3)
    assert not int(dut.o_stream__valid.value), "output before the query could finish"
    await reset(dut)
    assert not int(dut.o_stream__valid.value), "output valid right after reset"
    beats = await _phase(dut, params, seed + 20, ctx_beats(block, cfg, a["k"], a["v"]),
                         query_beats(block, cfg, a["q"], a["n_valid"]))
    write_results(run_dir, decode_beats(block, cfg, beats), {})


@cocotb.test()
async def vectors(dut):
    """Write the run folder's context, then run its queries, and score the outputs."""
    await run_vector_test(dut, sys.modules[__name__])


@cocotb.test()
async def refill(dut):
    """Clear and refill the context between two passes over the queries."""
    await refill_test(dut, BLOCK)


@cocotb.test()
async def reset_mid_query(dut):
    """Reset in the middle of a query, then a complete run."""
    await reset_mid_query_test(dut, BLOCK)
