"""Where the encoder layer multiplies (:mod:`hadware.synth.layer`): no multiplier in any
ternary projection; the ones that remain are the per-token scalars of the BitLinears, the GLU
and the attention cores' weighting and output scaling, each named by its module."""

from __future__ import annotations

import pytest

from hadware.config.encoder_layer import EncoderLayerConfig
from hadware.hw.generate import generate
from hadware.synth.layer import multipliers
from hadware.tb.encoder_layer import latent_weights

#: The modules (last two path parts) allowed to multiply, by what they compute.
ALLOWED = ("stats.gain_mul", "stats.square_mul", "quant.quant_mul", "out_scale.scale_mul",
           "norm.kappa_mul", "glu.glu_mul", "glu.silu_mul", ".scale", "wsum_mul")


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "shared"])
def test_multipliers_by_place(parallel, tmp_path):
    cfg = EncoderLayerConfig(d_model=16, n_heads=2, head_dim=8, n_max=4, top_k=2, d_hidden=8,
                             lanes=4, head_parallel=parallel)
    generate("encoder_layer", cfg, tmp_path, {"weights": latent_weights(cfg, 1)})
    r = multipliers(tmp_path / "encoder_layer.v", "encoder_layer", tmp_path)
    assert r["in_projections"] == 0
    mods = [row["module"] for row in r["by_module"]]
    assert not [mod for mod in mods if not any(a in mod for a in ALLOWED)], mods
    # Four BitLinears (gain, square, quantizer, output scale each; Kc * V multiplies by a
    # constant), the GLU's two and per core the weighting (one per value column) and the
    # output scaler.
    for layer in ("qkv", "o_proj", "mlp.gate_up", "mlp.down"):
        for unit in ("stats.gain_mul", "stats.square_mul", "quant.quant_mul",
                     "out_scale.scale_mul"):
            assert f"encoder_layer.{layer}.{unit}" in mods
    cores = cfg.n_heads if parallel else 1
    wsum = [mod for mod in mods if "wsum_mul" in mod]
    assert len(wsum) == cores * cfg.head_dim
    assert r["count"] == sum(row["count"] for row in r["by_module"])
    assert r["constant_operand"] >= 4   # Kc * V of each BitLinear
