"""A levelized, cycle-based simulator of a flattened gate netlist, for switching activity.

Verilator turns a netlist of hundreds of thousands of one-bit cells into hundreds of megabytes
of C++ (and as much trace code again), which takes longer to compile than every other step of
a comparison together. This simulator evaluates the same netlist directly: Yosys writes it
flattened as JSON (``write_json`` after ``flatten``: the generic gate cells of
:data:`GATE_TABLE`, ``$_DFF_P_`` flip-flops and ``$mem_v2`` memories), the combinational cells
are sorted into levels once, and each level is one table look-up over numpy arrays.

Stimulus and check (:func:`replay`): the top-level inputs are replayed, cycle by cycle, from
the VCD of the RTL simulation of the same run (the cocotb testbench drives inputs at the
falling clock edge, so each cycle is evaluated twice: after the rising edge with the old
inputs, and after the falling edge with the new ones). Every output port is compared with the
RTL's at every rising edge; since the testbench only reacts to outputs, equal outputs at every
edge mean the testbench would have driven the gate-level design exactly as it drove the RTL.
This is a stronger check than the scoreboard's (which sees only the transferred beats), and it
runs through the drain cycles after the last transfer.

Toggles are counted per cell output bit at every evaluation in which its value changes (a
zero-delay model: at most one change per net per evaluation, no glitches), the same count a
VCD trace of a zero-delay simulation gives.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hadware.errors import ToolError
from hadware.synth.vcd import read_header, steps

__all__ = ["GATE_TABLE", "Netlist", "read_vcd_ports", "replay"]


def _table(fn) -> list[int]:
    """Truth table of ``fn`` over inputs (a, b, c, d), index a*8 + b*4 + c*2 + d (a cell's
    unused inputs are tied to constant 0)."""
    out = []
    for idx in range(16):
        a, b, c, d = (idx >> 3) & 1, (idx >> 2) & 1, (idx >> 1) & 1, idx & 1
        out.append(int(fn(a, b, c, d)) & 1)
    return out


#: Yosys generic cells: (input pins in table order, truth table over (a, b, c, d)).
GATE_TABLE: dict[str, tuple[tuple[str, ...], list[int]]] = {
    "$_BUF_": (("A",), _table(lambda a, b, c, d: a)),
    "$_NOT_": (("A",), _table(lambda a, b, c, d: 1 - a)),
    "$_AND_": (("A", "B"), _table(lambda a, b, c, d: a & b)),
    "$_NAND_": (("A", "B"), _table(lambda a, b, c, d: 1 - (a & b))),
    "$_OR_": (("A", "B"), _table(lambda a, b, c, d: a | b)),
    "$_NOR_": (("A", "B"), _table(lambda a, b, c, d: 1 - (a | b))),
    "$_XOR_": (("A", "B"), _table(lambda a, b, c, d: a ^ b)),
    "$_XNOR_": (("A", "B"), _table(lambda a, b, c, d: 1 - (a ^ b))),
    "$_ANDNOT_": (("A", "B"), _table(lambda a, b, c, d: a & (1 - b))),
    "$_ORNOT_": (("A", "B"), _table(lambda a, b, c, d: a | (1 - b))),
    # MUX: Y = S ? B : A, inputs in table order (A, B, S).
    "$_MUX_": (("A", "B", "S"), _table(lambda a, b, s, d: b if s else a)),
    "$_NMUX_": (("A", "B", "S"), _table(lambda a, b, s, d: 1 - (b if s else a))),
    "$_AOI3_": (("A", "B", "C"), _table(lambda a, b, c, d: 1 - ((a & b) | c))),
    "$_OAI3_": (("A", "B", "C"), _table(lambda a, b, c, d: 1 - ((a | b) & c))),
    "$_AOI4_": (("A", "B", "C", "D"), _table(lambda a, b, c, d: 1 - ((a & b) | (c & d)))),
    "$_OAI4_": (("A", "B", "C", "D"), _table(lambda a, b, c, d: 1 - ((a | b) & (c | d)))),
}
_TYPES = list(GATE_TABLE)
_LUT = np.array([bit for t in _TYPES for bit in GATE_TABLE[t][1]], dtype=np.uint8)

# Net index 0 is constant 0, 1 is constant 1; Yosys bit numbers (>= 2) keep their value.
_CONST = {"0": 0, "1": 1, "x": 0, "z": 0}


def _bits(conn: list) -> list[int]:
    return [b if isinstance(b, int) else _CONST[b] for b in conn]


def _param(cell: dict, name: str) -> int:
    v = cell["parameters"].get(name, "0")
    if isinstance(v, int):
        return v
    v = str(v).replace("x", "0").replace("z", "0")
    return int(v, 2) if v else 0


def _param_bits(cell: dict, name: str, width: int) -> np.ndarray:
    """A bit-string parameter (MSB first) as ``width`` bits, LSB first; x reads as 0."""
    s = str(cell["parameters"].get(name, "")).replace("x", "0").replace("z", "0")
    s = s.rjust(width, "0")[-width:] if width else ""
    return np.array([int(ch) for ch in reversed(s)], dtype=np.uint8)


def instance_path(name: str, cell: dict) -> str:
    """Hierarchical instance (``""`` for the top, ``"lane0.dot0"``) a flattened cell came
    from."""
    hdl = cell.get("attributes", {}).get("hdlname")
    if hdl:
        return ".".join(hdl.split(" ")[:-1])
    if name.startswith("$flatten"):
        rest = name[len("$flatten"):]
        cut = rest.rfind(".$")
        prefix = rest[:cut] if cut >= 0 else rest.rsplit(".", 1)[0]
        return ".".join(p.lstrip("\\") for p in prefix.split(".\\"))
    if name.startswith("\\") and "." in name:
        return name[1:].rsplit(".", 1)[0]
    return ""


class _Memory:
    def __init__(self, name: str, cell: dict):
        self.name = name
        c = {k: _bits(v) for k, v in cell["connections"].items()}
        self.width = _param(cell, "WIDTH")
        self.size = _param(cell, "SIZE")
        self.offset = _param(cell, "OFFSET")
        self.abits = _param(cell, "ABITS")
        self.nrd = _param(cell, "RD_PORTS")
        self.nwr = _param(cell, "WR_PORTS")
        for p in ("RD_WIDE_CONTINUATION", "WR_WIDE_CONTINUATION"):
            if _param(cell, p):
                raise ToolError(f"memory {name}: wide ports ({p}) are not supported")
        for p in ("RD_ARST", "RD_SRST"):
            if any(b != 0 for b in c.get(p, [])):
                raise ToolError(f"memory {name}: read port resets ({p}) are not supported")
        self.rd_sync = _param_bits(cell, "RD_CLK_ENABLE", self.nrd).astype(bool)
        self.transparent = _param_bits(cell, "RD_TRANSPARENCY_MASK", self.nrd * self.nwr)
        self.rd_en = np.array(c.get("RD_EN", [1] * self.nrd), dtype=np.int64)
        self.rd_addr = np.array(c["RD_ADDR"], dtype=np.int64).reshape(self.nrd, self.abits) \
            if self.nrd else np.zeros((0, self.abits), np.int64)
        self.rd_data = np.array(c["RD_DATA"], dtype=np.int64).reshape(self.nrd, self.width) \
            if self.nrd else np.zeros((0, self.width), np.int64)
        if self.nwr:
            self.wr_en = np.array(c["WR_EN"], dtype=np.int64).reshape(self.nwr, self.width)
            self.wr_addr = np.array(c["WR_ADDR"], dtype=np.int64).reshape(self.nwr, self.abits)
            self.wr_data = np.array(c["WR_DATA"], dtype=np.int64).reshape(self.nwr, self.width)
        init = _param_bits(cell, "INIT", self.size * self.width)
        self.init = init.reshape(self.size, self.width) if init.size else \
            np.zeros((self.size, self.width), np.uint8)
        self.rd_init = _param_bits(cell, "RD_INIT_VALUE", self.nrd * self.width) \
            .reshape(self.nrd, self.width) if self.nrd else np.zeros((0, self.width), np.uint8)
        self.weights = (1 << np.arange(self.abits, dtype=np.int64))

    def address(self, v: np.ndarray, nets: np.ndarray) -> int:
        return int(v[nets].astype(np.int64) @ self.weights) - self.offset


class Netlist:
    """A flattened gate netlist (Yosys JSON), prepared for :func:`replay`."""

    def __init__(self, path: str | Path, top: str):
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            mod = data["modules"][top]
        except (OSError, ValueError, KeyError) as e:
            raise ToolError(f"cannot read the flattened netlist {path} (top {top!r}): {e}") \
                from None
        self.top = top
        self.ports = {name: (p["direction"], _bits(p["bits"])) for name, p in mod["ports"].items()}
        n_nets = 2 + max([b for p in self.ports.values() for b in p[1]] +
                         [b for c in mod["cells"].values() for bs in c["connections"].values()
                          for b in _bits(bs)] +
                         [b for w in mod["netnames"].values() for b in _bits(w["bits"])] + [0])
        self.n_nets = n_nets
        self.init = np.zeros(n_nets, dtype=np.uint8)
        self.init[1] = 1
        for w in mod["netnames"].values():
            init = w.get("attributes", {}).get("init")
            if init is None:
                continue
            bits = _bits(w["bits"])
            vals = _param_bits({"parameters": {"i": init}}, "i", len(bits))
            for b, val in zip(bits, vals, strict=True):
                if b > 1:
                    self.init[b] = val
        gates: list[tuple[int, int, list[int], str]] = []  # (type, out, ins, instance)
        dff_d, dff_q, dff_inst = [], [], []
        self.memories: list[_Memory] = []
        clocks = set()
        for name, cell in mod["cells"].items():
            typ = cell["type"]
            if typ == "$scopeinfo":
                continue
            conn = {k: _bits(v) for k, v in cell["connections"].items()}
            inst = instance_path(name, cell)
            if typ in GATE_TABLE:
                pins = GATE_TABLE[typ][0]
                ins = [conn[p][0] for p in pins] + [0] * (4 - len(pins))
                gates.append((_TYPES.index(typ), conn["Y"][0], ins, inst, typ))
            elif typ == "$_DFF_P_":
                dff_d.append(conn["D"][0])
                dff_q.append(conn["Q"][0])
                dff_inst.append(inst)
                clocks.add(conn["C"][0])
            elif typ == "$mem_v2":
                m = _Memory(name, cell)
                clocks.update(b for k in ("RD_CLK", "WR_CLK") for b in conn.get(k, []))
                self.memories.append(m)
            else:
                raise ToolError(f"{path}: cell {name} of type {typ} cannot be simulated "
                                "(expected Yosys generic gates, $_DFF_P_ and $mem_v2)")
        clk = self.ports.get("clk", ("in", [None]))[1][0]
        # (a memory without read or write clock lists constant clock bits)
        if clocks - {clk, 0}:
            raise ToolError(f"{path}: more than one clock net drives the flip-flops/memories")
        self.dff_d = np.array(dff_d, dtype=np.int64)
        self.dff_q = np.array(dff_q, dtype=np.int64)
        self._levelize(gates, path)
        # Cells whose output toggles are counted: every gate, then every flip-flop.
        self.cell_types = [g[4] for g in gates] + ["$_DFF_P_"] * len(dff_q)
        self.cell_inst = [g[3] for g in gates] + dff_inst
        self.cell_out = np.array([g[1] for g in gates] + dff_q, dtype=np.int64)

    def _levelize(self, gates: list, path: Path) -> None:
        """Sort combinational nodes (gates, asynchronous memory read ports) into levels: a
        node's level is one more than the deepest node driving one of its inputs."""
        driver: dict[int, int] = {}
        nodes: list[tuple[list[int], list[int]]] = []  # (inputs, outputs)
        for g in gates:
            driver[g[1]] = len(nodes)
            nodes.append((g[2][:len(GATE_TABLE[g[4]][0])], [g[1]]))
        self.async_reads: list[tuple[int, _Memory, int]] = []  # (node, memory, port)
        for m in self.memories:
            for p in range(m.nrd):
                if not m.rd_sync[p]:
                    node = len(nodes)
                    for b in m.rd_data[p]:
                        driver[int(b)] = node
                    ins = [int(b) for b in m.rd_addr[p]] + [int(m.rd_en[p])]
                    nodes.append((ins, [int(b) for b in m.rd_data[p]]))
                    self.async_reads.append((node, m, p))
        level = np.full(len(nodes), -1, dtype=np.int64)
        state = bytearray(len(nodes))  # 0 new, 1 on the current path, 2 done
        # Iterative depth-first search (netlists are deep; no recursion).
        for start in range(len(nodes)):
            if state[start]:
                continue
            stack = [(start, False)]
            while stack:
                n, expanded = stack.pop()
                if expanded:
                    level[n] = 1 + max((level[driver[i]] for i in nodes[n][0] if i in driver),
                                       default=-1)
                    state[n] = 2
                    continue
                if state[n] == 2:
                    continue
                if state[n] == 1:
                    raise ToolError(f"{path}: combinational loop through nets {nodes[n][1]}")
                state[n] = 1
                stack.append((n, True))
                stack.extend((driver[i], False) for i in nodes[n][0]
                             if i in driver and state[driver[i]] != 2)
        n_gates = len(gates)
        types = np.array([g[0] for g in gates], dtype=np.int64)
        outs = np.array([g[1] for g in gates], dtype=np.int64)
        ins = np.array([g[2] for g in gates], dtype=np.int64).reshape(n_gates, 4)
        glevel = level[:n_gates]
        self.levels: list[tuple[np.ndarray, ...] | tuple[str, int, int]] = []
        reads_at = defaultdict(list)
        for node, m, p in self.async_reads:
            reads_at[int(level[node])].append((m, p))
        for lv in range(int(level.max(initial=-1)) + 1):
            sel = np.nonzero(glevel == lv)[0]
            if sel.size:
                self.levels.append(("gates", types[sel] * 16, ins[sel, 0], ins[sel, 1],
                                    ins[sel, 2], ins[sel, 3], outs[sel]))
            for m, p in reads_at.get(lv, ()):
                self.levels.append(("read", self.memories.index(m), p))
        self.depth = int(level.max(initial=-1)) + 1

    def settle(self, v: np.ndarray, mem: list[np.ndarray]) -> None:
        """Evaluate every combinational node in level order (in place)."""
        for op in self.levels:
            if op[0] == "gates":
                _, base, a, b, c, d, out = op
                v[out] = _LUT[base + (v[a] << 3 | v[b] << 2 | v[c] << 1 | v[d])]
            else:
                _, k, p = op
                m = self.memories[k]
                addr = m.address(v, m.rd_addr[p])
                word = mem[k][addr] if 0 <= addr < m.size else 0
                v[m.rd_data[p]] = word if v[m.rd_en[p]] else v[m.rd_data[p]]

    def clock(self, v: np.ndarray, mem: list[np.ndarray]) -> None:
        """A rising clock edge: flip-flops take D; memories read (synchronous ports) and
        write, reads seeing the old contents unless transparent to the write port."""
        q = v[self.dff_d]
        reads = []
        for k, m in enumerate(self.memories):
            writes = []
            for w in range(m.nwr):
                en = v[m.wr_en[w]]
                if en.any():
                    addr = m.address(v, m.wr_addr[w])
                    if 0 <= addr < m.size:
                        writes.append((addr, en.astype(bool), v[m.wr_data[w]].copy()))
            for p in range(m.nrd):
                if not m.rd_sync[p] or not v[m.rd_en[p]]:
                    continue
                addr = m.address(v, m.rd_addr[p])
                word = mem[k][addr].copy() if 0 <= addr < m.size else np.zeros(m.width,
                                                                                 np.uint8)
                for w, (wa, en, data) in enumerate(writes):
                    if m.transparent[p * m.nwr + w] and wa == addr:
                        word[en] = data[en]
                reads.append((m.rd_data[p], word))
            for addr, en, data in writes:
                mem[k][addr][en] = data[en]
        v[self.dff_q] = q
        for nets, word in reads:
            v[nets] = word

    def initial_state(self) -> tuple[np.ndarray, list[np.ndarray]]:
        v = self.init.copy()
        for m in self.memories:
            for p in range(m.nrd):
                if m.rd_sync[p]:
                    v[m.rd_data[p]] = m.rd_init[p]
        return v, [m.init.copy() for m in self.memories]


def read_vcd_ports(vcd: str | Path, names: list[str], clock: str = "clk"
                   ) -> tuple[dict[str, list[int]], bool]:
    """Values of top-level signals ``names`` just before every rising edge of ``clock`` in a
    VCD file (one integer per edge and signal), and whether the first edge is the clock's
    first value: a clock that starts high (cocotb's clocks do) makes a rising edge at time 0
    for a 2-state simulator, whose signals start at 0. The values sampled for that edge are
    the ones of its own time step, which the simulator evaluated together with the edge; what
    the outputs were before it is not in the trace."""
    values: dict[str, str] = {}
    out: dict[str, list[int]] = {n: [] for n in names}
    with open(vcd) as f:
        codes: dict[str, str] = {}
        for var in read_header(f):
            if var.depth == 1:
                codes.setdefault(var.name, var.code)
        want = [clock, *names]
        missing = [n for n in want if n not in codes]
        if missing:
            raise ToolError(f"{vcd}: no top-level signal {', '.join(missing)}")
        by_code: dict[str, list[str]] = defaultdict(list)
        for n in want:
            by_code[codes[n]].append(n)
        clk_code = codes[clock]
        initial = False

        def sample() -> None:
            for n in names:
                out[n].append(int(values.get(n, "0").replace("x", "0").replace("z", "0"), 2))

        def flush(step: list[tuple[str, str]]) -> None:
            nonlocal initial
            rise = any(code == clk_code and val == "1" for val, code in step)
            first = clock not in values
            if rise and values.get(clock) == "0":
                sample()
            for val, code in step:
                for n in by_code.get(code, ()):
                    values[n] = val
            if rise and first:
                sample()
                initial = True

        for step in steps(f, set(by_code)):
            flush(step)
    return out, initial


def _to_bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> i) & 1 for i in range(width)], dtype=np.uint8)


def replay(net: Netlist, rtl_vcd: str | Path, window: tuple[str, str] | None = None
           ) -> dict[str, Any]:
    """Simulate ``net`` on the inputs of the RTL run traced in ``rtl_vcd``, check its outputs
    against the RTL's at every rising edge, and count toggles.

    ``window = (first, last)`` names two streams: only the evaluations from the rising edge at
    which ``first`` makes its first transfer to the rising edge at which ``last`` makes its
    last transfer are counted (a transfer: ``<stream>__valid`` and ``<stream>__ready`` both 1
    before the edge); otherwise from reset release to the last output transfer. The outputs
    are compared at every rising edge of the trace, the testbench's drain cycles after the last
    transfer included (a stray output there is a mismatch); toggles are counted in the window
    only. Returns ``toggles`` (one count per cell of :attr:`Netlist.cell_out`) and ``edges``
    (rising edges counted)."""
    ins = [n for n, (d, _) in net.ports.items() if d == "input" and n != "clk"]
    outs = [n for n, (d, _) in net.ports.items() if d == "output"]
    trace, initial_edge = read_vcd_ports(rtl_vcd, ins + outs)
    n_edges = len(trace[outs[0]]) if outs else 0
    if n_edges == 0:
        raise ToolError(f"{rtl_vcd}: no rising clock edge")
    if window is not None:
        fv, fr, lv, lr = (trace[f"{s}__{w}"] for s in window for w in ("valid", "ready"))
        first = next((e for e in range(n_edges) if fv[e] and fr[e]), None)
        last = next((e for e in reversed(range(n_edges)) if lv[e] and lr[e]), None)
        if first is None or last is None:
            raise ToolError(f"{rtl_vcd}: stream {window[0] if first is None else window[1]} "
                            "made no transfer")
    else:
        # From reset release to the last transfer of any output stream.
        rst = trace.get("rst", [])
        first = 1 + max((e for e in range(len(rst)) if rst[e]), default=-1)
        last = first
        for n in outs:
            if n.endswith("__valid") and n[:-5] + "ready" in trace:
                v_, r_ = trace[n], trace[n[:-5] + "ready"]
                last = max([last] + [e for e in range(n_edges) if v_[e] and r_[e]])
    in_nets = {n: np.array(net.ports[n][1], dtype=np.int64) for n in ins}
    out_nets = {n: np.array(net.ports[n][1], dtype=np.int64) for n in outs}
    v, mem = net.initial_state()
    toggles = np.zeros(net.cell_out.size, dtype=np.int64)

    def apply_inputs(e: int) -> None:
        for n in ins:
            v[in_nets[n]] = _to_bits(trace[n][e], in_nets[n].size)

    apply_inputs(0)
    net.settle(v, mem)
    for e in range(n_edges):
        for n in outs if e > 0 or not initial_edge else ():
            if not np.array_equal(v[out_nets[n]], _to_bits(trace[n][e], out_nets[n].size)):
                got = sum(int(b) << i for i, b in enumerate(v[out_nets[n]]))
                raise ToolError(f"gate-level output {n} = {got:#x} differs from the RTL's "
                                f"{trace[n][e]:#x} before rising clock edge {e}")
        counting = first <= e <= last
        before = v[net.cell_out].copy() if counting else None
        net.clock(v, mem)
        net.settle(v, mem)  # after the rising edge, inputs unchanged
        if counting:
            now = v[net.cell_out]
            toggles += now != before
            before = now
        if e + 1 < n_edges:
            apply_inputs(e + 1)  # the testbench drives at the falling edge
            net.settle(v, mem)
            if counting and e < last:
                toggles += v[net.cell_out] != before
    return {"toggles": toggles, "edges": last - first + 1, "first_edge": first,
            "last_edge": last, "rtl_edges": n_edges}
