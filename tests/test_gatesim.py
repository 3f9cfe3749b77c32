"""The levelized gate-level simulator against Verilator, and its checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hadware.config.attention import AttentionConfig
from hadware.errors import ToolError
from hadware.synth.gatesim import GATE_TABLE, Netlist, read_vcd_ports
from hadware.synth.power import estimate_energy

SMALL = AttentionConfig(d=16, n_max=16, top_k=4, d_v=4, lanes=2, temperature=0.25,
                        exp_frac_bits=12, out_frac_bits=8)
#: The fast tier's cross-check: Verilator's build of a flattened netlist grows with its gates.
TINY = AttentionConfig(d=8, n_max=8, top_k=2, d_v=2, lanes=2, temperature=0.25,
                       exp_frac_bits=8, out_frac_bits=6)


def _inputs(cfg, seed):
    rng = np.random.default_rng(seed)
    pm1 = np.array([-1, 1], np.int8)
    return {"q": rng.choice(pm1, (3, cfg.d)), "k": rng.choice(pm1, (cfg.n_max, cfg.d)),
            "v": rng.integers(-128, 128, (cfg.n_max, cfg.d_v)).astype(np.int8)}


@pytest.mark.sim
@pytest.mark.synth
@pytest.mark.parametrize("cfg", [TINY, pytest.param(SMALL, marks=pytest.mark.full)],
                         ids=["tiny", "small"])
def test_levelized_engine_counts_what_verilator_counts(cfg, tmp_path):
    from hadware.synth.flow import synthesize
    from hadware.tb.runner import simulate

    arrays = _inputs(cfg, 5)
    synthesize("attention", cfg, tmp_path / "synth", fpga=False)
    netlist = tmp_path / "synth" / "gates.v"
    # Random idles and stalls on both sides: the replay follows the run's handshakes.
    stalls = {"idle_prob": 0.3, "stall_prob": 0.3}
    rtl = simulate("attention", cfg, arrays, seed=3, waves=True, golden=True, **stalls)
    window = ("q_stream", "o_stream")
    fast = estimate_energy("attention", cfg, arrays, tmp_path / "lv", netlist=netlist,
                           rtl_outputs=rtl.outputs, rtl_vcd=rtl.waves, window=window)
    slow = estimate_energy("attention", cfg, arrays, tmp_path / "vl", netlist=netlist,
                           rtl_outputs=rtl.outputs, window=window, seed=3, engine="verilator",
                           **stalls)
    assert fast["engine"] == "levelized" and slow["engine"] == "verilator"
    assert fast["cycles"] == slow["cycles"] > 0
    assert fast["energy_total"] == slow["energy_total"] > 0
    assert fast["per_instance"] == slow["per_instance"]

    # A netlist that computes something else is refused: every XOR becomes an XNOR.
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(netlist, bad / "gates.v")
    data = json.loads((tmp_path / "synth" / "gates_flat.json").read_text())
    flipped = 0
    for cell in data["modules"]["attention"]["cells"].values():
        if cell["type"] == "$_XOR_":
            cell["type"] = "$_XNOR_"
            flipped += 1
    assert flipped > 0
    (bad / "gates_flat.json").write_text(json.dumps(data))
    with pytest.raises(ToolError, match="does not match the RTL"):
        estimate_energy("attention", cfg, arrays, tmp_path / "bad_out", netlist=bad / "gates.v",
                        rtl_outputs=rtl.outputs, rtl_vcd=rtl.waves, window=window)

    # A stray output beat after the last transfer (valid raised in the drain, ready low, so
    # no transfer extends the window) is still a mismatch: outputs are compared at every edge.
    stray = tmp_path / "stray.vcd"
    stray.write_text(_with_stray_valid(rtl.waves.read_text()))
    with pytest.raises(ToolError, match=r"gate-level output o_stream__valid = 0x0 differs from "
                                        r"the RTL's 0x1"):
        estimate_energy("attention", cfg, arrays, tmp_path / "stray_out", netlist=netlist,
                        rtl_outputs=rtl.outputs, rtl_vcd=stray, window=window)


def _with_stray_valid(vcd: str) -> str:
    """The trace with one more clock cycle at its end in which o_stream is valid and not
    ready (every scope's copy of the ports changed)."""
    ids: dict[str, list[str]] = {}
    for line in vcd.splitlines():
        parts = line.split()
        if parts[:1] == ["$var"] and parts[4] in ("o_stream__valid", "o_stream__ready", "clk"):
            ids.setdefault(parts[4], []).append(parts[3])
        if line.startswith("$enddefinitions"):
            break
    t = max(int(line[1:]) for line in vcd.splitlines() if line.startswith("#"))
    step = 5000
    lines = [f"#{t + step}", *(f"0{i}" for i in ids["clk"]),
             *(f"1{i}" for i in ids["o_stream__valid"]), *(f"0{i}" for i in ids["o_stream__ready"]),
             f"#{t + 2 * step}", *(f"1{i}" for i in ids["clk"]),
             f"#{t + 3 * step}", *(f"0{i}" for i in ids["clk"])]
    return vcd.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def _netlist_json(cells: dict, ports: dict) -> dict:
    return {"modules": {"t": {"ports": ports, "cells": cells, "netnames": {}}}}


def test_combinational_loop_is_refused(tmp_path):
    cells = {"a": {"type": "$_NOT_", "connections": {"A": [3], "Y": [4]}},
             "b": {"type": "$_AND_", "connections": {"A": [4], "B": [2], "Y": [3]}}}
    p = tmp_path / "loop.json"
    p.write_text(json.dumps(_netlist_json(cells, {"x": {"direction": "input", "bits": [2]}})))
    with pytest.raises(ToolError, match="combinational loop"):
        Netlist(p, "t")


def test_levels_and_truth_tables(tmp_path):
    # y = MUX(s ? b : a) of a = x0 & x1 and b = ~x0, two levels deep; checked on all inputs.
    cells = {"g1": {"type": "$_AND_", "connections": {"A": [2], "B": [3], "Y": [5]}},
             "g2": {"type": "$_NOT_", "connections": {"A": [2], "Y": [6]}},
             "g3": {"type": "$_MUX_", "connections": {"A": [5], "B": [6], "S": [4], "Y": [7]}}}
    ports = {"x": {"direction": "input", "bits": [2, 3, 4]},
             "y": {"direction": "output", "bits": [7]}}
    p = tmp_path / "n.json"
    p.write_text(json.dumps(_netlist_json(cells, ports)))
    net = Netlist(p, "t")
    assert net.depth == 2
    for x in range(8):
        x0, x1, s = x & 1, (x >> 1) & 1, (x >> 2) & 1
        v, mem = net.initial_state()
        v[[2, 3, 4]] = [x0, x1, s]
        net.settle(v, mem)
        assert v[7] == ((1 - x0) if s else (x0 & x1))
    assert set(GATE_TABLE) >= {"$_AND_", "$_MUX_", "$_XNOR_", "$_AOI4_"}


def test_unknown_cell_is_refused(tmp_path):
    cells = {"m": {"type": "$mul", "connections": {"A": [2], "B": [2], "Y": [3]}}}
    p = tmp_path / "n.json"
    p.write_text(json.dumps(_netlist_json(cells, {})))
    with pytest.raises(ToolError, match=r"\$mul cannot be simulated"):
        Netlist(p, "t")


VCD = """$timescale 1ps $end
$scope module TOP $end
$var wire 1 ! clk $end
$var wire 4 " bus [3:0] $end
$scope module dut $end
$var wire 4 # bus [3:0] $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
0!
b0001 "
#5
1!
#7
b0010 "
#10
0!
#15
1!
b0111 "
#20
0!
#25
1!
"""


def test_vcd_ports_are_sampled_before_each_rising_edge(tmp_path):
    p = tmp_path / "t.vcd"
    p.write_text(VCD)
    # Edge at 5 sees 1, at 15 sees 2 (the change at 15 comes with the edge), at 25 sees 7.
    assert read_vcd_ports(p, ["bus"]) == ({"bus": [1, 2, 7]}, False)
    # A clock that starts high: an edge at time 0, sampled with the values of its own step.
    p.write_text(VCD.replace("#0\n0!", "#0\n1!").replace("#5\n1!", "#5\n0!"))
    assert read_vcd_ports(p, ["bus"]) == ({"bus": [1, 2, 7]}, True)
    with pytest.raises(ToolError, match="no top-level signal nope"):
        read_vcd_ports(p, ["nope"])
