"""Synthesis of the ternary GLU MLP: the ternary projection datapath alone maps to no DSP
multiplier block (each weight selects +q, -q or 0 into an adder tree); the whole block
synthesizes with its multipliers in their own modules."""

from __future__ import annotations

import json

import pytest

from hadware.config.mlp import MlpConfig
from hadware.synth.flow import synthesize
from hadware.synth.projection import synthesize_projection
from hadware.tb.mlp import latent_weights


@pytest.mark.synth
def test_ternary_projection_alone_has_no_dsp(tmp_path):
    r = synthesize_projection(16, 64, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == r
    for fam in ("ecp5", "ice40"):
        assert r["fpga"][fam]["dsp"] == 0, fam
        assert r["fpga"][fam]["lut"] > 0 and r["fpga"][fam]["carry"] > 0, fam
    # Nothing was optimized away: 16 selection registers of 8 bits, the adder tree (8 x 9 +
    # 4 x 10 + 2 x 11 + 1 x 12 bits), the 14-bit accumulator (8 + log2 64), valid/first/last
    # for each of the 5 register levels and the output valid.
    flip_flops = 16 * 8 + (8 * 9 + 4 * 10 + 2 * 11 + 12) + 14 + 3 * 5 + 1
    assert r["area_cmos"]["flip_flops"] == flip_flops
    assert r["fpga"]["ecp5"]["ff"] == flip_flops


@pytest.mark.synth
@pytest.mark.full
def test_mlp_block_report(tmp_path):
    # Narrow formats keep the multipliers small (the iCE40 flow maps them to LUTs).
    cfg = MlpConfig(d_model=8, d_hidden=12, lanes=4, x_bits=10, x_frac_bits=6, gain_bits=10,
                    gain_frac_bits=7, mant_bits=8, recip_frac_bits=0, kappa_bits=8,
                    scale_bits=10, act_bits=8, act_frac_bits=5, silu_range_log2=2,
                    silu_seg_frac_bits=4, silu_frac_bits=6, h_bits=10, h_frac_bits=6,
                    y_bits=8, y_frac_bits=5)
    r = synthesize("mlp", cfg, tmp_path, fmax=False,
                   extras={"weights": latent_weights(cfg, seed=1)})
    modules = r["area_cmos"]["per_module"]
    shared = r["area_cmos"]["shared_modules"]  # merged module -> the identical one kept
    for layer in ("gate_up", "down"):
        assert f"mlp.{layer}.projection" in modules
        for mul in ("stats.gain_mul", "stats.square_mul", "quant.quant_mul",
                    "out_scale.scale_mul", "norm.kappa_mul"):
            name = f"mlp.{layer}.{mul}"
            assert name in modules or shared.get(name) in modules
    assert "mlp.glu.glu_mul" in modules and "mlp.glu.silu_mul" in modules
    # The multipliers use DSP blocks; the projections do not (tested alone above).
    assert r["fpga"]["ecp5"]["dsp"] > 0
    assert r["projection_dsp"] == {"ice40": 0, "ecp5": 0}
    assert "Ternary projection synthesized alone: 0 DSP" in (tmp_path / "report.md").read_text()
    assert r["area_cmos"]["transistors"] == sum(m["transistors_self"] * m["instances"]
                                                for m in modules.values())
