"""The HAD-versus-baselines comparison on a tiny configuration (the full-size run is a
benchmark, documented in the README, not a test)."""

from __future__ import annotations

import json

import pytest

from hadware.blocks import get_block
from hadware.config.attention import AttentionConfig
from hadware.synth.compare import CATEGORIES, category, compare


def test_categories():
    assert category("attention.lane3") == "scoring"
    assert category("attention.topk") == "top-k"
    assert category("int8_topk_attention.topk.row7") == "top-k"
    # a top-k unit's own lanes and cells are the top-k's, not the scoring's
    assert category("attention.topk.lane3") == "top-k"
    assert category("int8_topk_attention.topk.lane4_cell0") == "top-k"
    assert category("std_attention.wsum0.exp.exp_scale") == "softmax + weighted sum"
    assert category("attention.wsum") == "softmax + weighted sum"
    assert category("attention.divider") == "normalisation"
    assert category("attention.scale") == "normalisation"
    assert category("attention") == "control"
    assert set(CATEGORIES) >= {"scoring", "top-k", "control"}


@pytest.mark.sim
@pytest.mark.synth
@pytest.mark.full
def test_compare_report(tmp_path):
    cfg = AttentionConfig(d=8, n_max=6, top_k=2, d_v=1, lanes=2, exp_frac_bits=8,
                          out_frac_bits=2)
    r = compare(cfg, tmp_path, queries=2, fmax=False, jobs=1, names=["attention"])
    assert json.loads((tmp_path / "report.json").read_text()) == r
    (had,) = r["designs"]
    assert had["gate_level_matches_rtl"] is True
    assert had["logic_transistors"] == sum(had["logic_transistors_by_subblock"].values())
    # Storage: keys (3 rows of 2 x 8 bits), values (6 x 8 bits), table (9 x 9 bits).
    assert had["storage_bits"] == 3 * 16 + 6 * 8 + 9 * 9
    core = get_block("attention").component_class()
    assert had["latency_cycles"] == core.cycles(cfg, cfg.n_max)
    # two queries: the second leaves one interval after the first
    assert had["cycles_per_query"] == (core.cycles(cfg, cfg.n_max)
                                       + core.interval(cfg, cfg.n_max)) / 2
    assert (tmp_path / "compare.png").stat().st_size > 0
    md = (tmp_path / "report.md").read_text()
    assert "HAD (binary + top-k)" in md and "compare.png" in md


@pytest.mark.sim
@pytest.mark.synth
@pytest.mark.full
def test_sweep_tiny(tmp_path):
    from hadware.synth.sweep import sweep

    cfg = AttentionConfig(d=8, n_max=8, top_k=2, d_v=1, lanes=2, exp_frac_bits=8,
                          out_frac_bits=2)
    r = sweep(cfg, tmp_path, queries=1, jobs=1, n_max=(4, 8), d=(8,))
    had = sorted((p["value"], p["storage_bits"]) for p in r["points"]
                 if p["axis"] == "n_max" and p["role"] == "subject")
    assert [v for v, _ in had] == [4, 8] and had[0][1] < had[1][1]
    assert (tmp_path / "sweep.png").stat().st_size > 0
    # d=8 at n_max=8 is the base configuration, also the point n_max=8: run once, reported
    # on both axes.
    assert not (tmp_path / "d8").exists()
    assert sorted({p["role"] for p in r["points"]}) == ["reference", "subject"]
    for role in ("subject", "reference"):
        (on_n,) = [p for p in r["points"] if p["role"] == role and p["axis"] == "n_max"
                   and p["value"] == 8]
        (on_d,) = [p for p in r["points"] if p["role"] == role and p["axis"] == "d"]
        assert {**on_n, "axis": "d"} == on_d
    # One reduction per point; HAD's area below standard attention's at every point.
    reds = {(x["axis"], x["value"]): x for x in r["reductions"]}
    assert sorted(reds) == [("d", 8), ("n_max", 4), ("n_max", 8)]
    for (axis, value), red in reds.items():
        had, std = (next(p for p in r["points"] if p["axis"] == axis and p["value"] == value
                         and p["role"] == role) for role in ("subject", "reference"))
        assert red["power_reduction"] == 1 - had["energy_per_query"] / std["energy_per_query"]
        assert 0 < red["logic_area_reduction"] < 1
    assert "| n_max | 4 |" in (tmp_path / "report.md").read_text()


def test_counting_top_k_applies_to_the_binarized_designs_only():
    """A compare config with the counting top-k: HAD takes it, the int8 top-k design takes the
    systolic unit (the counting one needs binarized scores), the dense designs have none; a
    unit for any scores applies to both."""
    from hadware.synth.compare import _design_config

    cfg = AttentionConfig(d=16, n_max=8, top_k=3, lanes=2, topk_unit="counting")
    assert _design_config("attention", cfg).topk_unit == "counting"
    assert _design_config("int8_topk_attention", cfg).topk_unit == "systolic"
    assert not hasattr(_design_config("binary_dense_attention", cfg), "topk_unit")
    for unit in ("merge", "systolic"):
        assert _design_config("int8_topk_attention", cfg.to_dict() | {"topk_unit": unit}) \
            .topk_unit == unit


def test_fit_lanes_halves_until_the_ecp5_fits(tmp_path, monkeypatch):
    """--fit-lanes: a design that does not fit at lanes 8 is tried at 4, 2, ... (ECP5 only)
    until it fits, and that entry is reported beside the compare's own; one that fits, or
    a run without the option, is left alone."""
    from hadware.synth import compare as cmp
    from hadware.synth import flow

    calls = []

    def fake(block, cfg, out_dir, *, fmax=True, timeout=0.0, seeds=1,
             families=("ice40", "ecp5")):
        calls.append((cfg.lanes, families))
        fits = cfg.lanes <= 2
        e = {"lut": 100 * cfg.lanes, "dsp": 70 * cfg.lanes, "fmax_mhz": 90.0 if fits else None}
        if not fits:
            e["reason"] = f"does not fit the device ({70 * cfg.lanes} DSP > 156)"
        return {f: dict(e) for f in families}

    monkeypatch.setattr(flow, "synthesize_fpga", fake)
    cfg = AttentionConfig(d=16, n_max=16, top_k=3, lanes=8).to_dict()
    r = cmp.run_fpga("std_attention", cfg, str(tmp_path), True, 60.0, fit_lanes=True)
    assert calls == [(8, ("ice40", "ecp5")), (4, ("ecp5",)), (2, ("ecp5",))]
    e = r["fpga"]["ecp5"]
    assert e["fmax_mhz"] is None and e["at_lanes"]["lanes"] == 2
    assert e["at_lanes"]["fmax_mhz"] == 90.0 and e["at_lanes"]["dsp"] == 140
    calls.clear()
    r = cmp.run_fpga("std_attention", cfg, str(tmp_path), True, 60.0)
    assert calls == [(8, ("ice40", "ecp5"))] and "at_lanes" not in r["fpga"]["ecp5"]
    calls.clear()
    r = cmp.run_fpga("std_attention", dict(cfg, lanes=2), str(tmp_path), True, 60.0,
                     fit_lanes=True)
    assert calls == [(2, ("ice40", "ecp5"))] and "at_lanes" not in r["fpga"]["ecp5"]
