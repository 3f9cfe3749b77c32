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
Block floating point, one exponent per token (``Bx, Fx = x_bits, x_frac_bits``,
``Be = x_exp_bits``): the token's exponent ``xe`` is the smallest integer in
``[-2**(Be-1), 2**(Be-1) - 1]`` (only ``0`` when ``Be = 0``) at which every
``X_i = floor(x_i * 2**(Fx - xe) + 1/2)`` fits ``Bx`` bits; ``x_i ~= X_i * 2**(xe - Fx)``
(:func:`quantize_input`, :func:`hadware.spec.mlp.input_blocks`). A token that fits at no
exponent is an :class:`~hadware.errors.InputError` naming the token and element (never
saturated). The hardware receives ``X_i`` and ``xe``. The output is ``y_i = Y_i / 2**y_frac_bits``.

BitLinear is scale-invariant but for its epsilon: ``q`` depends on ``P_i / M`` only and the
output scale on ``M / sqrt(S)`` (L6, L8), so ``xe`` enters the datapath only through the
epsilon ``E(xe)`` of L2. The second layer's input ``h`` is fixed point (``xe = 0``, one
``E``).

Constants stored with the weights (computed once, :func:`hadware.spec.mlp.quantize_weights`)
-------------------------------------------------------------------------------------------
Per layer:

- codes ``T[j, i]`` in {-1, 0, +1} (:func:`hadware.spec.ternary.ternarize` of the latent
  weights, once; packed in ROM by :func:`hadware.spec.ternary.pack`, layout v1);
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
- ``E(xe) = floor(rms_eps * n * 2**(2 (Fi - xe)) + 1/2)`` for every exponent ``xe`` of the
  layer's input (the epsilon in units of the sum of squares of mantissas; a table of
  ``2**Be`` entries for BitLinear_gu, one entry ``E(0)`` for BitLinear_dn; a function of the
  config only: :attr:`~hadware.config.mlp.BitLinearGeometry.eps_table`).

BitLinear, per token (inputs ``X_i``, ``i < n``; outputs ``OUT_j``, ``j < fan_out``)
----------------------------------------------------------------------------------
L1  ``P_i = X_i * G_i``                    exact, ``Bi + Bg`` bits signed (``product_bits``).
L2  ``S = sum_i X_i**2 + E(xe)``            exact, ``sumsq_bits`` unsigned.
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
  ``<= 0`` (:func:`hadware.spec.silu.silu_table`; the RTL imports it rather than recomputing
  it);
- ``a = |gate|``; if ``a >= 2**(Lr+Fa)`` then ``nv = 0``; else ``k = a >> (Fa - Fs)``,
  ``fr = a mod 2**(Fa - Fs)`` and ``nv = N[k] + RHU((N[k+1] - N[k]) * fr, Fa - Fs)``;
- ``SL = nv`` if ``gate < 0`` else ``gate * 2**(Fl - Fa) + nv``: fraction ``Fl``,
  ``silu_out_bits`` signed. Beyond the table SiLU is therefore 0 (negative side) or the
  identity (positive side).

Its error against ``torch.nn.functional.silu`` is bounded by
``2**(-2 Fs - 4)`` (interpolation; ``max|SiLU''| = 1/2``) ``+ 2**-Fl`` (table and
interpolation rounding) ``+ 2**Lr / (1 + exp(2**Lr))`` (tails); :func:`silu_error_bound`. With
the defaults (Lr=4, Fs=6, Fl=18) that is 2.1e-5; measured 1.8e-5 (every gate value of the
default 24-bit format; tests/test_mlp_golden.py).

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
Across scales (tests/test_mlp_golden.py, ``test_accuracy_across_scales``): tokens whose RMS is
log-uniform in [2**-8, 2**8], plain or with one element at +-100 times the RMS, against
:func:`float_reference` fed the float tokens: p95 0.23-0.47 %, median 0.011 %, p95 below
0.49 % within the lowest and the highest two octaves (d_model 16 and 64). The exponent keeps
every token with ``max|x| >= 2**(exp_min + x_bits - 2 - x_frac_bits)`` (``2**-10`` with the
defaults) at ``x_bits - 1`` significant bits or more; smaller tokens keep fewer (still exact
to this specification).

Measured with the default formats, Xavier-scaled random latent weights, gains in [0.5, 1.5] and
N(0, 1) tokens (tests/test_mlp_golden.py), as the per-token relative L2 error of ``y`` against
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

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hadware.config.mlp import BitLinearGeometry, MlpConfig
from hadware.errors import InputError
from hadware.spec.mlp import (
    BitLinearParams,
    MlpWeights,
    as_weights,
    check_inputs,
    input_blocks,
)
from hadware.spec.quant import REFERENCE_ABSMAX_FLOOR, absmax_int8
from hadware.spec.silu import silu_table

__all__ = [
    "bitlinear_int",
    "check_inputs",
    "float_reference",
    "input_values",
    "mlp_int",
    "quantize_input",
    "run_vectors",
    "run_vectors_int",
    "silu_error_bound",
    "silu_int",
]

# -- integer model -------------------------------------------------------------------------------


def quantize_input(cfg: MlpConfig, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 0: the mantissas ``X`` (int64 ``(t, d_model)``) and exponents ``xe`` (int64
    ``(t,)``) of float tokens ``x``. Raises :class:`~hadware.errors.InputError` naming the
    token and element of a token beyond the input range."""
    mant, exp = input_blocks(cfg, x)
    return torch.from_numpy(mant), torch.from_numpy(exp)


def input_values(cfg: MlpConfig, x: Any, x_exp: Any) -> np.ndarray:
    """The float64 values ``X_i * 2**(xe - x_frac_bits)`` of mantissas and exponents (exact)."""
    x, x_exp = np.asarray(x, dtype=np.float64), np.asarray(x_exp, dtype=np.float64)
    return x * 2.0 ** (x_exp[:, None] - cfg.x_frac_bits)


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


def _exponents(geom: BitLinearGeometry, x: torch.Tensor, x_exp: Any) -> torch.Tensor:
    if x_exp is None:
        x_exp = torch.zeros(x.shape[0], dtype=torch.int64)
    x_exp = torch.as_tensor(np.asarray(x_exp), dtype=torch.int64).reshape(-1)
    if x_exp.shape[0] != x.shape[0]:
        raise InputError(f"x_exp must hold one exponent per token ({x.shape[0]}), not "
                         f"{x_exp.shape[0]}")
    if x_exp.numel() and (int(x_exp.min()) < geom.exp_min or int(x_exp.max()) > geom.exp_max):
        raise InputError(f"x_exp holds exponents outside [{geom.exp_min}, {geom.exp_max}] "
                         f"(x_exp_bits {geom.exp_bits})")
    return x_exp


def bitlinear_int(geom: BitLinearGeometry, layer: BitLinearParams,
                  x: torch.Tensor, x_exp: Any = None) -> dict[str, torch.Tensor]:
    """Steps L1-L9 of the specification for a batch of tokens.

    ``x`` is int64 ``(t, fan_in)`` in the layer's input format and ``x_exp`` the tokens'
    exponents ``(t,)`` (default 0; within the layer's exponent range). Returns int64
    tensors: ``"q"`` ``(t, fan_in)``, ``"acc"`` and ``"out"`` ``(t, fan_out)``, and the
    per-token scalars ``"M"``, ``"S"``, ``"e"``, ``"tau"``, ``"M_n"``, ``"R"``, ``"U"``,
    ``"V"``, ``"C"``, ``"sh"`` of shape ``(t,)`` (``C`` and ``sh`` are 0 for a zero token).
    """
    W, K = geom.mant_bits, geom.recip_frac_bits
    g = torch.tensor(layer.gain_fx, dtype=torch.int64)
    codes = torch.tensor(layer.codes, dtype=torch.int64)
    eps = torch.tensor(geom.eps_table, dtype=torch.int64)
    x_exp = _exponents(geom, x, x_exp)
    p = x * g                                                       # L1
    s = (x * x).sum(dim=1) + eps[x_exp - geom.exp_min]              # L2
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
    if bool((sh < 1).any()):  # excluded by the SH0 check in make_layer
        raise RuntimeError(f"{geom.name}: per-token shift below 1; the constants are invalid")
    sh = sh.clamp(max=geom.scale_product_bits)
    out = _sat(_rhu(acc * c[:, None], sh[:, None]), geom.out_bits)  # L9
    c = torch.where(zero, torch.zeros_like(c), c)
    sh = torch.where(zero, torch.zeros_like(sh), sh)
    return {"q": q, "acc": acc, "out": out, "M": m, "S": s, "e": e, "tau": tau, "M_n": m_n,
            "R": r, "U": u, "V": v, "C": c, "sh": sh}


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


def mlp_int(cfg: MlpConfig, weights: MlpWeights, x: torch.Tensor,
            x_exp: Any = None) -> dict[str, torch.Tensor]:
    """The integer model of the whole block on int64 token mantissas ``x`` ``(t, d_model)``
    and exponents ``x_exp`` ``(t,)`` (default 0), see :func:`quantize_input`.

    Returns the trace: ``"x"``, ``"x_exp"``, ``"gate"``, ``"up"``, ``"silu"``, ``"h"``,
    ``"y"`` (the block output ``Y``) and every entry of :func:`bitlinear_int` for both
    layers, prefixed ``"gate_up."`` and ``"down."``.
    """
    x = (x if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x))).to(torch.int64)
    if x.ndim != 2 or x.shape[1] != cfg.d_model:
        raise InputError(f"x must have shape (t, d_model={cfg.d_model}), not {tuple(x.shape)}")
    lo, hi = -(2 ** (cfg.x_bits - 1)), 2 ** (cfg.x_bits - 1) - 1
    if x.numel() and (int(x.min()) < lo or int(x.max()) > hi):
        raise InputError(f"x holds values outside the {cfg.x_bits}-bit input format")
    x_exp = _exponents(cfg.gate_up, x, x_exp)
    t1 = bitlinear_int(cfg.gate_up, weights.gate_up, x, x_exp)
    gate, up = t1["out"][:, :cfg.d_hidden], t1["out"][:, cfg.d_hidden:]
    sl = silu_int(cfg, gate)
    h = _sat(_rhu(sl * up, cfg.glu_shift), cfg.h_bits)
    t2 = bitlinear_int(cfg.down, weights.down, h)
    trace = {"x": x, "x_exp": x_exp, "gate": gate, "up": up, "silu": sl, "h": h, "y": t2["out"]}
    trace.update({f"gate_up.{k}": v for k, v in t1.items()})
    trace.update({f"down.{k}": v for k, v in t2.items()})
    return trace


def run_vectors_int(cfg: MlpConfig, weights_arrays: Mapping[str, Any] | MlpWeights,
                    input_arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The hardware's integers for a vector file: ``{"x": X, "x_exp": xe, "y": Y}``, int64
    (``(t, d_model)``, ``(t,)``, ``(t, d_model)``), ``X`` and ``xe`` being what the testbench
    drives and ``Y`` what the block must return, bit for bit. ``weights_arrays`` is W.npz
    (latent floats) or :class:`MlpWeights`."""
    w = as_weights(cfg, weights_arrays)
    x, x_exp = quantize_input(cfg, check_inputs(cfg, input_arrays))
    trace = mlp_int(cfg, w, x, x_exp)
    return {"x": trace["x"].numpy(), "x_exp": trace["x_exp"].numpy(), "y": trace["y"].numpy()}


def run_vectors(cfg: MlpConfig, weights_arrays: Mapping[str, Any] | MlpWeights,
                input_arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """OUT.npz for IN.npz: ``{"y": float32 (t, d_model)}``, ``y = Y / 2**y_frac_bits`` (exact)."""
    y = run_vectors_int(cfg, weights_arrays, input_arrays)["y"]
    return {"y": (y.astype(np.float64) / 2.0 ** cfg.y_frac_bits).astype(np.float32)}


# -- float reference -----------------------------------------------------------------------------


def _bitlinear_float(x: torch.Tensor, layer: BitLinearParams, eps: float) -> torch.Tensor:
    g = torch.tensor(layer.gain, dtype=torch.float64)
    xn = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps) * g
    xq, s = (torch.from_numpy(v) for v in absmax_int8(xn.numpy(), REFERENCE_ABSMAX_FLOOR))
    return (xq @ torch.tensor(layer.codes, dtype=torch.float64).T) * layer.beta / s


def float_reference(cfg: MlpConfig, weights: MlpWeights, x: Any, *,
                    on_input_grid: bool = False) -> np.ndarray:
    """The BitLinear GLU in float64 with the same ternary codes and betas as the hardware,
    the float gains, float RMSNorm (eps ``cfg.rms_eps``), float absmax int8 activation
    quantization (``torch.round``, floor 1e-5) and exact SiLU.

    ``x`` is float ``(t, d_model)``, checked as :func:`check_inputs` does. With
    ``on_input_grid=True`` it is first rounded to the hardware's input format (step 0), which
    isolates the datapath's error from that of the input format. Returns
    float64 ``(t, d_model)``.
    """
    xf = check_inputs(cfg, {"x": x})
    if on_input_grid:
        xf = input_values(cfg, *quantize_input(cfg, xf))
    xt = torch.tensor(xf, dtype=torch.float64)
    gu = _bitlinear_float(xt, weights.gate_up, cfg.rms_eps)
    gate, up = gu[:, :cfg.d_hidden], gu[:, cfg.d_hidden:]
    h = torch.nn.functional.silu(gate) * up
    return _bitlinear_float(h, weights.down, cfg.rms_eps).numpy()
