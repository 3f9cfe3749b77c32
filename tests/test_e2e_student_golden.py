"""The golden run of an export is the trained student: its logits against the student's own
PyTorch forward on the same samples (a stated bound, with perturbed models that break it), the
blocks' inputs against the student's quantization of Q, K and V, and the student's figures in
the report of ``hadware run``.

One small digits student (d_model 32, 2 heads, 2 layers) is trained from seed 0 on one thread
(about 6 s) and exported once for the module; every comparison uses all 360 test images.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import hadware.sw.run as run
from hadware.cli import main
from hadware.sw.export import attention_config, export_checkpoint, load_export
from hadware.sw.models import Encoder, quantize_values
from hadware.sw.run import GoldenBackend, forward, student_from_export, student_logits
from hadware.sw.tasks import Phases
from hadware.sw.train import train

#: Small enough to train in seconds, trained enough (teacher about 97 %, student about 95 %)
#: that its predictions have margins: agreement on a barely trained model says little.
TRAIN = {"model.d_model": 32, "model.n_heads": 2, "model.mlp_hidden": 32, "data.shift": 0,
         "lr_teacher": 1e-2, "lr_student": 2e-3, "lr_ternary": 2e-3,
         "phases": Phases(teacher=10, stage1=1, stage2=1, stage3=1, stage4=1, ternary=2)}

# How the bounds were chosen. The golden run and the student's PyTorch forward share every host
# computation and the quantization of Q and K (sign) and of V (int8, one scale per sample and
# head); they differ only inside the blocks:
#   1. the attention core's table softmax and roundings, proven within error_bound_ulp (<= 1)
#      units of 2**-8 V codes: at most 3e-5 of max|V| per head output;
#   2. the MLP's integer datapath (from its fixed-point input on) against the float BitLinear:
#      the same ternary weights, but int8 activations a step apart in a few percent of the
#      tokens (README: relative L2 error per token, mean 0.05-0.1 %, max < 3 %).
# HAD then amplifies a few of these: a flipped sign bit of a later layer's Q or K, or a changed
# top-k set, moves that sample's logits far more than the difference that caused it. So most
# samples differ by a tiny fraction of the logit scale and a few by more: the median and the
# 90th percentile are bounded tightly, the maximum loosely. The statistic is, per sample,
# max over classes |golden - student| divided by the RMS of all the student's logits.
# Measured with this training at seed 0 (seeds 1 and 2 as a check, same settings):
#   median 0.0016 (0.0017, 0.0015), p90 0.0066 (0.0071, 0.0052), max 0.043 (0.075, 0.085),
#   agreement 100 % (99.7 %, 100 %).
# The bounds are about 3x the largest measured median, p90 and maximum, and the median and p90
# bounds are below the smallest effect of every perturbation tried, on one side only (one MLP
# code's sign flipped in any layer, one head's top_k - 1, the host's V scale per tensor,
# floored V codes or a 1/128 V scale, the student evaluated with float V): medians >= 0.0105,
# p90 >= 0.032. The agreement alone catches few of them (99.4-100 %).
MEDIAN_BOUND = 0.005
P90_BOUND = 0.02
MAX_BOUND = 0.25
#: The issue's requirement: equal predictions on at least 99 % of the samples.
AGREEMENT_MIN = 0.99


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "digits"
    metrics = train("digits", out, seed=0, progress=False, threads=1, overrides=TRAIN)
    export_checkpoint(out / "student.pt", out / "export")
    return out, metrics


@pytest.fixture(scope="module")
def data(trained):
    """The exported model, the test images and labels, and the student's logits on them."""
    out, _ = trained
    model = load_export(out / "export")
    x, y = run._test_set("digits", None)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits = student_logits(student_from_export(model), x)
    finally:
        torch.set_num_threads(old)
    return model, x, y, logits


def difference(golden: np.ndarray, student: np.ndarray) -> dict[str, float]:
    """The statistics the bounds hold (see the comment above ``MEDIAN_BOUND``)."""
    d = np.abs(golden.astype(np.float64) - student).max(axis=1) / np.sqrt(np.mean(student**2))
    return {"median": float(np.median(d)), "p90": float(np.quantile(d, 0.9)),
            "max": float(d.max()),
            "agreement": float((golden.argmax(axis=1) == student.argmax(axis=1)).mean())}


def within_bounds(s: dict[str, float]) -> bool:
    return (s["median"] <= MEDIAN_BOUND and s["p90"] <= P90_BOUND and s["max"] <= MAX_BOUND
            and s["agreement"] >= AGREEMENT_MIN)


def test_golden_logits_follow_the_students_pytorch_forward(data):
    model, x, y, student = data
    golden = forward(model, x, GoldenBackend(), progress=False)
    s = difference(golden, student)
    assert s["median"] <= MEDIAN_BOUND, s
    assert s["p90"] <= P90_BOUND, s
    assert s["max"] <= MAX_BOUND, s
    assert s["agreement"] >= AGREEMENT_MIN, s
    # Trained enough for the agreement to mean something.
    assert (student.argmax(axis=1) == y.numpy()).mean() >= 0.85


def _flip_one_code(model, layer: int, name: str):
    """A copy of the export whose MLP ``layer`` has its first non-zero ``name`` code negated."""
    w = model.mlp[layer]
    p = getattr(w, name)
    codes = p.codes.copy()
    at = tuple(np.argwhere(codes != 0)[0])
    codes[at] = -codes[at]
    bad = copy.copy(model)
    bad.mlp = list(model.mlp)
    bad.mlp[layer] = dataclasses.replace(w, **{name: dataclasses.replace(p, codes=codes)})
    return bad


def _top_k_minus_one(model, layer: int, head: int):
    bad = copy.copy(model)
    bad.attention = [list(heads) for heads in model.attention]
    c = model.attention[layer][head]
    bad.attention[layer][head] = attention_config(c.d, c.n_max, c.top_k - 1, c.temperature,
                                                  c.lanes)
    return bad


def _v_scale_per_tensor(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A wrong host quantization: one scale for all samples of the batch."""
    scale = (v.abs().amax() / 127.0).expand(v.shape[0], 1, 1).clone()
    return torch.clamp(torch.round(v / scale), -127, 127).to(torch.int8), scale


def _v_floor(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A wrong host quantization: the right scale, codes rounded down."""
    _, scale = quantize_values(v)
    return torch.clamp(torch.floor(v / scale), -127, 127).to(torch.int8), scale


@pytest.mark.parametrize("perturbation", [
    "last-mlp-down-code-flipped", "last-head-top-k-minus-one", "host-v-scale-per-tensor",
    "host-v-floor", "student-float-v"])
def test_a_perturbed_model_breaks_the_bound(data, monkeypatch, perturbation):
    """Each perturbation on one side only (the golden run, the host code of ``sw/run.py`` or
    the student) is caught; the least sensitive places are chosen (the last layer)."""
    model, x, _, student = data
    last = len(model.mlp) - 1
    if perturbation == "last-mlp-down-code-flipped":
        model = _flip_one_code(model, last, "down")
    elif perturbation == "last-head-top-k-minus-one":
        model = _top_k_minus_one(model, last, len(model.attention[last]) - 1)
    elif perturbation == "host-v-scale-per-tensor":
        monkeypatch.setattr(run, "quantize_values", _v_scale_per_tensor)
    elif perturbation == "host-v-floor":
        monkeypatch.setattr(run, "quantize_values", _v_floor)
    else:  # the student as it was trained before: float V, which the hardware never sees
        enc = student_from_export(model)
        enc.set_v_int8(False)
        student = student_logits(enc, x)
    golden = forward(model, x, GoldenBackend(), progress=False)
    s = difference(golden, student)
    assert not within_bounds(s), s


class _Recorder:
    """The golden models, keeping every attention block's inputs and output."""

    name = "golden"

    def __init__(self):
        self.inner = GoldenBackend()
        self.attention_calls: list[tuple] = []

    def attention(self, cfg, q, k, v):
        out = self.inner.attention(cfg, q, k, v)
        self.attention_calls.append((cfg, q, k, v, out))
        return out

    def mlp(self, cfg, weights, x):
        return self.inner.mlp(cfg, weights, x)


def first_layer_mismatch(model, x: torch.Tensor) -> str | None:
    """Layer 0 (whose input is the embedding, the same on both sides), head by head: the
    blocks' q, k and v must be the student's binarized Q/sigma_Q, K/sigma_K (the host takes
    the sign of Q and K: sigma > 0) and its int8 V codes exactly, and the block's output must
    be the student's head output (in units of the V scale) within the attention core's proven
    bound. Returns the first difference, or None."""
    enc = student_from_export(model)
    rec = _Recorder()
    forward(model, x, rec, progress=False)
    attn = enc.blocks[0].attn
    with torch.no_grad():
        h = enc.blocks[0].norm1(enc.embed_input(x))
        b, n, _ = h.shape
        q, k, v = (attn.qkv(h).view(b, n, 3, attn.n_heads, attn.head_dim)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        qb, kb = attn.binarized(q, k)
        codes, _ = quantize_values(v)
        _, probs = attn(h)
    for j, (cfg, hq, hk, hv, out) in enumerate(rec.attention_calls[: attn.n_heads]):
        for what, host, mine in (("q", hq, qb[:, j]), ("k", hk, kb[:, j]),
                                 ("v", hv, codes[:, j])):
            if not np.array_equal(host, mine.to(torch.int8).numpy()):
                return f"head {j}: the host's {what} differs from the student's"
        # In units of V codes: the student's head output is probs @ (codes * scale).
        want = (probs[:, j].double() @ codes[:, j].double()).numpy()
        err = np.abs(out * 2.0 ** -cfg.out_frac_bits - want).max() * 2.0 ** cfg.out_frac_bits
        # Plus the float32 rounding of the student's probabilities: below top_k * 2**-24 in
        # all, times 127 codes, times 2**8 per code: 0.016 ulp at top_k 8 (measured 0.003).
        if err > cfg.error_bound_ulp + 0.02:
            return f"head {j}: output {err:.3f} ulp from the student's (bound " \
                   f"{cfg.error_bound_ulp:.3f})"
    return None


def test_the_blocks_get_the_students_quantization(data, monkeypatch):
    model, x, _, _ = data
    assert first_layer_mismatch(model, x[:40]) is None
    for wrong in (_v_scale_per_tensor, _v_floor):
        monkeypatch.setattr(run, "quantize_values", wrong)
        assert "the host's v differs" in first_layer_mismatch(model, x[:40])


def test_the_student_rebuilt_from_the_export_is_the_trained_one(trained, data):
    out, metrics = trained
    _, x, y, student = data
    ckpt = Encoder.from_checkpoint(torch.load(out / "student.pt", weights_only=False))
    ckpt.eval()
    assert all(a.v_int8 for a in ckpt.attentions)
    mine = student_logits(ckpt, x)
    # The exported betas may differ from torch's by one float32 ulp (numpy's mean), which a
    # rare binarization flip can amplify; the typical sample is equal to float32 rounding.
    s = difference(student, mine)
    assert s["median"] <= 1e-5 and s["agreement"] >= 0.99, s
    accuracy = float((student.argmax(axis=1) == y.numpy()).mean())
    assert abs(accuracy - metrics["student_ternary_accuracy"]) <= 1 / len(y) + 1e-12
    # Trained with V quantized as deployed: the int8-V score is the student's score.
    assert metrics["student_ternary_int8_v_accuracy"] == metrics["student_ternary_accuracy"]
    assert "per sample and head" in metrics["value_quantization"]


def test_run_reports_the_students_accuracy_and_agreement(trained, data, tmp_path, capsys):
    out, _ = trained
    model, x, y, student = data
    report = tmp_path / "run.json"
    assert main(["run", str(out / "export"), "--golden", "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    r = json.loads(report.read_text())
    s_pred = student.argmax(axis=1)
    assert r["samples"] == len(y)
    assert r["student_pytorch_accuracy"] == float((s_pred == y.numpy()).mean())
    golden = forward(model, x, GoldenBackend(), progress=False)
    assert r["golden_accuracy"] == float((golden.argmax(axis=1) == y.numpy()).mean())
    assert r["golden_student_agreement"] == float((golden.argmax(axis=1) == s_pred).mean())
    assert r["golden_student_agreement"] >= AGREEMENT_MIN
    assert r["golden_student_max_logit_diff"] == pytest.approx(
        float(np.abs(golden.astype(np.float64) - student).max()))
    for key in ("golden_accuracy", "student_pytorch_accuracy", "golden_student_agreement",
                "golden_student_max_logit_diff"):
        assert f"  {key:24s} {r[key]}" in printed.splitlines()


class _GoldenAsHardware(GoldenBackend):
    """Stands in for the Verilator backend (same name), so that ``--both`` runs in seconds."""

    name = "verilator"


def test_both_reports_the_student_beside_hardware_and_golden(trained, data, monkeypatch):
    out, _ = trained
    _, _, y, student = data
    monkeypatch.setattr(run, "SimBackend", _GoldenAsHardware)
    r = run.run_exported(out / "export", both=True, samples=60, progress=False)
    assert r["hw_matches_golden"] is True
    s_pred = student[:60].argmax(axis=1)
    assert r["student_pytorch_accuracy"] == float((s_pred == y[:60].numpy()).mean())
    for be in ("golden", "verilator"):
        assert r[f"{be}_student_agreement"] >= AGREEMENT_MIN
        assert r[f"{be}_student_max_logit_diff"] >= 0.0
    assert r["verilator_student_agreement"] == r["golden_student_agreement"]
