"""Verilog generation: the description matches the emitted module, and the lint is clean."""

from __future__ import annotations

import json
import re

import pytest

from hadware.blocks import BLOCKS
from hadware.config.score_unit import ScoreUnitConfig
from hadware.hw.generate import generate, lint


def verilog_ports(text: str, top: str) -> dict[str, tuple[str, int]]:
    """Ports of module ``top`` read from the Verilog text itself."""
    body = text.split(f"module {top}(", 1)[1].split("endmodule", 1)[0]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:reg\s+)?(?:\[(\d+):0\]\s+)?"
                                           r"([\w$]+);", body, re.M):
        ports[name] = ("in" if direction == "input" else "out", int(msb or 0) + 1)
    return ports


@pytest.mark.parametrize("cfg", [ScoreUnitConfig(d=8, lanes=1), ScoreUnitConfig(d=40, lanes=3)])
def test_description_matches_verilog(tmp_path, cfg):
    paths = generate("score_unit", cfg, tmp_path)
    desc = json.loads(paths["description"].read_text())
    ports = verilog_ports(paths["verilog"].read_text(), "score_unit")
    assert {p["name"]: (p["direction"], p["width"]) for p in desc["ports"]} == ports
    assert desc["config"] == cfg.to_dict() and desc["config_hash"] == cfg.stable_hash()
    assert desc["latency_cycles"] >= 1
    streams = {s["name"]: s for s in desc["streams"]}
    assert streams["i_stream"]["direction"] == "in"
    assert streams["i_stream"]["payload_width"] == ports["i_stream__payload"][1]
    assert streams["o_stream"]["payload_width"] == ports["o_stream__payload"][1]
    fields = {f["name"]: f for f in streams["i_stream"]["fields"]}
    assert fields["q"] == {"name": "q", "offset": 0, "width": cfg.d, "signed": False}
    assert fields["k"]["offset"] == cfg.d and fields["k"]["array"]["length"] == cfg.lanes


def test_regeneration_keeps_unchanged_files(tmp_path):
    cfg = ScoreUnitConfig(d=16, lanes=2)
    v = generate("score_unit", cfg, tmp_path)["verilog"]
    before = v.stat().st_mtime_ns
    generate("score_unit", cfg, tmp_path)
    assert v.stat().st_mtime_ns == before


@pytest.mark.parametrize("cfg", [ScoreUnitConfig(d=8, lanes=1), ScoreUnitConfig(d=64, lanes=4),
                                 ScoreUnitConfig(d=24, lanes=3)])
def test_lint_clean(tmp_path, cfg):
    paths = generate("score_unit", cfg, tmp_path)
    assert lint(paths["verilog"], "score_unit") == []


def test_lint_reports_real_warnings(tmp_path):
    # A width truncation is not waived and must be reported.
    v = tmp_path / "bad.v"
    v.write_text("module bad(input [3:0] a, output [1:0] y);\n  assign y = a;\nendmodule\n")
    warnings = lint(v, "bad")
    assert any("WIDTHTRUNC" in w for w in warnings)


@pytest.mark.parametrize("block", [n for n, b in BLOCKS.items() if not b.extras])
def test_every_block_lints_clean_at_defaults(tmp_path, block):
    from hadware.blocks import get_block

    cfg = get_block(block).config_class()()
    paths = generate(block, cfg, tmp_path)
    assert lint(paths["verilog"], block) == []
    desc = json.loads(paths["description"].read_text())
    assert desc["block"] == block and desc["latency_formula"]
    # Attention variants state their proven error bound (at the defaults it is below 1 ulp
    # only for HAD: 2**(F - O) >= 291.43 (top_k - 1) holds there).
    if hasattr(cfg, "error_bound_ulp"):
        assert desc["error_bound_ulp"] == pytest.approx(cfg.error_bound_ulp)
        assert (desc["error_bound_ulp"] <= 1) == (block == "attention")
    else:
        assert "error_bound_ulp" not in desc


def test_attention_description_has_the_back_to_back_interval(tmp_path):
    """An attention core's description gives its cycles per query back to back at n_max."""
    from hadware.config.attention import AttentionConfig
    from hadware.hw.attention import Attention

    cfg = AttentionConfig(d=16, n_max=10, top_k=3, d_v=2, lanes=3, topk_unit="counting")
    desc = json.loads(generate("attention", cfg, tmp_path)["description"].read_text())
    assert desc["interval_cycles"] == Attention.interval(cfg, cfg.n_max)
    assert desc["interval_cycles"] < Attention.cycles(cfg, cfg.n_max)
    score = json.loads(generate("score_unit", ScoreUnitConfig(d=8, lanes=1),
                                tmp_path / "s")["description"].read_text())
    assert "interval_cycles" not in score
