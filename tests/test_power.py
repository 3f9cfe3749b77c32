"""Gate-level switching-activity energy estimate."""

from __future__ import annotations

import numpy as np
import pytest

from hadware.config.score_unit import ScoreUnitConfig
from hadware.config.topk import TopKConfig
from hadware.errors import ToolError
from hadware.golden.topk import run_vectors as topk_golden
from hadware.synth.power import CELL_WEIGHT, count_toggles, estimate_energy, parse_netlist

VCD = """$timescale 1ps $end
$scope module TOP $end
$var wire 1 ! clk $end
$scope module dut $end
$var wire 3 " bus [2:0] $end
$var wire 1 # bit $end
$var wire 1 $ quiet $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
0!
b000 "
0#
1$
#5
1!
b101 "
1#
#10
0!
b100 "
#15
1!
b011 "
0#
"""


def test_count_toggles_by_hand(tmp_path):
    p = tmp_path / "t.vcd"
    p.write_text(VCD)
    t, edges = count_toggles(p)
    assert edges == 2
    # bus: 000 -> 101 -> 100 -> 011: bit0 toggles 1,1,1; bit1 0,0,1; bit2 1,0,1.
    assert t[("TOP.dut", "bus", 0)] == 3
    assert t[("TOP.dut", "bus", 1)] == 1
    assert t[("TOP.dut", "bus", 2)] == 2
    assert t[("TOP.dut", "bit", 0)] == 2
    assert t[("TOP.dut", "quiet", 0)] == 0


WINDOW_VCD = """$timescale 1ps $end
$scope module TOP $end
$var wire 1 ! clk $end
$var wire 1 % a__valid $end
$var wire 1 & a__ready $end
$var wire 1 ' b__valid $end
$var wire 1 ( b__ready $end
$scope module dut $end
$var wire 2 " bus [1:0] $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
0!
0%
1&
0'
1(
b00 "
#2
b01 "
#5
1!
#10
0!
1%
#15
1!
b11 "
#20
0!
0%
1'
#25
1!
b10 "
#30
0!
0'
#35
1!
b00 "
"""


def test_count_toggles_window(tmp_path):
    p = tmp_path / "w.vcd"
    p.write_text(WINDOW_VCD)
    # Without a window: every change after the first value.
    t, edges = count_toggles(p)
    assert edges == 4
    assert (t[("TOP.dut", "bus", 0)], t[("TOP.dut", "bus", 1)]) == (2, 2)  # 00 01 11 10 00
    # Window: from the edge at 15 (first 'a' transfer) to the edge at 25 (last 'b' transfer).
    t, edges = count_toggles(p, window=("a", "b"))
    assert edges == 2
    assert (t[("TOP.dut", "bus", 0)], t[("TOP.dut", "bus", 1)]) == (1, 1)
    assert t[("TOP", "clk", 0)] == 3  # 15 up, 20 down, 25 up
    assert t[("TOP", "a__valid", 0)] == 1 and t[("TOP", "b__valid", 0)] == 1
    with pytest.raises(ToolError, match="c__valid"):
        count_toggles(p, window=("c", "b"))


def test_parse_netlist():
    text = r"""
module top(a, b, y);
  input a; input b; output y; wire _1_;
  \$_NAND_  _5_ (
    .A(a),
    .B(b),
    .Y(_1_)
  );
  \$_DFF_P_  \r_reg[2]  /* _6_ */ (
    .C(clk),
    .D(_1_),
    .Q(\r [2])
  );
  \top.sub  sub (
    .x(_1_)
  );
endmodule
module \top.sub (x);
  input x;
  \$_NOT_  _1_ (
    .A(x),
    .Y(y)
  );
endmodule
"""
    mods = parse_netlist(text)
    assert mods["top"]["cells"] == [("$_NAND_", "_1_"), ("$_DFF_P_", r"\r [2]")]
    assert mods["top"]["subs"] == [("top.sub", "sub")]
    assert mods["top.sub"]["cells"] == [("$_NOT_", "y")]
    assert all(t in CELL_WEIGHT for t in ("$_NAND_", "$_DFF_P_", "$_NOT_"))


def vectors(cfg, m, seed):
    rng = np.random.default_rng(seed)
    pm1 = np.array([-1, 1], np.int8)
    return {"q": rng.choice(pm1, (m, cfg.d)), "k": rng.choice(pm1, (2 * cfg.lanes, cfg.d))}


@pytest.mark.sim
@pytest.mark.synth
def test_score_unit_energy(tmp_path):
    cfg = ScoreUnitConfig(d=16, lanes=2)
    r = estimate_energy("score_unit", cfg, vectors(cfg, 6, seed=1), tmp_path / "a")
    assert r["gate_level_matches_rtl"] and r["untraced_cell_outputs"] == 0
    lanes = [v for k, v in r["per_instance"].items() if ".lane" in k]
    assert len(lanes) == 2 and all(v["data"] > 0 and v["flip_flops"] > 0 for v in lanes)
    assert r["energy_total"] == pytest.approx(
        sum(v["data"] + v["clock"] for v in r["per_instance"].values()))
    # All-equal inputs switch (almost) nothing but the clock: far less data energy.
    q = np.ones((6, 16), np.int8)
    quiet = estimate_energy("score_unit", cfg, {"q": q, "k": np.ones((4, 16), np.int8)},
                            tmp_path / "b")
    data = lambda rep: sum(v["data"] for v in rep["per_instance"].values())  # noqa: E731
    assert data(quiet) < 0.3 * data(r)


@pytest.mark.sim
@pytest.mark.synth
@pytest.mark.full
def test_gate_level_mismatch_is_refused(tmp_path):
    cfg = TopKConfig(top_k=2, lanes=2, n_max=6, score_width=5)
    rng = np.random.default_rng(2)
    arrays = {"scores": rng.integers(-16, 16, (3, 6))}
    wrong = topk_golden(cfg, arrays)
    wrong["topk_score"][0, 0] += 1
    with pytest.raises(ToolError, match="does not match the RTL"):
        estimate_energy("topk", cfg, arrays, tmp_path, rtl_outputs=wrong, engine="verilator")
