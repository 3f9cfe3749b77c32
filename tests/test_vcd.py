"""The VCD reader shared by the toggle counter and the gate-level replay."""

from __future__ import annotations

import io

from hadware.synth.vcd import read_header, steps

TRACE = """$timescale 1ps $end
$scope module TOP $end
$var wire 1 ! clk $end
$var wire 4 " data [3:0] $end
$scope module dut $end
$var wire 2 # part [5:4] $end
$var wire 1 ! clk $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
1!
b0101 "
#5
0!
b11 #
#10
1!
"""


def test_header_and_steps():
    f = io.StringIO(TRACE)
    hdr = read_header(f)
    assert [(v.scope, v.name, v.width, v.lsb, v.code, v.depth) for v in hdr] == [
        ("TOP", "clk", 1, 0, "!", 1), ("TOP", "data", 4, 0, '"', 1),
        ("TOP.dut", "part", 2, 4, "#", 2), ("TOP.dut", "clk", 1, 0, "!", 2)]
    got = [list(s) for s in steps(f)]
    # (nothing before #0, then one list per time step; the last one after #10)
    assert got == [[], [("1", "!"), ("0101", '"')], [("0", "!"), ("11", "#")], [("1", "!")]]


def test_steps_keep_only_the_codes_asked_for():
    f = io.StringIO(TRACE)
    read_header(f)
    assert [list(s) for s in steps(f, {"#"})] == [[], [], [("11", "#")], []]
