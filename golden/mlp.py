r"""Golden models of the ternary MatMul-free GLU MLP block: the bit-exact integer model (the
hardware specification) and a float reference.

The block maps one token ``x`` (``d_model`` values) to ``y`` (``d_model`` values)::

    gate, up = split(BitLinear_gu(x))       # d_model -> 2*d_hidden; gate = first half
    h        = SiLU(gate) * up              # d_hidden
    y        = BitLinear_dn(h)              # d_hidden -> d_model

where each BitLinear is, in the reference model, ``RMSNorm(gain g, eps) -> per-token int8
absmax quantization -> ternary weights W_t with one scale beta``::

    x_n = g * x / sqrt(mean(x**2) + eps);   s = 127 / max(max|x_n|, 1e-5)
    x_q = clamp(round(x_n * s), -128, 127); out = (x_q @ W_t.T) * beta / s

This docstring is the specification the RTL implements bit for bit; :func:`mlp_int` is its
executable form and :func:`float_reference` the float64 model it is measured against.

Notation
--------
All quantities are integers. ``>>`` is an arithmetic (floor) right shift, ``<<`` a left shift.

- ``RHU(v, s) = (v + 2**(s-1)) >> s`` for ``s >= 1`` and ``v`` for ``s = 0``: round half up
  (towards +inf), the only rounding of the datapath.
- ``SAT(v, b) = min(max(v, -2**(b-1)), 2**(b-1) - 1)``: two's-complement saturation to ``b``
  bits.
- ``SHL(v, k)``: ``v << k`` for ``k >= 0``, ``v >> -k`` for ``k < 0`` (``v >= 0`` wherever it
  is used, so this truncates).
- ``bitlen(v)`` for ``v > 0``: the position of the leading one plus one (``bitlen(1) = 1``).
- ``isqrt(v)``: ``floor(sqrt(v))``, exact (e.g. digit-by-digit, one result bit per cycle).
- ``a // b``: floor division of non-negative integers, exact (e.g. restoring division).

Configuration symbols (:class:`hadware.config.mlp.MlpConfig`): ``W = mant_bits``,
``K = recip_frac_bits``, ``Wb = kappa_bits``, ``Wc = scale_bits``, ``Bg, Fg = gain_bits,
gain_frac_bits``; per layer ``n = fan_in``, input format ``(Bi, Fi)``, output format
``(Bo, Fo)``: ``(x_bits, x_frac_bits) -> (act_bits, act_frac_bits)`` for BitLinear_gu and
``(h_bits, h_frac_bits) -> (y_bits, y_frac_bits)`` for BitLinear_dn. The width of every register
named below is a property of ``cfg.gate_up`` / ``cfg.down``
(:class:`hadware.config.mlp.BitLinearGeometry`) or of the config.

Step 0 - the token input (testbench side)
-----------------------------------------
``X_i = SAT(floor(x_i * 2**x_frac_bits + 1/2), x_bits)``: float to fixed point, round half up,
saturating (:func:`quantize_input`). The output is ``y_i = Y_i / 2**y_frac_bits``.

Constants stored with the weights (computed once, :func:`quantize_weights`)
--------------------------------------------------------------------------
Per layer:

- codes ``T[j, i]`` in {-1, 0, +1} (:func:`hadware.sw.ternary_pack.ternarize` of the latent
  weights, once; packed in ROM by :func:`hadware.sw.ternary_pack.pack`, layout v1);
- gains ``G_i = floor(g_i * 2**Fg + 1/2)``; a gain outside the ``Bg``-bit range is an
  :class:`~hadware.errors.InputError` (never saturated silently);
- ``kappa = beta * sqrt(n) / 127`` as ``(Kc, ek) = to_mant_exp(kappa, Wb)``:
  ``kappa ~= Kc * 2**-ek``, ``2**(Wb-1) <= Kc < 2**Wb``. It folds the weight scale, the
  ``sqrt(n)`` of the RMS mean and the ``1/127`` of the activation scale into one constant;
- ``SH0 = ek + W + Fg - Fo - cs`` with ``cs = Wb + W + 1 - Wc``. It must be ``>= Bg`` so that every
  per-token shift below is at least 1; a beta too large for that is an
  :class:`~hadware.errors.InputError`. The limit is ``kappa < 2**(Wb - ek_min)`` with
  ``ek_min = Bg - W - Fg + Fo + cs``; with the defaults ``beta < 63.5 / sqrt(n)`` for
  BitLinear_gu and ``beta < 1016 / sqrt(n)`` for BitLinear_dn;
- ``E = floor(rms_eps * n * 2**(2 Fi) + 1/2)`` (the epsilon in units of the sum of squares;
  a function of the config only).

BitLinear, per token (inputs ``X_i``, ``i < n``; outputs ``OUT_j``, ``j < fan_out``)
----------------------------------------------------------------------------------
L1  ``P_i = X_i * G_i``                    exact, ``Bi + Bg`` bits signed (``product_bits``).
L2  ``S = sum_i X_i**2 + E``                exact, ``sumsq_bits`` unsigned.
L3  ``M = max_i |P_i|``                    ``Bi + Bg - 1`` bits unsigned (``absmax_bits``).
    **Zero token**: if ``M = 0`` (every ``P_i`` is 0: a zero input or zero gains), then every
    ``q_i = 0``, every ``acc_j = 0`` and every ``OUT_j = 0``; the scalar path L8 is skipped
    (its values are unspecified; the trace reports ``C = sh = 0``). Nothing divides by zero.
    Otherwise some ``X_i != 0``, so ``S >= 1``.
L4  Normalize by the absmax: ``e = bitlen(M)`` (1 .. ``absmax_bits``),
    ``A_i = SHL(|P_i|, W - e)`` and ``M_n = SHL(M, W - e)``, so
    ``2**(W-1) <= M_n < 2**W`` and ``0 <= A_i <= M_n`` (truncation when ``e > W``).
L5  One reciprocal per token: ``R = (127 * 2**(W+K)) // M_n``, in ``(127*2**K, 254*2**K]``,
    ``K + 8`` bits unsigned (``recip_bits``).
L6  Activation quantization, sign-magnitude:
    ``q_i = sign(P_i) * ((A_i * R + 2**(W+K-1)) >> (W+K))``.
    Because ``A_i <= M_n``, ``A_i * R <= 127 * 2**(W+K)`` and ``|q_i| <= 127``: the reference
    clamp to [-128, 127] never acts and ``q_i = -128`` never occurs. The magnitude is rounded
    half up, so ``q`` rounds half away from zero (the reference rounds half to even; they
    differ only on exact ties).
    This is ``round(127 * P_i / M)`` up to the truncations of L4/L5: the value before rounding
    differs from ``127 |P_i| / M`` by less than ``127 * 2**(1-W) / (1 - 2**(1-W)) + 2**-K``.
    **RMS cancellation**: the reference quantizes ``g*x/rms`` with scale
    ``127 / max|g*x/rms|``; the positive factor ``1/rms`` cancels, so ``q`` needs neither the
    RMS nor its epsilon. The reference's floor ``max(., 1e-5)`` on the absmax is not
    implemented: it only acts when ``max|x_n| < 1e-5`` yet ``M > 0``, which needs tiny gains on
    a token's large elements; both outputs are then below about ``n * beta * 1e-5`` in
    magnitude, so they differ by less than ``2.02 * n * beta * 1e-5``.
L7  Ternary sums: ``acc_j = sum_i T[j,i] * q_i``: each code adds ``+q_i``, ``-q_i`` or nothing
    (adder tree, no multiplier). ``|acc_j| <= 127 n``: ``8 + ceil(log2 n)`` bits signed
    (``acc_bits``).
L8  Per-token output scale. The factor ``1/rms`` does **not** cancel in the output: the
    reference output is ``acc * beta * max|x_n| / 127`` and ``max|x_n| = max|g x| / rms(x)``.
    In integers ``OUT_j = acc_j * kappa * M / sqrt(S) * 2**(Fo - Fg)``, computed as:

    - ``tau = ceil(bitlen(S) / 2)``; ``S_n = SHL(S, 2W - 2 tau)`` in ``[2**(2W-2), 2**(2W))``;
      ``U = isqrt(S_n)`` in ``[2**(W-1), 2**W)`` (``U * 2**(tau-W) ~= sqrt(S)``);
    - ``V = (M_n * 2**W) // U``, in ``[2**(W-1), 2**(W+1))``, ``W + 1`` bits;
    - ``C = (Kc * V) >> cs``, below ``2**Wc`` (``scale_bits``);
    - ``sh = SH0 + tau - e``; ``1 <= sh`` always (``tau - e >= 1 - Bg`` for every token);
      any ``sh >= scale_product_bits`` gives a zero result, so the RTL may clamp ``sh`` there.
L9  ``OUT_j = SAT(RHU(acc_j * C, sh), Bo)``; ``acc_j * C`` is ``scale_product_bits`` signed.

The relative error of the scale ``C * 2**-sh`` against the exact
``kappa * M / sqrt(S) * 2**(Fo-Fg)`` is, to first order, at most
``3 * 2**(1-W)`` (truncations of ``M_n``, ``U``, ``V``) ``+ 2**(3-Wc)`` (``C >= 2**(Wc-3)``)
``+ 2**-Wb`` (``Kc``), plus the effect of rounding ``E`` to an integer; L9 adds half an output
LSB.

GLU
---
``gate_j = OUT_j`` and ``up_j = OUT_{d_hidden + j}`` of BitLinear_gu, format
``(act_bits, act_frac_bits)``.

SiLU, piecewise linear over ``|gate| < 2**Lr`` (``Lr = silu_range_log2``, segments of
``2**-Fs`` with ``Fs = silu_seg_frac_bits``, table fraction ``Fl = silu_frac_bits``,
``Fa = act_frac_bits``), using ``SiLU(x) = x + SiLU(-x)`` so that the table covers the negative
half only:

- table ``N[k] = floor(SiLU(-k * 2**-Fs) * 2**Fl + 1/2)`` for ``k = 0 .. 2**(Lr+Fs)``, all
  ``<= 0`` (:func:`silu_table`; the RTL imports it rather than recomputing it);
- ``a = |gate|``; if ``a >= 2**(Lr+Fa)`` then ``nv = 0``; else ``k = a >> (Fa - Fs)``,
  ``fr = a mod 2**(Fa - Fs)`` and ``nv = N[k] + RHU((N[k+1] - N[k]) * fr, Fa - Fs)``;
- ``SL = nv`` if ``gate < 0`` else ``gate * 2**(Fl - Fa) + nv``: fraction ``Fl``,
  ``silu_out_bits`` signed. Beyond the table SiLU is therefore 0 (negative side) or the
  identity (positive side).

Its error against ``torch.nn.functional.silu`` is bounded by
``2**(-2 Fs - 4)`` (interpolation; ``max|SiLU''| = 1/2``) ``+ 2**-Fl`` (table and
interpolation rounding) ``+ 2**Lr / (1 + exp(2**Lr))`` (tails); :func:`silu_error_bound`. With
the defaults (Lr=4, Fs=6, Fl=18) that is 2.1e-5; measured 1.8e-5 (every gate value of the
default 24-bit format; tests/test_golden_mlp.py).

``h_j = SAT(RHU(SL_j * up_j, Fl + Fa - h_frac_bits), h_bits)``.

Then ``Y = BitLinear_dn(h)`` with its own gains, codes and constants (L1-L9 with ``n =
d_hidden``), and ``y = Y / 2**y_frac_bits``.

Multipliers per token (the only ones; everything else is adders, shifters and comparators)
----------------------------------------------------------------------------------------
- gains ``X_i * G_i``: ``d_model + d_hidden``;
- squares ``X_i**2`` for the RMS: ``d_model + d_hidden`` (needed because ``1/rms`` remains in
  the output scale, see L8);
- quantizer ``A_i * R`` (per-token scale): ``d_model + d_hidden``;
- output scale ``acc_j * C`` (per-token scale): ``2*d_hidden + d_model``;
- SiLU interpolation ``(N[k+1]-N[k]) * fr``: ``d_hidden`` (narrow: ``fr`` has
  ``act_frac_bits - silu_seg_frac_bits`` bits);
- GLU ``SL_j * up_j``: ``d_hidden``;
- scalar, once per layer per token: ``Kc * V`` (1), plus one division for ``R``, one ``isqrt``
  and one division for ``V`` (sequential units are enough).

The weights never multiply: each ternary code selects ``+q``, ``-q`` or nothing.

Accuracy
--------
Measured with the default formats, Xavier-scaled random latent weights, gains in [0.5, 1.5] and
N(0, 1) tokens (tests/test_golden_mlp.py), as the per-token relative L2 error of ``y`` against
:func:`float_reference` fed with the same input grid: median 0.011%, mean 0.05-0.10%, 90th
percentile 0.015-0.34% for d_model 16-64. Against the float input itself (adding the input
format's rounding) the mean is 0.12-0.27%.

The error is not uniform over tokens: the block is discontinuous at the int8 rounding
boundaries of both quantizers. A token whose value ``127 P_i / M`` falls within the datapath's
error of a half-integer rounds the other way than the float64 reference; one such flip in the
first layer moves every gate/up with a non-zero weight on that input by one q step and, through
SiLU and the second quantization,
moves ``y`` by about 1-2% (median 1.0-1.3%) for d_model 16-64. It hits 0.75-5% of random
tokens, more as d_model grows (more elements per token); tokens without such a flip stay below
0.72%. Only bit-identical float64 arithmetic would avoid it; wider formats only make it rarer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hadware.config.mlp import BitLinearGeometry, MlpConfig
from hadware.errors import InputError
from hadware.sw import ternary_pack
from hadware.sw.ternary_pack import BETA_MIN, LAYOUT, RequantizationError

__all__ = [
    "REFERENCE_ABSMAX_FLOOR",
    "BitLinearParams",
    "MlpWeights",
    "bitlinear_int",
    "check_inputs",
    "check_weights",
    "float_reference",
    "load_exported",
    "mlp_int",
    "quantize_input",
    "quantize_weights",
    "run_vectors",
    "run_vectors_int",
    "silu_error_bound",
    "silu_int",
    "silu_table",
]

#: The reference model's floor on the per-token absmax (not implemented in hardware, see L6).
REFERENCE_ABSMAX_FLOOR = 1e-5


# -- weights -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class BitLinearParams:
    """Everything one BitLinear layer of the hardware stores.

    Attributes
    ----------
    name : str
        ``"gate_up"`` or ``"down"``.
    codes : numpy.ndarray
        int8 ternary codes, shape ``(fan_out, fan_in)``.
    beta : float
        The weight scale, as :func:`~hadware.sw.ternary_pack.ternarize` returned it.
    gain : numpy.ndarray
        float64 RMSNorm gains, shape ``(fan_in,)`` (used by the float reference).
    gain_fx : numpy.ndarray
        int64 fixed-point gains ``G_i`` (fraction ``gain_frac_bits``).
    kappa_mant, kappa_exp : int
        ``(Kc, ek)``: ``beta * sqrt(fan_in) / 127 ~= Kc * 2**-ek``.
    shift0 : int
        ``SH0``, the per-layer part of the output shift.
    """

    name: str
    codes: np.ndarray
    beta: float
    gain: np.ndarray
    gain_fx: np.ndarray
    kappa_mant: int
    kappa_exp: int
    shift0: int


@dataclasses.dataclass(frozen=True, eq=False)
class MlpWeights:
    """The quantized weights of one MLP block for a given configuration.

    Build it with :func:`quantize_weights` (from latent float weights, quantizing once) or
    :func:`load_exported` (from :meth:`export` output, never quantizing again).
    """

    cfg: MlpConfig
    gate_up: BitLinearParams
    down: BitLinearParams

    def rom_words(self, layer: str) -> np.ndarray:
        """The ROM image of a layer's codes (``"gate_up"`` or ``"down"``) in the current
        packing layout."""
        return ternary_pack.pack(getattr(self, layer).codes)

    def export(self) -> dict[str, np.ndarray]:
        """The arrays to save (for example with ``numpy.savez``) and to reload with
        :func:`load_exported`: packed codes, betas, float gains and the layout version."""
        out: dict[str, np.ndarray] = {"layout_version": np.array(LAYOUT.version)}
        for p in (self.gate_up, self.down):
            out[f"rom_{p.name}"] = self.rom_words(p.name)
            out[f"beta_{p.name}"] = np.array(p.beta, dtype=np.float64)
            out[f"g_{p.name}"] = p.gain.copy()
        return out


def _weight_shapes(cfg: MlpConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        "w_gate_up": ((2 * cfg.d_hidden, cfg.d_model), "(2*d_hidden, d_model)"),
        "w_down": ((cfg.d_model, cfg.d_hidden), "(d_model, d_hidden)"),
        "g_gate_up": ((cfg.d_model,), "(d_model,)"),
        "g_down": ((cfg.d_hidden,), "(d_hidden,)"),
    }


def _check_array(source: str, name: str, arrays: Mapping[str, Any],
                 shape: tuple[int, ...], shape_text: str) -> np.ndarray:
    if name not in arrays:
        raise InputError(f"{source}: array {name!r} is missing")
    a = np.asarray(arrays[name])
    if a.dtype.kind not in "iuf":
        raise InputError(f"{source}: {name!r} must be a real-valued array, not {a.dtype}")
    if a.shape != shape:
        raise InputError(f"{source}: {name!r} has shape {a.shape}, expected {shape_text} = "
                         f"{shape}")
    finite = np.isfinite(a)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"{source}: {name!r} contains NaN or infinite values "
                         f"({int((~finite).sum())}, the first at index {first})")
    return a


def _check_keys(source: str, arrays: Mapping[str, Any], known: list[str]) -> None:
    if not isinstance(arrays, Mapping):
        raise InputError(f"{source}: expected a mapping of array names to arrays, "
                         f"not {type(arrays).__name__}")
    unknown = sorted(set(arrays) - set(known))
    if unknown:
        raise InputError(f"{source}: unknown array(s) {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(known)}")


def check_weights(cfg: MlpConfig, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check the latent weight arrays of W.npz and return them.

    Expects exactly ``w_gate_up`` (2*d_hidden, d_model), ``w_down`` (d_model, d_hidden),
    ``g_gate_up`` (d_model,) and ``g_down`` (d_hidden,), real-valued and finite. Raises
    :class:`~hadware.errors.InputError` naming the array for a missing or unknown array, a wrong
    shape or dtype, or a NaN/infinite value.
    """
    shapes = _weight_shapes(cfg)
    _check_keys("W.npz", arrays, list(shapes))
    return {k: _check_array("W.npz", k, arrays, s, t) for k, (s, t) in shapes.items()}


def check_inputs(cfg: MlpConfig, arrays: Mapping[str, Any]) -> np.ndarray:
    """Check IN.npz and return ``x`` as float64, shape ``(t, d_model)`` (``t >= 0``).

    Raises :class:`~hadware.errors.InputError` naming ``x`` when it is missing, not 2-D with
    ``d_model`` columns, not real-valued, or holds NaN/infinite values, and for unknown arrays.
    """
    _check_keys("IN.npz", arrays, ["x"])
    if "x" not in arrays:
        raise InputError("IN.npz: array 'x' is missing")
    shape = np.shape(arrays["x"])
    if len(shape) != 2 or shape[1] != cfg.d_model:
        raise InputError(f"IN.npz: 'x' has shape {shape}, expected (t, d_model) = "
                         f"(t, {cfg.d_model})")
    return _check_array("IN.npz", "x", arrays, shape, "(t, d_model)").astype(np.float64)


def _make_layer(geom: BitLinearGeometry, codes: np.ndarray, beta: float,
                gain: np.ndarray, w_name: str, g_name: str) -> BitLinearParams:
    gain = np.asarray(gain, dtype=np.float64)
    g_fx = np.floor(gain * 2.0 ** geom.gain_frac_bits + 0.5)
    lo, hi = -(2 ** (geom.gain_bits - 1)), 2 ** (geom.gain_bits - 1) - 1
    bad = (g_fx < lo) | (g_fx > hi)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise InputError(f"{g_name}[{i}] = {float(gain[i])!r} does not fit the gain format "
                         f"({geom.gain_bits} bits, {geom.gain_frac_bits} fraction bits: "
                         f"[{lo / 2 ** geom.gain_frac_bits}, {hi / 2 ** geom.gain_frac_bits}])")
    if not (math.isfinite(beta) and beta >= float(np.float32(BETA_MIN))):
        raise InputError(f"beta of {w_name} must be finite and at least {BETA_MIN} (as "
                         f"float32), not {beta!r}")
    kappa = beta * math.sqrt(geom.fan_in) / 127.0
    mant, exp = ternary_pack.to_mant_exp(kappa, geom.kappa_bits)
    shift0 = geom.shift0(exp)
    if shift0 < geom.shift0_min():
        ek_min = exp + geom.shift0_min() - shift0
        beta_max = 127.0 * 2.0 ** (geom.kappa_bits - ek_min) / math.sqrt(geom.fan_in)
        raise InputError(f"beta of {w_name} is {beta!r}, too large for the output format "
                         f"({geom.out_bits} bits, {geom.out_frac_bits} fraction bits): "
                         f"it must be below about {beta_max:.6g}")
    return BitLinearParams(name=geom.name, codes=np.ascontiguousarray(codes, dtype=np.int8),
                           beta=float(beta), gain=gain.copy(), gain_fx=g_fx.astype(np.int64),
                           kappa_mant=mant, kappa_exp=exp, shift0=shift0)


def quantize_weights(cfg: MlpConfig, w: Mapping[str, Any]) -> MlpWeights:
    """Quantize the latent float weights of W.npz for the hardware, once.

    Ternarizes ``w_gate_up`` and ``w_down`` (:func:`hadware.sw.ternary_pack.ternarize`) and
    converts gains and betas to the constants of the specification. Raises
    :class:`~hadware.errors.InputError` as :func:`check_weights` does, for a gain outside the
    gain format and for a beta too large for the output format, and
    :class:`~hadware.sw.ternary_pack.RequantizationError` (naming the array) for weights that
    are already ternary-valued.
    """
    a = check_weights(cfg, w)
    layers = {}
    for geom in (cfg.gate_up, cfg.down):
        w_name, g_name = f"w_{geom.name}", f"g_{geom.name}"
        try:
            codes, beta = ternary_pack.ternarize(a[w_name])
        except RequantizationError as e:
            raise RequantizationError(f"W.npz: {w_name!r}: {e}") from None
        layers[geom.name] = _make_layer(geom, codes, beta, a[g_name], w_name, g_name)
    return MlpWeights(cfg=cfg, **layers)


def load_exported(cfg: MlpConfig, arrays: Mapping[str, Any]) -> MlpWeights:
    """Rebuild :class:`MlpWeights` from :meth:`MlpWeights.export` output without quantizing
    anything again: codes are unpacked from the ROM words and betas are taken as stored.

    Raises :class:`~hadware.errors.InputError` for a missing array, a layout version other than
    the current one, a wrong gain shape or a bad beta, and
    :class:`~hadware.sw.ternary_pack.TernaryError` for ROM words that do not decode.
    """
    source = "exported weights"
    names = ["layout_version"] + [f"{k}_{n}" for n in ("gate_up", "down")
                                  for k in ("rom", "beta", "g")]
    _check_keys(source, arrays, names)
    for k in names:
        if k not in arrays:
            raise InputError(f"{source}: array {k!r} is missing")
    version = int(np.asarray(arrays["layout_version"]))
    if version != LAYOUT.version:
        raise InputError(f"{source}: packing layout version {version} is not supported "
                         f"(this version writes and reads {LAYOUT.version})")
    layers = {}
    for geom in (cfg.gate_up, cfg.down):
        n = geom.name
        codes = ternary_pack.unpack(np.asarray(arrays[f"rom_{n}"]), geom.fan_out, geom.fan_in)
        beta = float(_check_array(source, f"beta_{n}", arrays, (), "a scalar"))
        gain = _check_array(source, f"g_{n}", arrays, (geom.fan_in,), "(fan_in,)")
        layers[n] = _make_layer(geom, codes, beta, gain, f"rom_{n}", f"g_{n}")
    return MlpWeights(cfg=cfg, **layers)


# -- integer model -------------------------------------------------------------------------------


def quantize_input(cfg: MlpConfig, x: Any) -> torch.Tensor:
    """Step 0: ``X = SAT(floor(x * 2**x_frac_bits + 1/2), x_bits)`` as int64, shape kept."""
    xf = torch.tensor(np.asarray(x, dtype=np.float64))
    lo, hi = -(2 ** (cfg.x_bits - 1)), 2 ** (cfg.x_bits - 1) - 1
    v = torch.floor(xf * 2.0 ** cfg.x_frac_bits + 0.5).clamp(lo, hi)
    return v.to(torch.int64)


def _bitlen(v: torch.Tensor) -> torch.Tensor:
    n = torch.zeros_like(v)
    for k in range(63):
        n += ((v >> k) != 0).to(torch.int64)
    return n


def _shl(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.where(k >= 0, v << k.clamp(min=0), v >> (-k).clamp(min=0))


def _isqrt(v: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt(v.to(torch.float64)).floor().to(torch.int64)
    for _ in range(2):
        r = torch.where(r * r > v, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


def _rhu(v: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    if isinstance(s, int):
        return v if s == 0 else (v + (1 << (s - 1))) >> s
    half = torch.where(s > 0, torch.ones_like(s) << (s - 1).clamp(min=0), torch.zeros_like(s))
    return (v + half) >> s


def _sat(v: torch.Tensor, bits: int) -> torch.Tensor:
    return v.clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def bitlinear_int(geom: BitLinearGeometry, layer: BitLinearParams,
                  x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Steps L1-L9 of the specification for a batch of tokens.

    ``x`` is int64 ``(t, fan_in)`` in the layer's input format. Returns int64 tensors: ``"q"``
    ``(t, fan_in)``, ``"acc"`` and ``"out"`` ``(t, fan_out)``, and the per-token scalars
    ``"M"``, ``"S"``, ``"e"``, ``"tau"``, ``"M_n"``, ``"R"``, ``"U"``, ``"V"``, ``"C"``,
    ``"sh"`` of shape ``(t,)`` (``C`` and ``sh`` are 0 for a zero token).
    """
    W, K = geom.mant_bits, geom.recip_frac_bits
    g = torch.tensor(layer.gain_fx, dtype=torch.int64)
    codes = torch.tensor(layer.codes, dtype=torch.int64)
    p = x * g                                                       # L1
    s = (x * x).sum(dim=1) + geom.eps_fx                            # L2
    absp = p.abs()
    m = absp.amax(dim=1) if x.shape[0] else torch.zeros(0, dtype=torch.int64)   # L3
    zero = m == 0
    m_safe = torch.where(zero, torch.ones_like(m), m)
    s_safe = torch.where(s == 0, torch.ones_like(s), s)
    e = _bitlen(m_safe)                                             # L4
    a = _shl(absp, (W - e)[:, None])
    m_n = _shl(m_safe, W - e)
    r = (127 << (W + K)) // m_n                                     # L5
    q = torch.sign(p) * ((a * r[:, None] + (1 << (W + K - 1))) >> (W + K))  # L6
    acc = q @ codes.T                                               # L7
    tau = (_bitlen(s_safe) + 1) // 2                                # L8
    u = _isqrt(_shl(s_safe, 2 * W - 2 * tau))
    v = (m_n << W) // u
    c = (layer.kappa_mant * v) >> geom.scale_shift
    sh = layer.shift0 + tau - e
    if bool((sh < 1).any()):  # excluded by the SH0 check in _make_layer
        raise RuntimeError(f"{geom.name}: per-token shift below 1; the constants are invalid")
    sh = sh.clamp(max=geom.scale_product_bits)
    out = _sat(_rhu(acc * c[:, None], sh[:, None]), geom.out_bits)  # L9
    c = torch.where(zero, torch.zeros_like(c), c)
    sh = torch.where(zero, torch.zeros_like(sh), sh)
    return {"q": q, "acc": acc, "out": out, "M": m, "S": s, "e": e, "tau": tau, "M_n": m_n,
            "R": r, "U": u, "V": v, "C": c, "sh": sh}


def silu_table(cfg: MlpConfig) -> tuple[int, ...]:
    """The SiLU table ``N[k] = floor(SiLU(-k * 2**-Fs) * 2**Fl + 1/2)``,
    ``k = 0 .. 2**(silu_range_log2 + silu_seg_frac_bits)``; every entry is ``<= 0``."""
    out = []
    for k in range(cfg.silu_table_size):
        u = k / 2 ** cfg.silu_seg_frac_bits
        out.append(math.floor(-u / (1.0 + math.exp(u)) * 2 ** cfg.silu_frac_bits + 0.5))
    return tuple(out)


def silu_int(cfg: MlpConfig, gate: torch.Tensor) -> torch.Tensor:
    """The fixed-point SiLU of the specification: ``gate`` int64 in ``(act_bits,
    act_frac_bits)``, result int64 with ``silu_frac_bits`` fraction bits."""
    table = torch.tensor(silu_table(cfg), dtype=torch.int64)
    fb = cfg.silu_interp_bits
    a = gate.abs()
    inside = a < 2 ** (cfg.silu_range_log2 + cfg.act_frac_bits)
    a = torch.where(inside, a, torch.zeros_like(a))
    k = a >> fb
    fr = a & (2 ** fb - 1)
    n0, n1 = table[k], table[k + 1]
    nv = torch.where(inside, n0 + _rhu((n1 - n0) * fr, fb), torch.zeros_like(a))
    lift = cfg.silu_frac_bits - cfg.act_frac_bits
    return torch.where(gate < 0, nv, (gate << lift) + nv)


def silu_error_bound(cfg: MlpConfig) -> float:
    """Upper bound of ``|SL / 2**Fl - silu(gate / 2**Fa)|`` over all gate values (docstring)."""
    interp = 2.0 ** (-2 * cfg.silu_seg_frac_bits) / 8 * 0.5
    rounding = 2.0 ** -cfg.silu_frac_bits
    r = 2.0 ** cfg.silu_range_log2
    return interp + rounding + r / (1.0 + math.exp(r))


def mlp_int(cfg: MlpConfig, weights: MlpWeights, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The integer model of the whole block on int64 tokens ``x`` ``(t, d_model)`` (input
    format, see :func:`quantize_input`).

    Returns the trace: ``"x"``, ``"gate"``, ``"up"``, ``"silu"``, ``"h"``, ``"y"`` (the block
    output ``Y``) and every entry of :func:`bitlinear_int` for both layers, prefixed
    ``"gate_up."`` and ``"down."``.
    """
    x = (x if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x))).to(torch.int64)
    if x.ndim != 2 or x.shape[1] != cfg.d_model:
        raise InputError(f"x must have shape (t, d_model={cfg.d_model}), not {tuple(x.shape)}")
    lo, hi = -(2 ** (cfg.x_bits - 1)), 2 ** (cfg.x_bits - 1) - 1
    if x.numel() and (int(x.min()) < lo or int(x.max()) > hi):
        raise InputError(f"x holds values outside the {cfg.x_bits}-bit input format")
    t1 = bitlinear_int(cfg.gate_up, weights.gate_up, x)
    gate, up = t1["out"][:, :cfg.d_hidden], t1["out"][:, cfg.d_hidden:]
    sl = silu_int(cfg, gate)
    h = _sat(_rhu(sl * up, cfg.glu_shift), cfg.h_bits)
    t2 = bitlinear_int(cfg.down, weights.down, h)
    trace = {"x": x, "gate": gate, "up": up, "silu": sl, "h": h, "y": t2["out"]}
    trace.update({f"gate_up.{k}": v for k, v in t1.items()})
    trace.update({f"down.{k}": v for k, v in t2.items()})
    return trace


def as_weights(cfg: MlpConfig, weights: Mapping[str, Any] | MlpWeights) -> MlpWeights:
    """:class:`MlpWeights` from any of: an :class:`MlpWeights`, exported arrays
    (:meth:`MlpWeights.export`, recognised by their ``layout_version``; loaded without
    quantizing again) or latent float weights (W.npz; quantized once)."""
    if isinstance(weights, MlpWeights):
        if weights.cfg != cfg:
            raise InputError("the weights were quantized for a different configuration")
        return weights
    if "layout_version" in weights:
        return load_exported(cfg, weights)
    return quantize_weights(cfg, weights)


_weights = as_weights


def run_vectors_int(cfg: MlpConfig, weights_arrays: Mapping[str, Any] | MlpWeights,
                    input_arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The hardware's integers for a vector file: ``{"x": X, "y": Y}``, int64
    ``(t, d_model)``, ``X`` being what the testbench drives and ``Y`` what the block must
    return, bit for bit. ``weights_arrays`` is W.npz (latent floats) or :class:`MlpWeights`."""
    w = _weights(cfg, weights_arrays)
    x = quantize_input(cfg, check_inputs(cfg, input_arrays))
    trace = mlp_int(cfg, w, x)
    return {"x": trace["x"].numpy(), "y": trace["y"].numpy()}


def run_vectors(cfg: MlpConfig, weights_arrays: Mapping[str, Any] | MlpWeights,
                input_arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """OUT.npz for IN.npz: ``{"y": float32 (t, d_model)}``, ``y = Y / 2**y_frac_bits`` (exact)."""
    y = run_vectors_int(cfg, weights_arrays, input_arrays)["y"]
    return {"y": (y.astype(np.float64) / 2.0 ** cfg.y_frac_bits).astype(np.float32)}


# -- float reference -----------------------------------------------------------------------------


def _bitlinear_float(x: torch.Tensor, layer: BitLinearParams, eps: float) -> torch.Tensor:
    g = torch.tensor(layer.gain, dtype=torch.float64)
    xn = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * g
    s = 127.0 / xn.abs().amax(dim=-1, keepdim=True).clamp(min=REFERENCE_ABSMAX_FLOOR)
    xq = (xn * s).round().clamp(-128, 127)
    return (xq @ torch.tensor(layer.codes, dtype=torch.float64).T) * layer.beta / s


def float_reference(cfg: MlpConfig, weights: MlpWeights, x: Any, *,
                    on_input_grid: bool = False) -> np.ndarray:
    """The BitLinear GLU in float64 with the same ternary codes and betas as the hardware,
    the float gains, float RMSNorm (eps ``cfg.rms_eps``), float absmax int8 activation
    quantization (``torch.round``, floor 1e-5) and exact SiLU.

    ``x`` is float ``(t, d_model)``, checked as :func:`check_inputs` does. With
    ``on_input_grid=True`` it is first rounded and saturated to the hardware's input format
    (step 0), which isolates the datapath's error from that of the input format. Returns
    float64 ``(t, d_model)``.
    """
    xf = check_inputs(cfg, {"x": x})
    if on_input_grid:
        xf = quantize_input(cfg, xf).numpy() / 2.0 ** cfg.x_frac_bits
    xt = torch.tensor(xf, dtype=torch.float64)
    gu = _bitlinear_float(xt, weights.gate_up, cfg.rms_eps)
    gate, up = gu[:, :cfg.d_hidden], gu[:, cfg.d_hidden:]
    h = torch.nn.functional.silu(gate) * up
    return _bitlinear_float(h, weights.down, cfg.rms_eps).numpy()
