"""cocotb testbench of the attention family: one encoding and one set of tests for every variant.

Encoding (:func:`encode`), per batch entry of the vector file (an unbatched file is one
entry): ``ctx_stream`` gets one ``clear`` beat, then one beat per key/value row of the entry in
index order; ``q_stream`` gets one beat per query ``{q, n_valid}`` of the entry, only after
the entry's whole context has been written; the next entry's ``clear`` is offered as soon as
the entry's last query has been accepted (the core serves it once that query's output has
been taken). ``o_stream`` gives one beat per query, entry after entry; :func:`decode` splits
them back per entry. A whole batched file is one simulation. A binarized key
(``scorer = "hamming"``) is packed as bits (element j at bit j, 1 for +1,
:func:`hadware.spec.attention_vectors.pm1_to_int`), an int8 key as ``d`` signed bytes.
Unselected top-k slots decode to index -1 and score 0.

The layouts come from :meth:`hadware.hw.attention_core.AttentionCore.layouts`, which depends on
the config alone, so one testbench serves every variant. Tests: ``vectors`` (the harness's
scoreboard run, unbatched or batched files), ``refill`` (clear and refill the context between
two passes) and ``reset_mid_query`` (both on unbatched files), and ``batch``. The ``batch``
testcase predates batched vector files and is kept for ``hadware run`` (:mod:`hadware.sw.run`):
it takes unchecked ``(S, L, ...)`` arrays without ``n_valid`` (every query sees all keys) and
runs each sample as its own phase; ``vectors`` on a batched file does the same, checked, with
``n_valid`` and the scoreboard. A variant's testbench module (``hadware.tb.<name>``)
re-exports them.
"""

from __future__ import annotations

import random
import sys

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge

from hadware.hw.attention_core import AttentionCore
from hadware.spec.attention_vectors import as_batched, pm1_to_int, squeeze_batch
from hadware.tb.harness import load_run, run_vector_test, write_results
from hadware.tb.payload import pack, unpack
from hadware.tb.streams import StreamSink, StreamSource, reset, run_streams, start_clock

__all__ = ["batch", "ctx_beats", "decode", "encode", "query_beats", "refill", "reset_mid_query",
           "vectors"]


def _key(cfg, row) -> object:
    if cfg.scorer == "hamming":
        return pm1_to_int(row)
    return [int(x) for x in row]


def ctx_beats(cfg, k: np.ndarray, v: np.ndarray, clear: bool = True) -> list[int]:
    """Context beats: a ``clear`` beat (unless ``clear`` is false), then one per key row."""
    layout = AttentionCore.layouts(cfg)[0]
    zero_key = _key(cfg, np.full(cfg.d, -1))
    beats = [pack(layout, {"clear": 1, "key": zero_key, "value": [0] * cfg.d_v})] if clear \
        else []
    for krow, vrow in zip(k, v, strict=True):
        beats.append(pack(layout, {"clear": 0, "key": _key(cfg, krow),
                                   "value": [int(x) for x in vrow]}))
    return beats


def query_beats(cfg, q: np.ndarray, n_valid: np.ndarray,
                top_k: np.ndarray | None = None) -> list[int]:
    """One ``q_stream`` beat per query row; a top-k core's ``k`` from ``top_k`` (one per
    query), ``cfg.top_k`` without it."""
    layout = AttentionCore.layouts(cfg)[1]
    beats = []
    for i, (row, n) in enumerate(zip(q, n_valid, strict=True)):
        fields = {"q": _key(cfg, row), "n": int(n)}
        if cfg.sparsifier == "topk":
            fields["k"] = cfg.top_k if top_k is None else int(top_k[i])
        beats.append(pack(layout, fields))
    return beats


def table_beats(cfg, table) -> list[int]:
    """``tab_stream`` beats setting the temperature whose ``cfg.table_for`` is ``table``: the
    whole table (``d + 1`` entries, address order) for the table exponential, one beat of
    ``(c, G)`` for the fixed one."""
    layout = AttentionCore.tab_layout(cfg)
    if cfg.exp == "fixed":
        return [pack(layout, {"scale": int(table[0]), "shift": int(table[1])})]
    return [pack(layout, {"addr": a, "data": int(x)}) for a, x in enumerate(table)]


def decode_beats(cfg, words: list[int]) -> dict[str, np.ndarray]:
    """Output arrays from ``o_stream`` beats: ``out`` and, for a top-k core, ``topk_index``
    and ``topk_score``."""
    layout = AttentionCore.layouts(cfg)[2]
    sparse = cfg.sparsifier == "topk"
    m = len(words)
    res = {"out": np.zeros((m, cfg.d_v), dtype=np.int32)}
    if sparse:
        res["topk_index"] = np.full((m, cfg.top_k), -1, dtype=np.int32)
        res["topk_score"] = np.zeros((m, cfg.top_k), dtype=np.int32)
    for r, word in enumerate(words):
        b = unpack(layout, word)
        res["out"][r] = b["out"]
        if sparse:
            for p in range(cfg.top_k):
                if (b["sel"] >> p) & 1:
                    res["topk_index"][r, p] = b["index"][p]
                    res["topk_score"][r, p] = b["score"][p]
    return res


def encode(cfg, arrays: dict[str, np.ndarray]) -> dict:
    """The harness encoding of a checked vector set (unbatched or batched): for each batch
    entry a table segment (``runtime_temperature`` cores, only when the entry's table differs
    from the one the core holds), a context segment (clear, then its keys and values) and a
    query segment (with the entry's per-query ``top_k``), each segment sent once the one
    before has been."""
    a, _ = as_batched(arrays)
    streams: dict[str, list[int]] = {"ctx_stream": [], "q_stream": []}
    runtime = cfg.runtime_temperature
    if runtime:
        streams["tab_stream"] = []
    held = cfg.table_for(cfg.temperature) if runtime else None  # what the core starts with
    segments: list[tuple[str, int]] = []
    for i in range(a["q"].shape[0]):
        if runtime and "temperature" in a:
            table = cfg.table_for(float(a["temperature"][i]))
            if table != held:
                tb = table_beats(cfg, table)
                streams["tab_stream"] += tb
                segments.append(("tab_stream", len(tb)))
                held = table
        top_k = a["top_k"][i] if "top_k" in a else None
        c = ctx_beats(cfg, a["k"][i], a["v"][i])
        qb = query_beats(cfg, a["q"][i], a["n_valid"][i], top_k)
        streams["ctx_stream"] += c
        streams["q_stream"] += qb
        segments += [("ctx_stream", len(c)), ("q_stream", len(qb))]
    return {
        "streams": streams,
        "expected": {"o_stream": len(streams["q_stream"])},
        "segments": segments,
    }


def decode(cfg, arrays: dict[str, np.ndarray], beats: dict[str, list[int]]) -> dict:
    """The output arrays, split back per batch entry (``(b, m, ...)`` for a batched file,
    ``(m, ...)`` for an unbatched one)."""
    a, batched = as_batched(arrays)
    b, m = a["q"].shape[:2]
    out = decode_beats(cfg, beats["o_stream"])
    return squeeze_batch({name: x.reshape(b, m, *x.shape[1:]) for name, x in out.items()},
                         batched)


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


async def _start(dut, *, unbatched: bool = False):
    """Clock, reset, both input streams idle; returns the run folder's contents. With
    ``unbatched``, the run folder must hold an unbatched vector set."""
    run_dir, params, cfg, a = load_run()
    if unbatched and a["q"].ndim != 2:
        raise AssertionError(f"this testcase takes an unbatched vector file, not q of shape "
                             f"{a['q'].shape}")
    start_clock(dut)
    await reset(dut)
    for s in ("ctx_stream", "q_stream", "tab_stream"):
        if s != "tab_stream" or cfg.runtime_temperature:
            getattr(dut, f"{s}__valid").value = 0
    return run_dir, params, cfg, a, int(params["seed"])


@cocotb.test()
async def vectors(dut):
    """Write the run folder's context, then run its queries, and score the outputs."""
    await run_vector_test(dut, sys.modules[__name__])


@cocotb.test()
async def refill(dut):
    """Context A (the first half of the keys), all queries; clear; context B (all keys), all
    queries again. Outputs: the two passes stacked (2m rows), queries clamped to A's size in
    the first pass."""
    run_dir, params, cfg, a, seed = await _start(dut, unbatched=True)
    half = max(1, a["k"].shape[0] // 2)
    n1 = np.minimum(a["n_valid"], half)
    beats = await _phase(dut, params, seed, ctx_beats(cfg, a["k"][:half], a["v"][:half]),
                         query_beats(cfg, a["q"], n1))
    beats += await _phase(dut, params, seed + 10, ctx_beats(cfg, a["k"], a["v"]),
                          query_beats(cfg, a["q"], a["n_valid"]))
    write_results(run_dir, decode_beats(cfg, beats), {})


@cocotb.test()
async def reset_mid_query(dut):
    """Write the context, start the first query, assert reset while it is being scored, then
    write the context again and run every query: only the complete run's outputs may appear."""
    run_dir, params, cfg, a, seed = await _start(dut, unbatched=True)
    await _phase(dut, params, seed, ctx_beats(cfg, a["k"], a["v"]), [])
    first_query = query_beats(cfg, a["q"][:1], a["n_valid"][:1])[0]
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
    beats = await _phase(dut, params, seed + 20, ctx_beats(cfg, a["k"], a["v"]),
                         query_beats(cfg, a["q"], a["n_valid"]))
    write_results(run_dir, decode_beats(cfg, beats), {})


@cocotb.test()
async def batch(dut):
    """Many independent contexts: for each sample s, clear and write context ``k[s], v[s]``,
    then run every query ``q[s]`` over all of it (unchecked arrays (S, L, ...), no
    ``n_valid``). Used by ``hadware run`` to run a model layer's head over a whole data set in
    one simulation; ``vectors`` on a batched vector file is its checked equivalent."""
    run_dir, params, cfg, a, seed = await _start(dut)
    beats: list[int] = []
    n = a["k"].shape[1]
    for s in range(a["q"].shape[0]):
        beats += await _phase(dut, params, seed + s, ctx_beats(cfg, a["k"][s], a["v"][s]),
                              query_beats(cfg, a["q"][s], np.full(a["q"].shape[1], n)))
    out = decode_beats(cfg, beats)
    write_results(run_dir, {k: v.reshape(a["q"].shape[0], a["q"].shape[1], -1)
                            for k, v in out.items()}, {})
