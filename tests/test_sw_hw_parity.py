"""The trained modules compute what the hardware computes, on the same integers: binarized
scores and the top-k selection against the attention golden model, ternary codes and beta
against the exporter's rule, and the BitLinear forward pass against the ternary adder tree."""

from __future__ import annotations

import numpy as np
import torch

from hadware.golden.attention_core import hamming_scores
from hadware.golden.topk import select_topk
from hadware.spec import ternary
from hadware.sw.models import BitLinear, HadAttention, absmax_quantize, topk_mask


def test_had_scores_and_topk_match_golden():
    torch.manual_seed(0)
    attn = HadAttention(d_model=32, n_heads=2, top_k=5)
    attn.calibrated.fill_(True)
    x = torch.randn(3, 12, 32)
    b, n, _ = x.shape
    q, k, _ = (attn.qkv(x).view(b, n, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0))
    qb, kb = attn.binarized(q, k)  # hard sign: the hardware convention sign(0) = +1
    float_scores = (qb @ kb.transpose(-1, -2)).detach()
    keep = topk_mask(float_scores, 5)
    for s in range(b):
        for h in range(2):
            q_pm = qb[s, h].detach().to(torch.int8)
            k_pm = kb[s, h].detach().to(torch.int8)
            gold = hamming_scores(q_pm, k_pm)
            assert torch.equal(gold, float_scores[s, h].to(torch.int64))
            idx, _ = select_topk(gold, None, 5)
            want = torch.zeros(n, n, dtype=torch.bool)
            want.scatter_(1, idx, True)
            assert torch.equal(keep[s, h], want)


def test_ternary_export_matches_packing_rule():
    torch.manual_seed(1)
    lin = BitLinear(24, 10, quantize=True)
    codes, beta = lin.export_ternary()
    want_codes, want_beta = ternary.ternarize(lin.weight.detach().numpy())
    np.testing.assert_array_equal(codes.numpy(), want_codes)
    assert beta == float(np.float32(want_beta)) or abs(beta - want_beta) < 1e-7


def test_bitlinear_forward_is_the_ternary_adder_tree():
    torch.manual_seed(2)
    lin = BitLinear(24, 10, quantize=True)
    x = torch.randn(5, 24)
    with torch.no_grad():
        y = lin(x).double()
        x_q, s = absmax_quantize(lin.normed(x))
        codes, beta = lin.export_ternary()
        # Integer sums: each weight selects +x, -x or nothing.
        acc = torch.zeros(5, 10, dtype=torch.int64)
        xi = x_q.to(torch.int64)
        for o in range(10):
            for i in range(24):
                c = int(codes[o, i])
                if c:
                    acc[:, o] += c * xi[:, i]
    np.testing.assert_allclose(y.numpy(), (acc.double() * beta / s.double()).numpy(),
                               rtol=1e-5, atol=1e-6)
