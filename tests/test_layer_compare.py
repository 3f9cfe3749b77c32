"""``hadware synth compare --layer``: the standard layer derived from the HAD layer's config,
the report from the designs' figures (a stand-in flow), the command line's refusals, and, in
the full tier, a real run at a tiny shape (the README's size is a benchmark, not a test)."""

from __future__ import annotations

import json

import pytest

from hadware.cli import main
from hadware.config.encoder_layer import EncoderLayerConfig
from hadware.config.std_layer import StdLayerConfig
from hadware.errors import HadwareError
from hadware.synth import layer_compare as LC

TINY = EncoderLayerConfig(d_model=16, n_heads=2, head_dim=8, n_max=4, top_k=2, d_hidden=8,
                          lanes=4, temperature=[0.1, 0.3], causal=True)


def test_the_standard_layer_has_the_same_shape_and_its_own_parts():
    had, std = LC.layer_configs(TINY)
    assert isinstance(std, StdLayerConfig) and had is TINY
    for k in ("d_model", "n_heads", "head_dim", "n_max", "d_hidden", "lanes", "causal",
              "head_parallel", "res_bits", "qkv_bits", "v_shift", "attn_out_frac_bits"):
        assert getattr(std, k) == getattr(had, k), k
    assert (had.weights, std.weights) == ("ternary", "int8")
    # int8 scores: the float 1/sqrt(head_dim) in units of the int8 rule's step squared.
    assert std.temperature == (2.0 ** (2 * (had.v_shift - had.qkv_frac_bits)) / 8 ** 0.5,) * 2
    with pytest.raises(HadwareError, match="needs an encoder_layer configuration"):
        LC.layer_configs(std)


def _fake_result(block, transistors, storage, energy, mults):
    return {"block": block, "config": {}, "tokens": 4, "cycles_per_sequence": [100],
            "cycles_formula": 100, "wall_time_s": 1.0,
            "synth": {"area_cmos": {"transistors": transistors, "storage_bits": storage,
                                    "flip_flops": 10},
                      "memories": [{"module": block, "name": "rom", "bits": storage}],
                      "multipliers": {"count": mults, "in_projections": 0},
                      "fpga": {}},
            "energy": {"energy_total": energy, "gate_level_matches_rtl": True}}


def test_report_reductions_from_the_designs_figures(tmp_path, monkeypatch):
    figures = {"encoder_layer": (1000, 100, 400.0, 5), "std_layer": (4000, 400, 4000.0, 9)}
    seen = []

    def fake(block, cfg_dict, weights, inputs, out_dir, fmax, timeout):
        seen.append((block, cfg_dict["weights"], sorted(weights), inputs["x"].shape))
        return _fake_result(block, *figures[block])

    monkeypatch.setattr(LC, "run_layer", fake)
    r = LC.compare_layers(TINY, tmp_path, sequences=2, fmax=False, jobs=1)
    assert [s[:2] for s in seen] == [("encoder_layer", "ternary"), ("std_layer", "int8")]
    assert seen[0][3] == (2, TINY.n_max, TINY.d_model)
    # area with storage: 1000 + 6 * 100 = 1600 against 4000 + 6 * 400 = 6400.
    assert r["area_reduction"] == pytest.approx(0.75)
    assert r["logic_area_reduction"] == pytest.approx(0.75)
    assert r["power_reduction"] == pytest.approx(0.9)
    assert list(r)[:3] == ["area_reduction", "logic_area_reduction", "power_reduction"]
    assert json.loads((tmp_path / "report.json").read_text()) == r
    md = (tmp_path / "report.md").read_text()
    assert "75.0% smaller" in md and "90.0% lower" in md and "standard int8 layer" in md


def test_command_line_refusals(tmp_path, capsys):
    assert main(["synth", "mlp", "--layer", "-o", str(tmp_path / "o")]) != 0
    assert "--layer applies to 'synth compare' only" in capsys.readouterr().err
    assert main(["synth", "compare", "--layer", "--sequences", "0", "-o",
                 str(tmp_path / "o")]) != 0
    assert "--sequences" in capsys.readouterr().err
    (tmp_path / "a.json").write_text(json.dumps({"d": 64}))
    assert main(["synth", "compare", "--layer", "--config", str(tmp_path / "a.json"), "-o",
                 str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'d'" in err[0] and "encoder_layer" in err[0]
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.sim
@pytest.mark.synth
@pytest.mark.full
def test_compare_layers_tiny(tmp_path):
    r = LC.compare_layers(TINY, tmp_path, fmax=False, jobs=2)
    had, std = r["designs"]
    for row in (had, std):
        assert row["gate_level_matches_rtl"] is True
        assert row["cycles_per_sequence"] == row["cycles_per_sequence_formula"]
    assert had["multipliers"]["in_projections"] == 0
    # One multiplier per lane in each of the four int8 projections (QKV, output, and the
    # MLP's gate/up and down).
    assert std["multipliers"]["in_projections"] == 4 * TINY.lanes
    assert r["area_reduction"] > 0 and r["power_reduction"] > 0
