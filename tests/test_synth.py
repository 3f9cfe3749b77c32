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
    lanes = [m for name, m in area["per_module"].items() if ".lane" in name]
    assert len(lanes) == 2
    assert area["transistors"] == sum(m["transistors_self"] for m in area["per_module"].values())
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
