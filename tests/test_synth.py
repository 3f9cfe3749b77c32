"""Synthesis flow of the score unit: reports exist, are consistent, and scale as expected."""

from __future__ import annotations

import json

import pytest

from hadware.config.score_unit import ScoreUnitConfig
from hadware.synth.flow import synthesize


@pytest.mark.synth
def test_score_unit_report(tmp_path):
    cfg = ScoreUnitConfig(d=32, lanes=2)
    r = synthesize("score_unit", cfg, tmp_path, seeds=2)
    assert json.loads((tmp_path / "report.json").read_text()) == r
    md = (tmp_path / "report.md").read_text()
    assert "CMOS transistor estimate" in md and "fmax" in md
    area = r["area_cmos"]
    # Pipeline registers: per lane the XNOR vector (32 bits), 4 byte scores (5 bits) + 2 sums
    # (6 bits) + 1 sum (7 bits) = 39 bits, less the 7 least significant bits, which are always 0
    # (every partial sum of byte scores 2*popcount - 8 is even) and are removed by synthesis;
    # plus one valid bit per pipeline level (latency 4).
    assert area["flip_flops"] == 2 * (32 + 39 - 7) + 4
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
        # Two placer seeds, two logs; the figure is their median, the path that of a seed.
        assert len(e["fmax_mhz_seeds"]) == 2 and e["seeds"] == 2
        assert e["fmax_mhz_min"] <= e["fmax_mhz"] <= e["fmax_mhz_max"]
        assert e["fmax_mhz"] == sum(e["fmax_mhz_seeds"]) / 2
        assert (tmp_path / f"{fam}_pnr.log").is_file()
        assert (tmp_path / f"{fam}_pnr_seed2.log").is_file()
        p = e["critical_path"]
        assert p["logic_levels"] >= 1 and 0 < p["routing_share"] < 1
        assert p["total_ns"] == pytest.approx(p["logic_ns"] + p["routing_ns"], abs=0.01)
        # the path of a 2-seed median is the lower seed's, and its delay sets that fmax
        # (within the report's rounding)
        assert 1000 / p["total_ns"] == pytest.approx(e["fmax_mhz_min"], rel=0.02)
        assert "median of 2 seeds" in md and f"{fam} critical path" in md


# A nextpnr timing report in the format nextpnr-ecp5 0.7 writes (abridged, values made up).
PNR_LOG = """\
Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.50  0.50 Source dut.cnt_TRELLIS_FF_Q.Q
Info:    routing  1.00  1.50 Net dut.cnt[0] (1,1) -> (2,2)
Info:                          Sink dut.sum_CCU2C_S0$CCU2_COMB0.A
Info:                          Defined in:
Info:                               top.v:1.1-1.2
Info:      logic  0.40  1.90 Source dut.sum_CCU2C_S0$CCU2_COMB0.F
Info:    routing  2.00  3.90 Net dut.sum[3] (2,2) -> (3,3)
Info:                          Sink dut.acc_TRELLIS_FF_Q_2.DI
Info:      setup  0.10  4.00 Source dut.acc_TRELLIS_FF_Q_2.DI
Info: 1.00 ns logic, 3.00 ns routing

Info: Critical path report for cross-domain path 'posedge clk' -> '<async>':
Info:       type curr  total name
Info:   clk-to-q  0.50  0.50 Source sout_TRELLIS_FF_Q.Q
Info:    routing  9.00  9.50 Net sout (1,1) -> (9,9)
Info:                          Sink sout$tr_io.I
Info: 0.50 ns logic, 9.00 ns routing
"""


def test_critical_path_parser():
    from hadware.synth.flow import critical_path, path_text

    p = critical_path(PNR_LOG)
    assert p == {"start": "dut.cnt_TRELLIS_FF_Q.Q", "end": "dut.acc_TRELLIS_FF_Q_2.DI",
                 "start_signal": "dut.cnt", "end_signal": "dut.acc", "logic_levels": 1,
                 "logic_ns": 1.0, "routing_ns": 3.0, "total_ns": 4.0, "routing_share": 0.75}
    assert path_text(p) == "`dut.cnt` -> `dut.acc`: 1 logic levels, 4.00 ns, 75 % routing"
    assert critical_path("Info: Program finished normally.") is None


def test_target_mhz():
    from hadware.errors import HadwareError
    from hadware.synth.flow import check_target

    fpga = {"ecp5": {"fmax_mhz": 120.0, "critical_path": {
        "start_signal": "dut.a", "end_signal": "dut.b", "logic_levels": 9}}}
    check_target(fpga, None, "x")
    check_target(fpga, 120.0, "x")
    with pytest.raises(HadwareError, match=r"^HAD: ecp5 fmax 120\.0 MHz misses --target-mhz "
                       r"150 \(critical path dut\.a -> dut\.b, 9 logic levels\)$"):
        check_target(fpga, 150.0, "HAD")
    with pytest.raises(HadwareError, match=r"no ecp5 fmax \(does not fit the device\)"):
        check_target({"ecp5": {"fmax_mhz": None, "reason": "does not fit the device"}}, 1.0,
                     "std")


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
    # the queue of the queries' k (three queries in flight at most with the merging top-k)
    assert (mems["storage"]["depth"], mems["storage"]["width"]) == (3, 2)
    assert r["area_cmos"]["storage_bits"] == 4 * 48 + 10 * 16 + 3 * 2 + 17 * 9
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
    # iCE40UP5K: 5,280 logic cells, 8 SB_MAC16, 30 RAM4K.
    assert exceeds_device(dict(small, lut=5280, dsp=8, bram=30), "up5k") is None
    assert exceeds_device(dict(small, lut=5281, dsp=9), "up5k") == \
        "does not fit the device (5,281 LUT > 5,280, 9 DSP > 8)"


def test_device_families():
    from hadware.errors import HadwareError
    from hadware.synth.flow import DEVICES, check_families, synth_command

    assert synth_command("ice40", "b") == "synth_ice40 -top b"
    assert synth_command("ecp5", "w", "n.json") == "synth_ecp5 -top w -json n.json"
    # the UP5K: the output scaler's multipliers marked to stay out of the multiplier blocks
    assert synth_command("up5k", "w", "n.json").splitlines() == [
        "synth_ice40 -dsp -top w -run begin:coarse",
        "chtype -set $__soft_mul t:$mul c:*scale.* %i",
        "synth_ice40 -dsp -top w -run coarse: -json n.json"]
    check_families(("up5k", "ecp5"))
    # the HeAP-placed ECP5: the same device and synthesis, another placer
    assert DEVICES["ecp5_heap"]["args"] == [
        "--85k", "--package", "CABGA381", "--lpf-allow-unconstrained", "--placer", "heap",
        "--router", "router1"]
    assert synth_command("ecp5_heap", "w") == synth_command("ecp5", "w")
    with pytest.raises(HadwareError, match=r"^FPGA families up5k,xc7: expected some of ice40, "
                       r"up5k, ecp5, ecp5_heap; unknown: xc7$"):
        check_families(("up5k", "xc7"))
    with pytest.raises(HadwareError, match=r"^FPGA families \(none\): expected some of"):
        check_families(())


@pytest.mark.synth
def test_up5k_maps_multipliers_to_dsp_blocks(tmp_path):
    """The UP5K flow puts the weight multipliers of a small attention core into SB_MAC16 blocks,
    one per value column (9-bit weights times int8 values), and the output scaler's into LUTs;
    the HX8K flow (no DSP blocks) builds them all from LUTs."""
    from hadware.config.attention import AttentionConfig
    from hadware.synth.flow import synthesize_fpga

    cfg = AttentionConfig(d=16, n_max=10, top_k=3, d_v=2, lanes=3, exp_frac_bits=8,
                          out_frac_bits=4)
    f = synthesize_fpga("attention", cfg, tmp_path, fmax=False, families=("ice40", "up5k"))
    assert f["ice40"]["dsp"] == 0 and f["up5k"]["dsp"] == cfg.d_v
    assert f["up5k"]["lut"] < f["ice40"]["lut"]


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

    # Every submodule maps as before, and the lanes merged into lane0 are copies of it. A
    # module may differ by a few gates: ABC's result depends a little on the order of the
    # netlist, and Yosys numbers its internal wires with one counter for the whole design, so
    # a module's internal names (and their order) depend on what was processed before it.
    plain, merged_stat = stats
    for name in plain["modules"]:
        if name != "\\attention" and name not in merged:
            got, want = transistors(merged_stat, name), transistors(plain, name)
            assert abs(got - want) <= 0.005 * want, (name, got, want)
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


@pytest.mark.parametrize("args, pattern", [
    (["--seeds", "0"], r"^--seeds must be an integer of at least 1, not 0$"),
    (["--target-mhz", "-5"], r"^--target-mhz -5: expected a positive frequency in MHz$"),
    (["--target-mhz", "nan"], r"^--target-mhz nan: expected a positive frequency"),
    (["--target-mhz", "50", "--no-fmax"], r"^--target-mhz 50 needs place and route"),
    (["--fit-lanes"], r"^--fit-lanes applies to 'synth compare' only, not to score_unit$"),
    (["--fpga", "up5k,xc7"], r"^FPGA families up5k,xc7: expected some of ice40, up5k, "
                             r"ecp5, ecp5_heap; unknown: xc7$"),
    (["--fpga", ","], r"^FPGA families \(none\): expected some of"),
])
def test_synth_timing_options_refused(tmp_path, capsys, args, pattern):
    """Bad --seeds / --target-mhz: one line, exit 1, nothing written."""
    import re

    from hadware.cli import main

    out = tmp_path / "out"
    assert main(["synth", "score_unit", "-o", str(out), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0].removeprefix("hadware: error: ")), err
    assert not out.exists()


@pytest.mark.synth
def test_synth_cli_target_missed(tmp_path, capsys):
    """`hadware synth --target-mhz` above what the block reaches: exit 1 naming the block,
    the fmax and the target, the report written first; a target it meets passes."""
    from hadware.cli import main

    (tmp_path / "su.json").write_text(ScoreUnitConfig(d=8, lanes=2).to_json())
    common = ["synth", "score_unit", "--config", str(tmp_path / "su.json")]
    assert main([*common, "-o", str(tmp_path / "a"), "--target-mhz", "5000"]) == 1
    err = capsys.readouterr().err
    assert "score_unit: ecp5 fmax" in err and "misses --target-mhz 5000" in err
    r = json.loads((tmp_path / "a" / "report.json").read_text())
    assert main([*common, "-o", str(tmp_path / "b"),
                 "--target-mhz", f"{r['fpga']['ecp5']['fmax_mhz'] - 1:.1f}"]) == 0


def test_compare_refuses_fpga(tmp_path, capsys):
    """--fpga chooses the devices of 'synth BLOCK'; the comparisons have their own."""
    from hadware.cli import main

    out = tmp_path / "out"
    assert main(["synth", "compare", "-o", str(out), "--fpga", "up5k"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hadware: error: --fpga up5k: applies to 'synth BLOCK' only, not to "
                   "'synth compare'"]
    assert not out.exists()
