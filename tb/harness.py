"""The vector-driven cocotb test shared by every block's testbench.

The host side (:mod:`hadware.tb.runner`) prepares a run folder and names it in the environment
variable ``HADWARE_RUN_DIR``. It holds:

* ``params.json``: block name, config, seed, source idle and sink stall probabilities;
* ``inputs.npz``: the input arrays, already checked against the config;
* ``expected.npz`` (optional): the golden model's outputs for the scoreboard.

A testbench module's ``encode`` returns the beats of each input stream, the number of beats
expected on each output stream and, with ``"sequential": True``, asks for the input streams to
be driven one after the other (for example a context before the queries that read it). With
``"segments"``, a list of ``(stream, beats)`` pairs, the input beats are sent in that order of
segments instead, each segment starting once the one before has been sent entirely (for
example context 1, queries 1, context 2, queries 2); the counts of a stream's segments add up
to its beats.

The test drives the block's input streams with the beats its testbench module encodes, collects
the output beats with random backpressure, checks that exactly the expected number of beats came
out (nothing lost, nothing duplicated), decodes them into arrays and writes ``outputs.npz`` and
``stats.json`` (cycle of every transfer). With ``expected.npz`` present, a scoreboard counts the
mismatching elements and the test fails unless there are none.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from hadware.blocks import get_block
from hadware.tb.streams import StreamSink, StreamSource, reset, run_streams, start_clock

__all__ = ["load_run", "run_vector_test", "scoreboard", "write_results"]


def load_run() -> tuple[Path, dict, Any, dict[str, np.ndarray]]:
    run_dir = Path(os.environ["HADWARE_RUN_DIR"])
    params = json.loads((run_dir / "params.json").read_text())
    cfg = get_block(params["block"]).config_class().from_dict(params["config"])
    with np.load(run_dir / "inputs.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return run_dir, params, cfg, arrays


def load_extras(run_dir: Path, block: str) -> list[dict[str, np.ndarray]]:
    """The block's extra files (e.g. weights) of a run folder, in registry order."""
    out = []
    for name in get_block(block).extras:
        with np.load(run_dir / f"extra_{name}.npz") as f:
            out.append({k: f[k] for k in f.files})
    return out


def scoreboard(dut, outputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> int:
    """Count mismatching elements between ``outputs`` and ``expected``; log the first few."""
    mismatches = 0
    for name, want in expected.items():
        got = outputs.get(name)
        if got is None or got.shape != want.shape:
            dut._log.error("output %s: shape %s, expected %s", name,
                           None if got is None else got.shape, want.shape)
            mismatches += want.size
            continue
        bad = np.argwhere(got != want)
        for idx in bad[:5]:
            t = tuple(int(i) for i in idx)
            dut._log.error("output %s%s = %s, expected %s", name, list(t), got[t], want[t])
        mismatches += len(bad)
    return mismatches


def write_results(run_dir: Path, outputs: dict[str, np.ndarray], stats: dict) -> None:
    np.savez(run_dir / "outputs.npz", **outputs)
    (run_dir / "stats.json").write_text(json.dumps(stats))


class _SegmentGate:
    """The ``after`` of a source whose beats come in segments (:meth:`StreamSource.drive`
    holds the source while ``done`` is false): false only while the source's next beat opens a
    segment whose predecessor, ``count`` beats of another source, has not been sent yet."""

    def __init__(self, source: StreamSource, opens: dict[int, tuple[StreamSource, int]]):
        self.source, self.opens = source, opens

    @property
    def done(self) -> bool:
        gate = self.opens.get(self.source.pos)
        return gate is None or gate[0].pos >= gate[1]


def _gate_segments(sources: dict[str, StreamSource], segments) -> None:
    opens: dict[str, dict[int, tuple[StreamSource, int]]] = {name: {} for name in sources}
    sent = dict.fromkeys(sources, 0)
    prev = None
    for name, count in segments:
        if count == 0:
            continue
        if prev is not None and prev != name:
            opens[name][sent[name]] = (sources[prev], sent[prev])
        sent[name] += count
        prev = name
    for name, src in sources.items():
        if sent[name] != len(src.beats):
            raise ValueError(f"segments of {name} count {sent[name]} beats, not "
                             f"{len(src.beats)}")
        src.after = _SegmentGate(src, opens[name])


async def run_vector_test(dut, tb_module, prelude=None) -> None:
    """Drive one run folder's inputs through a block with one input and one output stream
    family, as encoded by ``tb_module.encode`` / ``tb_module.decode``.

    ``prelude``, if given, is awaited as ``prelude(dut, cfg, streams)`` (``streams``: the encoded
    input beats by stream name) after the first reset; a second reset follows it, and the
    outputs must then be those of the encoded inputs alone (a reset that leaves state behind
    fails the scoreboard)."""
    run_dir, params, cfg, arrays = load_run()
    extras = load_extras(run_dir, params["block"])
    seed = int(params["seed"])
    enc = tb_module.encode(cfg, arrays, *extras)
    sources = [
        StreamSource(dut, name, beats, idle_prob=params["idle_prob"],
                     rng=random.Random(seed * 7919 + i))
        for i, (name, beats) in enumerate(enc["streams"].items())
    ]
    if enc.get("segments"):
        _gate_segments(dict(zip(enc["streams"], sources, strict=True)), enc["segments"])
    elif enc.get("sequential"):
        # Each input stream starts once the previous one has sent everything.
        for prev, src in itertools.pairwise(sources):
            src.after = prev
    sinks = [
        StreamSink(dut, name, stall_prob=params["stall_prob"], rng=random.Random(seed * 104729 + i))
        for i, name in enumerate(enc["expected"])
    ]
    start_clock(dut)
    await reset(dut, streams=[*sources, *sinks])
    if prelude is not None:
        await prelude(dut, cfg, enc["streams"])
        await reset(dut, streams=[*sources, *sinks])
    cycles = await run_streams(dut, sources, sinks, list(enc["expected"].values()))
    for k, n in zip(sinks, enc["expected"].values(), strict=True):
        assert len(k.beats) == n, f"{k.name}: received {len(k.beats)} beats, expected {n}"
    outputs = tb_module.decode(cfg, arrays, *extras, {name: k.beats for name, k in
                                                      zip(enc["expected"], sinks, strict=True)})
    stats = {
        "cycles": cycles,
        "in_cycles": {name: s.cycles for name, s in zip(enc["streams"], sources, strict=True)},
        "out_cycles": {name: k.cycles for name, k in zip(enc["expected"], sinks, strict=True)},
    }
    write_results(run_dir, outputs, stats)
    exp_path = run_dir / "expected.npz"
    if exp_path.exists():
        with np.load(exp_path) as f:
            expected = {k: f[k] for k in f.files}
        bad = scoreboard(dut, outputs, expected)
        assert bad == 0, f"scoreboard: {bad} mismatching output elements"
