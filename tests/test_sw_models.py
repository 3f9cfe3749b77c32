"""Unit tests of the float modules that mirror the hardware (hadware.sw.models).

Every check compares against a reference written independently here: Python integers for the
XNOR-popcount scores, ``sorted()`` for the top-k tie rule, numpy float64 for BitLinear.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from hadware.sw.models import (
    BitLinear,
    Encoder,
    GluMlp,
    HadAttention,
    ModelConfig,
    absmean_ternary,
    calibrate_sigma,
    fake_quantize_values,
    had_scores,
    hw_sign,
    quantize_values,
    sign_ste,
    soft_binarize,
    ste,
    topk_mask,
)

# -- references ------------------------------------------------------------------------------


def ref_bits(vec: list[float]) -> int:
    """Bit i of the result is 1 where vec[i] >= 0 (the hardware convention)."""
    return sum(1 << i for i, v in enumerate(vec) if v >= 0)


def ref_xnor_score(q: list[float], k: list[float]) -> int:
    d = len(q)
    xnor = ~(ref_bits(q) ^ ref_bits(k)) & ((1 << d) - 1)
    return 2 * bin(xnor).count("1") - d


def ref_topk(row: list[float], k: int) -> set[int]:
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    return set(order[:k])


def calibrated_attention(d_model: int = 32, n_heads: int = 2, top_k: int | None = 4,
                         seed: int = 0) -> HadAttention:
    torch.manual_seed(seed)
    attn = HadAttention(d_model, n_heads, top_k=top_k)
    attn.start_calibration()
    with torch.no_grad():
        attn(torch.randn(4, 10, d_model))
    attn.finish_calibration()
    attn.had.fill_(True)
    return attn


# -- binarization ----------------------------------------------------------------------------


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-1.5, -0.0, 0.0, 1e-30, -1e-30, 2.0])
    assert hw_sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]
    assert sign_ste(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0, 1.0]


def test_sign_ste_gradient_is_zero_beyond_two():
    x = torch.tensor([-3.0, -2.5, -2.0, -0.5, 0.0, 0.5, 2.0, 2.01, 3.0], requires_grad=True)
    y = sign_ste(x)
    (y * torch.arange(1.0, 10.0)).sum().backward()
    expected = [0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0, 0.0]
    assert x.grad.tolist() == expected


def test_soft_binarize_is_continuous_and_tends_to_sign():
    x = torch.linspace(-3, 3, 61)
    assert torch.allclose(soft_binarize(x, 1.0, True), soft_binarize(x, 1.0, False))
    small = x.abs() <= 2
    assert torch.allclose(soft_binarize(x, 5.0, True)[small], x[small], atol=0.11)
    nonzero = x.abs() > 0.2
    assert torch.allclose(soft_binarize(x, 0.05, False)[nonzero], hw_sign(x)[nonzero],
                          atol=1e-3)
    with pytest.raises(ValueError, match=r"c must be positive, not 0\.0"):
        soft_binarize(x, 0.0, False)


def test_attention_ste_blocks_gradient_where_q_over_sigma_exceeds_two():
    attn = calibrated_attention(d_model=16, n_heads=1, top_k=None)
    q = (torch.randn(1, 1, 6, 16) * 3 * attn.sigma_q).requires_grad_()
    k = torch.randn(1, 1, 6, 16) * attn.sigma_k
    qb, _ = attn.binarized(q, k)
    (qb * torch.randn_like(qb)).sum().backward()
    outside = (q / attn.sigma_q).abs() > 2
    assert outside.any() and (~outside).any()
    assert (q.grad[outside] == 0).all()
    assert (q.grad[~outside] != 0).all()


# -- scores and top-k ------------------------------------------------------------------------


@pytest.mark.parametrize("d", [8, 15, 32])
def test_had_scores_match_xnor_popcount(d: int):
    gen = torch.Generator().manual_seed(d)
    q = torch.randn(5, d, generator=gen)
    k = torch.randn(7, d, generator=gen)
    q[0, :3] = 0.0  # exact zeros binarize to +1
    k[1] = 0.0
    scores = had_scores(hw_sign(q), hw_sign(k))
    for i in range(5):
        for j in range(7):
            s = scores[i, j].item()
            assert s == int(s)
            assert -d <= s <= d and (int(s) - d) % 2 == 0
            assert int(s) == ref_xnor_score(q[i].tolist(), k[j].tolist())


def test_topk_tie_rule_matches_sorted():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        k = rng.randint(1, 14)
        # few distinct values, so ties are frequent
        row = [float(rng.choice([-4, -2, 0, 2, 4])) for _ in range(n)]
        mask = topk_mask(torch.tensor([row]), k)[0].tolist()
        kept = {j for j, m in enumerate(mask) if m}
        assert kept == ref_topk(row, k), (row, k)
        assert len(kept) == min(k, n)


def test_topk_keeps_all_when_fewer_keys_than_k():
    scores = torch.tensor([[3.0, 3.0, -1.0]])
    assert topk_mask(scores, 8).all()
    assert topk_mask(scores, None).all()
    assert topk_mask(scores, 1).tolist() == [[True, False, False]]


def test_had_probs_match_independent_reference():
    """Sparse softmax over the kept keys with weights exp(-2 * T * m), m = (s_max - s) / 2
    (the hardware lookup table form), zero elsewhere."""
    attn = calibrated_attention(d_model=16, n_heads=2, top_k=3, seed=1)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 5, 8, generator=gen)
    k = torch.randn(2, 2, 9, 8, generator=gen)
    probs = attn.had_probs(q, k)
    temps = attn.temperature.tolist()
    for b in range(2):
        for h in range(2):
            xq = (q[b, h] / attn.sigma_q[h]).tolist()
            xk = (k[b, h] / attn.sigma_k[h]).tolist()
            for i in range(5):
                row = [ref_xnor_score(xq[i], xk[j]) for j in range(9)]
                kept = ref_topk(row, 3)
                smax = max(row[j] for j in kept)
                w = {j: math.exp(-2 * temps[h] * ((smax - row[j]) // 2)) for j in kept}
                total = sum(w.values())
                ref = [w[j] / total if j in kept else 0.0 for j in range(9)]
                assert probs[b, h, i].tolist() == pytest.approx(ref, rel=1e-5, abs=1e-7)


def test_soft_mode_applies_topk():
    attn = calibrated_attention(d_model=16, n_heads=2, top_k=3)
    attn.binarize = ("soft", 2.0, True)
    _, probs = attn(torch.randn(3, 7, 16))
    assert ((probs > 0).sum(dim=-1) == 3).all()
    assert torch.allclose(probs.sum(dim=-1), torch.ones(3, 2, 7))


def test_temperature_is_sigma_product_over_sqrt_d():
    attn = calibrated_attention(d_model=32, n_heads=2)
    expected = attn.sigma_q * attn.sigma_k / math.sqrt(16)
    assert torch.equal(attn.temperature, expected)
    assert bool(attn.calibrated)
    assert attn.sigma_q[0] == attn.sigma_q[1]  # one sigma per layer by default


def test_uncalibrated_had_is_an_error():
    attn = HadAttention(16, 2)
    attn.had.fill_(True)
    with pytest.raises(RuntimeError, match="calibrate_sigma"):
        attn(torch.randn(1, 4, 16))


def test_mixed_heads_select_per_head():
    attn = calibrated_attention(d_model=16, n_heads=2, top_k=2)
    x = torch.randn(2, 6, 16)
    _, p_had = attn(x)
    attn.had.fill_(False)
    _, p_soft = attn(x)
    attn.had[1] = True
    _, p_mixed = attn(x)
    assert torch.equal(p_mixed[:, 0], p_soft[:, 0])
    assert torch.equal(p_mixed[:, 1], p_had[:, 1])


def test_quantize_values_one_scale_per_sample_and_head():
    # (sample, head, key, dim): each (sample, head) matrix has its own scale max|v| / 127.
    v = torch.tensor([[[[0.5, -1.0], [0.25, 0.0]], [[2.0, 1.0], [-0.5, 0.0]]],
                      [[[0.0, 0.0], [0.0, 0.0]], [[0.1, -0.05], [0.025, 0.0]]]])
    codes, scale = quantize_values(v)
    assert codes.dtype == torch.int8 and scale.shape == (2, 2, 1, 1)
    assert scale.flatten().tolist() == pytest.approx([1 / 127, 2 / 127, 1.0, 0.1 / 127])
    assert codes[0, 0].tolist() == [[64, -127], [32, 0]]
    assert codes[0, 1].tolist() == [[127, 64], [-32, 0]]  # 63.5 (exact) -> 64
    assert codes[1, 0].tolist() == [[0, 0], [0, 0]]  # all zero: scale 1, codes 0
    assert codes[1, 1].tolist() == [[127, -64], [32, 0]]  # -63.5: even, not half up
    with pytest.raises(ValueError, match=r"v must have at least 2 dimensions"):
        quantize_values(torch.ones(3))


def test_quantize_values_matches_an_independent_numpy_rule():
    """The rule of the export manifest's value_scaling, in float32 numpy, bit for bit."""
    v = torch.randn(3, 2, 11, 8, generator=torch.Generator().manual_seed(9)) * 3
    codes, scale = quantize_values(v)
    a = v.numpy()
    amax = np.abs(a).max(axis=(2, 3), keepdims=True)
    s_ref = amax / np.float32(127)
    np.testing.assert_array_equal(scale.numpy(), s_ref)
    np.testing.assert_array_equal(codes.numpy(), np.clip(np.rint(a / s_ref), -127, 127))


def test_fake_quantized_values_are_exact_codes_with_identity_gradient():
    v = (torch.randn(2, 2, 5, 4) * 2).requires_grad_()
    fq = fake_quantize_values(v)
    codes, scale = quantize_values(v)
    assert torch.equal(fq.detach(), codes.float() * scale)  # exactly, not x + (q - x)
    fq.backward(torch.arange(80.0).view(2, 2, 5, 4))
    assert torch.equal(v.grad, torch.arange(80.0).view(2, 2, 5, 4))
    x = torch.tensor([0.1, 0.7], requires_grad=True)
    q = torch.tensor([0.12345678, 3.3])
    assert torch.equal(ste(x, q), q)


def test_had_heads_quantize_values_as_deployed_softmax_heads_do_not():
    attn = calibrated_attention(d_model=16, n_heads=2, top_k=3)
    assert attn.v_int8  # the default: training and evaluation see int8 V
    x = torch.randn(3, 7, 16)
    b, n, _ = x.shape
    with torch.no_grad():
        _, _, v = attn.qkv(x).view(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        codes, scale = quantize_values(v)
        attn.had[0] = False  # head 0 softmax (float V), head 1 HAD (int8 V)
        out, probs = attn(x)
        want = torch.cat([probs[:, 0] @ v[:, 0], probs[:, 1] @ (codes[:, 1].float() * scale[:, 1])],
                         dim=-1)
        assert torch.allclose(out, attn.proj(want), atol=1e-6)
        attn.v_int8 = False
        out_float, _ = attn(x)
        assert torch.allclose(out_float, attn.proj(torch.cat([probs[:, 0] @ v[:, 0],
                                                               probs[:, 1] @ v[:, 1]], -1)),
                              atol=1e-6)
        assert not torch.allclose(out, out_float, atol=1e-6)


# -- BitLinear -------------------------------------------------------------------------------


def ref_bitlinear(x: np.ndarray, w: np.ndarray, g: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    g = g.astype(np.float64)
    xn = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * g
    s = 127.0 / np.maximum(np.max(np.abs(xn), axis=-1, keepdims=True), 1e-5)
    xq = np.clip(np.round(xn * s), -128, 127)
    beta = max(np.mean(np.abs(w)), 1e-5)
    wt = np.clip(np.round(w / beta), -1, 1)
    return (xq @ wt.T) * beta / s


def test_bitlinear_matches_numpy_formula():
    torch.manual_seed(0)
    layer = BitLinear(12, 5, quantize=True)
    with torch.no_grad():
        layer.gain.copy_(torch.rand(12) + 0.5)
    x = torch.randn(3, 4, 12)
    x[0, 0] = 0.0  # an all-zero token: s saturates at 127 / 1e-5
    y = layer(x).detach().numpy()
    ref = ref_bitlinear(x.numpy(), layer.weight.detach().numpy(), layer.gain.detach().numpy())
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_bitlinear_float_mode_is_rmsnorm_then_linear():
    torch.manual_seed(1)
    layer = BitLinear(6, 3)
    x = torch.randn(2, 6)
    xn = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(layer(x), xn @ layer.weight.T, atol=1e-6)


def test_ternary_weights_and_export():
    torch.manual_seed(2)
    layer = BitLinear(16, 8, quantize=True)
    codes, beta = layer.export_ternary()
    assert codes.dtype == torch.int8
    assert set(codes.unique().tolist()) <= {-1, 0, 1}
    assert beta == pytest.approx(float(layer.weight.detach().abs().mean()))
    w_t, _ = absmean_ternary(layer.weight)
    assert torch.equal(w_t.to(torch.int8), codes)


def test_bitlinear_straight_through_gradients():
    torch.manual_seed(3)
    layer = BitLinear(8, 4, quantize=True)
    x = torch.randn(5, 8, requires_grad=True)
    layer(x).sum().backward()
    # dy/dW is the quantized activation x_q / s, as if the rounding were the identity
    with torch.no_grad():
        xn = layer.normed(x)
        s = 127.0 / xn.abs().amax(-1, keepdim=True)
        xq = torch.clamp(torch.round(xn * s), -128, 127) / s
    assert torch.allclose(layer.weight.grad, xq.sum(0).expand(4, 8), atol=1e-6)
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert layer.gain.grad is not None


def test_load_ternary_reproduces_the_trained_layer_from_its_export():
    torch.manual_seed(5)
    layer = BitLinear(12, 6, quantize=True)
    with torch.no_grad():
        layer.gain.copy_(torch.rand(12) + 0.5)
    codes, beta = layer.export_ternary()
    loaded = BitLinear(12, 6)
    loaded.load_ternary(codes.numpy(), beta, layer.gain.detach().numpy().astype(np.float64))
    assert loaded.quantize and "ternary_codes" not in loaded.state_dict()
    x = torch.randn(4, 12)
    assert torch.equal(loaded(x), layer(x))  # bit for bit: no re-quantization of codes*beta
    c2, b2 = loaded.export_ternary()
    assert torch.equal(c2, codes) and b2 == beta
    with pytest.raises(ValueError, match=r"codes must have shape \(6, 12\), not \(12, 6\)"):
        loaded.load_ternary(codes.T.numpy(), beta, np.ones(12))
    with pytest.raises(ValueError, match=r"codes must hold only -1, 0 and \+1"):
        loaded.load_ternary(2 * codes.numpy(), beta, np.ones(12))


def test_glu_mlp_structure_and_switch():
    torch.manual_seed(4)
    mlp = GluMlp(8, 6)
    x = torch.randn(2, 3, 8)
    gate, up = mlp.gate_up(x).chunk(2, dim=-1)
    assert torch.allclose(mlp(x), mlp.down(torch.nn.functional.silu(gate) * up))
    y_float = mlp(x)
    mlp.ternary = True
    assert mlp.gate_up.quantize and mlp.down.quantize
    assert not torch.allclose(mlp(x), y_float)


# -- encoder ---------------------------------------------------------------------------------


def tiny_config(**kw) -> ModelConfig:
    base = dict(input_kind="patches", input_dim=4, seq_len=6, n_classes=3, d_model=16,
                n_heads=2, n_layers=2, mlp_hidden=8, top_k=3)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("pool", ["mean", "cls", "last"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_encoder_shapes_and_checkpoint_round_trip(pool: str, norm: str):
    torch.manual_seed(5)
    model = Encoder(tiny_config(pool=pool, norm=norm))
    x = torch.randn(4, 6, 4)
    calibrate_sigma(model, [x])
    model.set_attention("had")
    model.set_mlp("ternary")
    model.eval()
    logits, probs = model(x)
    n = 6 + (pool == "cls")
    assert logits.shape == (4, 3)
    assert len(probs) == 2 and probs[0].shape == (4, 2, n, n)
    assert ((probs[0] > 0).sum(-1) == 3).all()
    clone = Encoder.from_checkpoint(model.checkpoint())
    clone.eval()
    assert clone.config.attention == "had" and clone.config.mlp == "ternary"
    assert torch.equal(clone(x)[0], logits)


def test_token_encoder_with_fields():
    torch.manual_seed(6)
    model = Encoder(tiny_config(input_kind="tokens", input_dim=0, vocab_sizes=(5, 3),
                                pool="last"))
    x = torch.stack([torch.randint(0, 5, (2, 6)), torch.randint(0, 3, (2, 6))], dim=-1)
    assert model(x)[0].shape == (2, 3)


def test_calibration_uses_softmax_statistics_and_restores_head_kinds():
    torch.manual_seed(7)
    model = Encoder(tiny_config())
    model.set_attention("had", heads=[[1], []])
    x = torch.randn(8, 6, 4)
    calibrate_sigma(model, [x, x], n_batches=2)
    assert model.attentions[0].had.tolist() == [False, True]
    assert not model.attentions[1].had.any()
    with torch.no_grad():
        q = model.attentions[0].qkv(model.blocks[0].norm1(model.embed_input(x)))[..., :16]
    assert float(model.attentions[0].sigma_q[0]) == pytest.approx(float(q.std()), rel=1e-5)


def test_model_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"top_k must be an integer at least 1, not 0"):
        tiny_config(top_k=0)
    with pytest.raises(ValueError, match=r"pool must be one of .*, not 'max'"):
        tiny_config(pool="max")
    with pytest.raises(ValueError, match=r"d_model must be a multiple of n_heads \(3\)"):
        tiny_config(n_heads=3)
