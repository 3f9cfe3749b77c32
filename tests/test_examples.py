"""The pure parts of ``examples/minilm_attention.py`` (no model needed: the optional
``.[examples]`` dependencies are imported only where the model is read), and its batched file
through the golden model: each copy of a context with its own temperature and k equals the
build-time configuration of that temperature."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from hadware.config.attention import AttentionConfig
from hadware.golden import attention as golden

PATH = Path(__file__).resolve().parent.parent / "examples" / "minilm_attention.py"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("minilm_attention", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["minilm_attention"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["minilm_attention"]


def test_binarize_and_quantize(ex):
    np.testing.assert_array_equal(ex.binarize([-0.5, 0.0, 2.0]), [-1, 1, 1])
    q, scale = ex.quantize_values(np.array([[1.0, -2.54], [0.01, 0.0]]))
    assert scale == pytest.approx(2.54 / 127)
    np.testing.assert_array_equal(q, [[50, -127], [0, 0]])
    assert ex.quantize_values(np.zeros((2, 2)))[1] == 1.0


def test_head_temperature_and_frac_bits(ex):
    rng = np.random.default_rng(0)
    q, k = rng.normal(0, 2, (400, 32)), rng.normal(0, 3, (400, 32))
    assert ex.head_temperature(q, k) == pytest.approx(np.std(q) * np.std(k) / math.sqrt(32))
    for top_k in (4, 16, 25):
        f = ex.exp_frac_bits_for(top_k)
        assert 2.0 ** (f - 8) >= 291.43 * (top_k - 1) > 2.0 ** (f - 9)
        cfg = AttentionConfig(d=32, n_max=32, top_k=top_k, d_v=4, exp_frac_bits=f,
                              out_frac_bits=8)
        assert cfg.error_bound_ulp <= 1.0
    with pytest.raises(ValueError, match="more than 24"):
        ex.exp_frac_bits_for(1 << 12)


def test_build_batch_pads_and_limits(ex):
    rng = np.random.default_rng(1)
    ctxs = [(rng.normal(size=(t, 8)), rng.normal(size=(t, 8)), rng.normal(size=(t, 3)))
            for t in (2, 5)]
    arrays, scales = ex.build_batch(ctxs)
    assert arrays["q"].shape == (2, 5, 8) and arrays["v"].shape == (2, 5, 3)
    assert (arrays["q"][0, 2:] == 1).all() and (arrays["v"][0, 2:] == 0).all()
    np.testing.assert_array_equal(arrays["n_valid"], [[2] * 5, [5] * 5])
    assert scales.shape == (2,)
    with pytest.raises(ValueError, match="more than n_max = 4"):
        ex.build_batch(ctxs, n_max=4)


def test_fidelity_counts_real_queries_only(ex):
    out = np.array([[[1.0, 0.0], [5.0, 5.0]]])
    ref = np.array([[[2.0, 0.0], [-1.0, 1.0]]])
    f = ex.fidelity(out, ref, [1], np.array([[3, 0]]), np.array([[[3, -1], [0, 1]]]))
    assert f == {"mean_cosine": 1.0, "top_key_recall": 1.0, "queries": 1}
    f = ex.fidelity(out, ref, [2], np.array([[3, 2]]), np.array([[[3, -1], [0, 1]]]))
    assert f["queries"] == 2 and f["top_key_recall"] == 0.5 and f["mean_cosine"] == 0.5


def test_one_file_of_every_temperature_and_k_equals_the_builds_of_each(ex):
    """The example's file through the golden model of one run-time build: each copy i of the
    contexts (k = top_ks[i], a temperature per head) equals the build-time configuration of
    that entry's temperature."""
    rng = np.random.default_rng(2)
    ctxs = [(rng.normal(size=(t, 32)), rng.normal(size=(t, 32)), rng.normal(size=(t, 32)))
            for t in (3, 9, 6)]
    arrays, _ = ex.build_batch(ctxs)
    taus = np.array([0.02, 0.3, 0.07])
    top_ks = (2, 4, 9)
    f = ex.exp_frac_bits_for(9)
    cfg = AttentionConfig(d=32, n_max=9, top_k=9, d_v=32, temperature=0.1, exp_frac_bits=f,
                          runtime_temperature=True)
    file = ex.with_runtime_parameters(arrays, taus, top_ks)
    assert file["q"].shape[0] == 9 and file["top_k"].shape == (9, 9)
    got = golden.run_vectors(cfg, file)
    for i, k in enumerate(top_ks):
        for e, tau in enumerate(taus):
            rom = dataclasses.replace(cfg, temperature=float(tau), runtime_temperature=False)
            one = {x: arrays[x][e] for x in arrays} | {"top_k": np.full(9, k)}
            want = golden.run_vectors(rom, one)
            for name in want:
                np.testing.assert_array_equal(got[name][i * 3 + e], want[name])
            assert (got["topk_index"][i * 3 + e][:, k:] == -1).all()
