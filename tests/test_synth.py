"""Synthesis flow of the score unit: reports exist, are consistent, and scale as expected."""

from __future__ import annotations

import json

import pytest

from hadware.config.score_unit import ScoreUnitConfig
from hadware.synth.flow import synthesize


@pytest.mark.synth
def test_score_unit_report(tmp_path):
    cfg = ScoreUnitConfig(d=32, lanes=2)
    r = synthesize("score_unit", cfg, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == r
    md = (tmp_path / "report.md").read_text()
    assert "CMOS transistor estimate" in md and "fmax" in md
    area = r["area_cmos"]
    # Pipeline registers: per lane 4 byte scores (5 bits) + 2 sums (6 bits) + 1 sum (7 bits)
    # = 39 bits, less the 7 least significant bits, which are always 0 (every partial sum of
    # byte scores 2*popcount - 8 is even) and are removed by synthesis; plus one valid bit per
    # pipeline level (latency 3).
    assert area["flip_flops"] == 2 * (39 - 7) + 3
    # Two lane instances (Amaranth writes the lanes' ports differently, so they stay two
    # modules here; see test_shared_modules_keep_the_area for merged ones).
    lanes = [m for name, m in area["per_module"].items() if name.endswith((".lane0", ".lane1"))]
    assert sum(m["instances"] for m in lanes) == 2
    assert area["transistors"] == sum(m["transistors_self"] * m["instances"]
                                      for m in area["per_module"].values())
    for fam in ("ice40", "ecp5"):
        e = r["fpga"][fam]
        assert e["lut"] > 0 and e["ff"] == area["flip_flops"] and e["dsp"] == 0
        assert e["fmax_mhz"] is not None and 20 < e["fmax_mhz"] < 1000


@pytest.mark.synth
def test_area_grows_with_lanes(tmp_path):
    a1 = synthesize("score_unit", ScoreUnitConfig(d=64, lanes=1), tmp_path / "l1", fmax=False)
    a4 = synthesize("score_unit", ScoreUnitConfig(d=64, lanes=4), tmp_path / "l4", fmax=False)
    t1, t4 = a1["area_cmos"]["transistors"], a4["area_cmos"]["transistors"]
    assert 3.5 * t1 < t4 < 4.5 * t1


@pytest.mark.synth
def test_memories_are_storage_not_logic(tmp_path):
    from hadware.config.attention import AttentionConfig

    cfg = AttentionConfig(d=16, n_max=10, top_k=3, d_v=2, lanes=3, exp_frac_bits=8,
                          out_frac_bits=4)
    r = synthesize("attention", cfg, tmp_path, fmax=False)
    mems = {m["name"]: m for m in r["memories"]}
    assert (mems["key_mem"]["depth"], mems["key_mem"]["width"]) == (4, 3 * 16)
    assert (mems["value_mem"]["depth"], mems["value_mem"]["width"]) == (10, 8 * 2)
    assert (mems["exp_lut"]["depth"], mems["exp_lut"]["width"]) == (17, 9)
    assert mems["key_mem"]["kind"] == "ram" and mems["exp_lut"]["kind"] == "rom"
    assert r["area_cmos"]["storage_bits"] == 4 * 48 + 10 * 16 + 17 * 9
    # Context storage as flip-flops would need >= 352 of them; the logic has far fewer
    # flip-flops than the full design state would if memories were mapped to logic.
    assert r["area_cmos"]["transistors"] > 0


def test_exceeds_device():
    from hadware.synth.flow import exceeds_device

    small = {"lut": 100, "ff": 50, "carry": 10, "dsp": 0, "bram": 2}
    assert exceeds_device(small, "ice40") is None
    assert exceeds_device(small, "ecp5") is None
    assert exceeds_device(dict(small, lut=7681), "ice40") == \
        "does not fit the device (7,681 LUT > 7,680)"
    # ECP5: a carry cell takes two LUT4s; multipliers beyond the 156 DSP blocks.
    assert exceeds_device(dict(small, lut=83000, carry=400, dsp=157), "ecp5") == \
        "does not fit the device (83,800 LUT > 83,640, 157 DSP > 156)"
    assert exceeds_device(dict(small, lut=83000, carry=320), "ecp5") is None


SHARE_TEXT = """\
(* top =  1  *)
(* generator = "Amaranth" *)
module top(a, y);
  \\top.p0  p0 (.a(a), .y(y[0]));
  \\top.p1  p1 (.a(a), .y(y[1]));
  \\top.q  q (.a(a), .y(y[2]));
endmodule

(* generator = "Amaranth" *)
module \\top.p0 (a, y);
  \\top.p0.leaf  leaf (.a(a), .y(y));
endmodule

(* generator = "Amaranth" *)
module \\top.p0.leaf (a, y);
  assign y = ~a;
endmodule

(* generator = "Amaranth" *)
module \\top.p1 (a, y);
  \\top.p1.leaf  leaf (.a(a), .y(y));
endmodule

(* generator = "Amaranth" *)
module \\top.p1.leaf (a, y);
  assign y = ~a;
endmodule

(* generator = "Amaranth" *)
module \\top.q (a, y);
  assign y = a;
endmodule
"""


def test_share_modules_text():
    from hadware.synth.flow import share_modules

    text, merged = share_modules(SHARE_TEXT)
    # The leaves merge first, which makes the parents identical: they merge next.
    assert merged == {"\\top.p1.leaf": "\\top.p0.leaf", "\\top.p1": "\\top.p0"}
    assert text.count("module ") == 4 and "top.p1" not in text
    assert "  \\top.p0  p1 (.a(a), .y(y[1]));" in text
    assert "  \\top.q  q (" in text  # a different module stays
    assert share_modules(text) == (text, {})


@pytest.mark.synth
def test_shared_modules_keep_the_area(tmp_path):
    """The CMOS estimate of a design is the same with identical modules merged or not."""
    from hadware.config.attention import AttentionConfig
    from hadware.hw.generate import verilog_text
    from hadware.synth.flow import CMOS_SCRIPT, share_modules, yosys_script

    cfg = AttentionConfig(d=16, n_max=12, top_k=3, d_v=2, lanes=3, exp_frac_bits=8,
                          out_frac_bits=4)
    text, _ = verilog_text("attention", cfg)
    shared, merged = share_modules(text)
    assert merged == {"\\attention.lane1": "\\attention.lane0",
                      "\\attention.lane2": "\\attention.lane0",
                      "\\attention.topk.row1": "\\attention.topk.row0",
                      "\\attention.topk.row2": "\\attention.topk.row0",
                      "\\attention.wsum.wsum_mul1": "\\attention.wsum.wsum_mul0"}
    stats = []
    for name, t in (("plain", text), ("shared", shared)):
        (tmp_path / f"{name}.v").write_text(t)
        yosys_script(CMOS_SCRIPT.format(src=f"{name}.v", top="attention",
                                        out=f"{name}.json"), tmp_path, name, 600)
        stats.append(json.loads((tmp_path / f"{name}.json").read_text()))

    def transistors(stat, module=None):
        m = stat["design"] if module is None else stat["modules"][module]
        return int(str(m["estimated_num_transistors"]).rstrip("+"))

    # Every submodule maps exactly as before, and the lanes merged into lane0 are copies of it.
    # The top module's own logic may differ by a few gates: ABC's result depends a little on
    # the order of the netlist, which the renamed instances change.
    plain, merged_stat = stats
    for name in plain["modules"]:
        if name != "\\attention" and name not in merged:
            assert transistors(merged_stat, name) == transistors(plain, name), name
    lanes = [transistors(plain, f"\\attention.lane{j}") for j in range(3)]
    assert lanes == [lanes[0]] * 3
    assert abs(transistors(merged_stat) - transistors(plain)) < 0.005 * transistors(plain)


@pytest.mark.synth
def test_fpga_flow_flattens_after_an_abc9_assertion(tmp_path, monkeypatch):
    import hadware.synth.flow as flow
    from hadware.errors import ToolError

    real = flow.yosys_script
    calls = []

    def failing_with_kept_modules(script, cwd, name, timeout):
        calls.append((name, "keep_hierarchy" in script))
        if name == "ecp5" and "keep_hierarchy" in script:
            raise ToolError("yosys (ecp5) failed (exit 1):\nERROR: Assert `x' failed in y.cc")
        return real(script, cwd, name, timeout)

    monkeypatch.setattr(flow, "yosys_script", failing_with_kept_modules)
    real_keep = flow.keep_script
    monkeypatch.setattr(flow, "keep_script",
                        lambda modules: real_keep(set(modules) | {"score_unit.lane0"}))
    r = synthesize("score_unit", ScoreUnitConfig(d=16, lanes=2), tmp_path)
    # ice40: one synthesis with the block kept inside the fmax wrapper; ecp5: that fails, so
    # the bare block is synthesized flat for its cells and the wrapper flat for nextpnr.
    assert calls == [("cmos", False), ("ice40", True), ("ecp5", True), ("ecp5", False),
                     ("ecp5_wrapped", False)]
    assert r["fpga"]["ecp5"]["flattened"] is True and r["fpga"]["ice40"]["flattened"] is False
    for fam in ("ice40", "ecp5"):
        assert r["fpga"][fam]["ff"] == r["area_cmos"]["flip_flops"]
        assert r["fpga"][fam]["fmax_mhz"] > 20


def test_cells_below_counts_instances_and_skips_the_wrapper():
    from hadware.errors import ToolError
    from hadware.synth.flow import cells_below

    stat = {"modules": {
        "\\wrapper": {"num_cells_by_type": {"FF": 5, "\\top": 1}},
        "\\top": {"num_cells_by_type": {"LUT4": 2, "\\sub": 3}},
        "\\sub": {"num_cells_by_type": {"LUT4": 1, "FF": 2}},
        "\\unused": {"num_cells_by_type": {"LUT4": 100}},
    }}
    assert cells_below(stat, "top") == {"LUT4": 2 + 3 * 1, "FF": 3 * 2}
    assert cells_below(stat, "wrapper") == {"FF": 5 + 6, "LUT4": 5}
    with pytest.raises(ToolError, match="'nope' not found"):
        cells_below(stat, "nope")


@pytest.mark.synth
def test_yosys_failure_names_the_error_and_the_step(tmp_path):
    from hadware.errors import ToolError
    from hadware.tools import run_yosys

    (tmp_path / "broken.v").write_text("module broken(input a, output y);\n  assign y = ;\n"
                                       "endmodule\n")
    with pytest.raises(ToolError) as info:
        run_yosys("read_verilog broken.v\n", cwd=tmp_path, name="bad", timeout=120)
    msg = str(info.value)
    assert msg.startswith("yosys (bad) failed") and "broken.v:2" in msg
    assert msg.count("ERROR") == 1
    assert msg.endswith(f"last step in {tmp_path / 'bad.log'}: "
                        "1. Executing Verilog-2005 frontend: broken.v")


def test_yosys_trap_is_reported_from_the_log(tmp_path, monkeypatch):
    import hadware.tools as tools
    from hadware.errors import ToolError

    def trapped(cmd, *, cwd, what, timeout=None, env=None):
        (cwd / "t.log").write_text("1. Executing Verilog-2005 frontend: a.v\n\n"
                                   "2. Printing statistics.\n")
        raise ToolError(f"{what} failed (exit 1):\nwasmtime._trap.Trap: error while executing"
                        "\n    0: 0x3e6a19 - yosys.wasm!main")

    monkeypatch.setattr(tools, "run_tool", trapped)
    with pytest.raises(ToolError) as info:
        tools.run_yosys("stat\n", cwd=tmp_path, name="t")
    assert str(info.value) == ("yosys (t) stopped with an internal error (WebAssembly trap)\n"
                               f"last step in {tmp_path / 't.log'}: 2. Printing statistics.")
    assert (tmp_path / "t.ys").read_text() == "stat\n"


@pytest.mark.synth
def test_fpga_flow_flattens_only_the_module_abc9_fails_on(tmp_path, monkeypatch):
    import hadware.synth.flow as flow
    from hadware.errors import ToolError

    # (the CMOS flow writes the shared Verilog the FPGA flows read)
    r = synthesize("score_unit", ScoreUnitConfig(d=16, lanes=2), tmp_path, fpga=False)
    real = flow.yosys_script
    calls = []

    def failing_on_lane0(script, cwd, name, timeout):
        lane_kept = "keep_hierarchy 1 \\score_unit.lane0" in script
        calls.append((name, lane_kept))
        if lane_kept:
            (cwd / f"{name}.log").write_text(
                "Extracted 120 AND gates and 0 wires from module `score_unit.lane0' to a "
                "netlist network with 40 inputs and 20 outputs.\n"
                "ERROR: Assert `count_id(wire->name) == 0' failed in kernel/rtlil.cc.\n")
            raise ToolError(f"yosys ({name}) failed (exit 1)")
        return real(script, cwd, name, timeout)

    monkeypatch.setattr(flow, "yosys_script", failing_on_lane0)
    keep = {"\\score_unit.lane0", "\\score_unit.lane1"}
    flat, unkept = flow._synth_kept("score_unit", "ecp5", keep, False, None, tmp_path, 600)
    assert calls == [("ecp5", True), ("ecp5", False)]
    assert flat is False and unkept == ["score_unit.lane0"]
    stat = json.loads((tmp_path / "stat_ecp5.json").read_text())
    assert "\\score_unit.lane1" in stat["modules"] and "\\score_unit.lane0" not in stat["modules"]
    cells = flow.fpga_cells(stat, "ecp5", "score_unit")
    assert cells["ff"] == r["area_cmos"]["flip_flops"]
