"""The encoder layer's vector-file contract and its quantized weights, in numpy only.

What the hardware generator (:mod:`hadware.hw.encoder_layer`, which bakes the weights into
ROMs), the golden model (:mod:`hadware.golden.encoder_layer`) and the testbench must agree on:

- W.npz, latent float weights as a trained model has them (:func:`check_weights`):
  ``w_qkv`` ``(3 d_model, d_model)`` (rows Q, then K, then V; heads contiguous inside each),
  ``g_qkv`` ``(d_model,)``, ``w_o`` ``(d_model, d_model)``, ``g_o`` ``(d_model,)``, and the
  MLP's ``w_gate_up`` ``(2 d_hidden, d_model)``, ``g_gate_up`` ``(d_model,)``, ``w_down``
  ``(d_model, d_hidden)``, ``g_down`` ``(d_hidden,)``. The value rule's scale is the config's
  ``v_shift`` (:func:`choose_v_shift` picks it from calibration data at export).
- IN.npz (:func:`check_inputs`): ``x`` float ``(b, n, d_model)``, ``b`` sequences of ``n``
  tokens (1 to ``n_max``), and optionally ``n_valid`` int ``(b,)`` in ``1 .. n``, the length
  of each sequence (default ``n``). Tokens at and beyond a sequence's ``n_valid`` are ignored
  (never sent to the hardware). Every used value must fit the residual format (rounded half
  up to ``res_frac_bits`` fraction bits, within ``res_bits`` bits); one that does not is
  refused, naming sequence, token and element, never saturated.
- OUT.npz: ``y`` float32 ``(b, n, d_model)`` (rows at and beyond ``n_valid`` are 0) and
  ``saturations`` int64 ``(b,)``, the number of saturated elements of each sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from hadware.errors import InputError
from hadware.spec.mlp import (
    BitLinearParams,
    MlpWeights,
    check_array,
    check_keys,
    make_layer,
    quantize_codes,
)

if TYPE_CHECKING:
    from hadware.config.encoder_layer import EncoderLayerConfig

__all__ = [
    "EncoderLayerWeights",
    "as_weights",
    "check_inputs",
    "check_weights",
    "choose_v_shift",
    "quantize_inputs",
    "quantize_weights",
]

MLP_ARRAYS = ("w_gate_up", "g_gate_up", "w_down", "g_down")


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderLayerWeights:
    """The quantized weights of one layer: the QKV and output BitLinears' constants
    (:class:`~hadware.spec.mlp.BitLinearParams`) and the MLP's (:class:`~hadware.spec.mlp.
    MlpWeights` for ``cfg.mlp``)."""

    cfg: EncoderLayerConfig
    qkv: BitLinearParams
    o: BitLinearParams
    mlp: MlpWeights


def _weight_shapes(cfg: EncoderLayerConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    d, f = cfg.d_model, cfg.d_hidden
    return {
        "w_qkv": ((3 * d, d), "(3*d_model, d_model)"),
        "g_qkv": ((d,), "(d_model,)"),
        "w_o": ((d, d), "(d_model, d_model)"),
        "g_o": ((d,), "(d_model,)"),
        "w_gate_up": ((2 * f, d), "(2*d_hidden, d_model)"),
        "g_gate_up": ((d,), "(d_model,)"),
        "w_down": ((d, f), "(d_model, d_hidden)"),
        "g_down": ((f,), "(d_hidden,)"),
    }


def check_weights(cfg: EncoderLayerConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check W.npz and return its arrays (float64). Raises :class:`~hadware.errors.InputError`
    naming the array for a missing or unknown array, a wrong shape or dtype, a NaN or an
    infinite value."""
    shapes = _weight_shapes(cfg)
    check_keys("W.npz", arrays, list(shapes))
    return {k: check_array("W.npz", k, arrays, s, t).astype(np.float64)
            for k, (s, t) in shapes.items()}


def _layer(geom, w: np.ndarray, gain: np.ndarray, w_name: str,
           g_name: str) -> BitLinearParams:
    codes, beta = quantize_codes(geom, w, w_name)
    return make_layer(geom, codes, beta, gain, w_name, g_name)


def quantize_weights(cfg: EncoderLayerConfig, arrays: Mapping[str, Any]) -> EncoderLayerWeights:
    """Quantize W.npz once: each of the four matrices in the config's weight format with its
    own scale (:mod:`hadware.spec.weights`), gains and scales turned into the BitLinear
    constants (the MLP's through :func:`hadware.spec.mlp.quantize_weights`). Errors as
    :func:`check_weights`, plus a gain outside the gain format or a scale too large for a
    layer's output format, naming the array."""
    from hadware.spec.mlp import quantize_weights as mlp_quantize

    a = check_weights(cfg, arrays)
    qkv = _layer(cfg.qkv, a["w_qkv"], a["g_qkv"], "w_qkv", "g_qkv")
    o = _layer(cfg.o_proj, a["w_o"], a["g_o"], "w_o", "g_o")
    mlp = mlp_quantize(cfg.mlp, {k: a[k] for k in MLP_ARRAYS})
    return EncoderLayerWeights(cfg=cfg, qkv=qkv, o=o, mlp=mlp)


def as_weights(cfg: EncoderLayerConfig,
               weights: Mapping[str, Any] | EncoderLayerWeights) -> EncoderLayerWeights:
    """:class:`EncoderLayerWeights` from W.npz arrays (quantized once) or as given (then they
    must have been quantized for ``cfg``)."""
    if isinstance(weights, EncoderLayerWeights):
        if weights.cfg != cfg:
            raise InputError("the weights were quantized for a different configuration")
        return weights
    return quantize_weights(cfg, weights)


def check_inputs(cfg: EncoderLayerConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check IN.npz; return ``{"x": float64 (b, n, d_model), "n_valid": int64 (b,)}``.

    Raises :class:`~hadware.errors.InputError` naming the array: unknown or missing arrays,
    ``x`` not 3-D with ``d_model`` columns, ``n`` outside ``1 .. n_max``, NaN or infinite
    values, ``n_valid`` not integers of shape ``(b,)`` in ``1 .. n``, and a used value outside
    the residual format (:func:`quantize_inputs`)."""
    check_keys("IN.npz", arrays, ["x", "n_valid"])
    if "x" not in arrays:
        raise InputError("IN.npz: array 'x' is missing")
    shape = np.shape(arrays["x"])
    if len(shape) != 3 or shape[2] != cfg.d_model:
        raise InputError(f"IN.npz: 'x' has shape {shape}, expected (b, n, d_model) = "
                         f"(b, n, {cfg.d_model})")
    b, n, _ = shape
    if not 1 <= n <= cfg.n_max:
        raise InputError(f"IN.npz: 'x' has {n} tokens per sequence (shape {shape}); the "
                         f"layer takes 1 to n_max = {cfg.n_max}")
    x = check_array("IN.npz", "x", arrays, shape, "(b, n, d_model)").astype(np.float64)
    if "n_valid" in arrays:
        nv = np.asarray(arrays["n_valid"])
        if nv.shape != (b,):
            raise InputError(f"IN.npz: 'n_valid' has shape {nv.shape}, expected (b,) = ({b},)")
        if nv.dtype.kind not in "iu":
            raise InputError(f"IN.npz: 'n_valid' must hold integers, not {nv.dtype}")
        bad = (nv < 1) | (nv > n)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise InputError(f"IN.npz: 'n_valid'[{i}] = {int(nv[i])} is outside 1 .. n = {n}")
        nv = nv.astype(np.int64)
    else:
        nv = np.full(b, n, dtype=np.int64)
    out = {"x": x, "n_valid": nv}
    quantize_inputs(cfg, out)
    return out


def quantize_inputs(cfg: EncoderLayerConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """The residual-format integers ``X = floor(x * 2**res_frac_bits + 1/2)`` of checked
    inputs (int64 ``(b, n, d_model)``; tokens at and beyond ``n_valid`` are 0). A used value
    outside ``res_bits`` bits is an :class:`~hadware.errors.InputError` naming sequence,
    token and element."""
    x, nv = np.asarray(arrays["x"], dtype=np.float64), np.asarray(arrays["n_valid"])
    used = np.arange(x.shape[1])[None, :] < nv[:, None]
    v = np.where(used[:, :, None], np.floor(x * 2.0 ** cfg.res_frac_bits + 0.5), 0.0)
    lo, hi = -(2 ** (cfg.res_bits - 1)), 2 ** (cfg.res_bits - 1) - 1
    bad = (v < lo) | (v > hi)
    if bad.any():
        s, t, i = (int(k) for k in np.argwhere(bad)[0])
        step = 2.0 ** -cfg.res_frac_bits
        raise InputError(f"IN.npz: 'x'[{s}, {t}, {i}] = {float(x[s, t, i])!r} is outside the "
                         f"residual format ({cfg.res_bits} bits, {cfg.res_frac_bits} fraction "
                         f"bits: [{lo * step}, {hi * step}])")
    return v.astype(np.int64)


def choose_v_shift(cfg: EncoderLayerConfig, v_calib: Any) -> int:
    """The value rule's shift for calibration values ``v_calib`` (floats, any shape; the value
    rows of the QKV projection on calibration data): the smallest ``v_shift`` at which the
    largest ``|v|`` rounds into int8 (``|v| * 2**(qkv_frac_bits - v_shift) <= 127.5``).
    Raises :class:`~hadware.errors.InputError` when no shift of the config's range does."""
    v = np.asarray(v_calib, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        raise InputError("v_calib must be a non-empty array of finite values")
    peak = float(np.abs(v).max())
    for s in range(cfg.qkv_bits):
        if peak * 2.0 ** (cfg.qkv_frac_bits - s) < 127.5:
            return s
    raise InputError(f"v_calib peaks at {peak!r}, beyond int8 at every v_shift below qkv_bits "
                     f"({cfg.qkv_bits}): widen qkv_bits")

