r"""Golden models of the MatMul-free HAD encoder layer: the bit-exact integer model (the
hardware specification) and a float reference.

One pre-norm transformer layer over a sequence of ``n`` tokens (``1 <= n <= n_max``) of
``d_model`` values; configuration :class:`hadware.config.encoder_layer.LayerConfig`
(``cfg``), weights :class:`hadware.spec.encoder_layer.EncoderLayerWeights`, vector files
:mod:`hadware.spec.encoder_layer`. In the float model::

    [Q, K, V] = BitLinear_qkv(x)          ternary, RMSNorm inside; rows Q, K, V, heads contiguous
    Q_b, K_b  = sign(Q), sign(K)          per head; sign(0) = +1
    V_q       = int8(V)                   one scale for the layer: 2**(qkv_frac_bits - v_shift)
    a_h       = HAD(Q_b,h, K_b,h, V_q,h)  per head: top_k keys, softmax at the head's temperature
    h         = x + BitLinear_o(concat_h a_h)
    y         = h + MLP(h)                the ternary GLU block

The standard layer of the same shape (``std_layer``,
:class:`~hadware.config.encoder_layer.StdLayerConfig`) is the same model with three parts
changed: int8 weights in every BitLinear (``weights`` ``"int8"``, :mod:`hadware.spec.weights`;
the arithmetic L1-L9 is unchanged, the codes are int8), queries and keys quantized by the int8
rule as the values are (``Q_q``, ``K_q`` instead of ``Q_b``, ``K_b``), and the standard
attention core (:mod:`hadware.golden.std_attention`: int8 dot products, a softmax over every
key) instead of HAD; steps below say where the two differ.

The integer model composes the blocks' golden models; every step below names the one it uses.
Notation as in :mod:`hadware.golden.mlp`: ``RHU(v, s) = (v + 2**(s-1)) >> s`` (``v`` for
``s = 0``), ``SAT(v, b)`` the clamp to the ``b``-bit two's-complement range. ``Fr =
res_frac_bits``, ``Br = res_bits``, ``Bp = proj_bits = Br + 2``.

Per sequence (tokens ``t < n``), all integers
--------------------------------------------
Here ``n`` is the sequence's length, its ``n_valid`` in the vector file
(:mod:`hadware.spec.encoder_layer`); the file's tokens at and beyond it are padding: they
enter no step below, and their outputs are 0 (in the trace of :func:`layer_int`, every value
of theirs is 0 and their top-k indices are -1).

0. **Input.** ``X[t, i] = floor(x[t, i] * 2**Fr + 1/2)``; a value outside ``Br`` bits is
   refused (:func:`hadware.spec.encoder_layer.quantize_inputs`), never saturated.
1. **QKV.** ``T = bitlinear_int(cfg.qkv, weights.qkv, X)`` (steps L1-L9 of
   :mod:`hadware.golden.mlp`; input exponent 0): ``acc[t, j]`` and ``out[t, j]``,
   ``j < 3 d_model``.

   - ``Qb[t, j] = +1`` if ``acc[t, j] >= 0`` else ``-1`` (``j < d_model``); ``Kb[t, j]``
     likewise from ``acc[t, d_model + j]``. The sign of the accumulator is the sign of the
     BitLinear output before rounding (its scale is positive), so binarization needs no
     output scaling; an accumulator of 0 binarizes to +1.
   - ``V[t, j] = out[t, 2 d_model + j]`` (``qkv_bits``, fraction ``qkv_frac_bits``) and
     ``Vq[t, j] = SAT(RHU(V[t, j], v_shift), 8)`` (the int8 rule).
   - Standard layer: ``Qq[t, j] = SAT(RHU(out[t, j], v_shift), 8)`` and ``Kq[t, j] =
     SAT(RHU(out[t, d_model + j], v_shift), 8)``, the int8 rule of every row; no sign.

   Head ``h`` owns elements ``h * head_dim .. (h + 1) * head_dim - 1`` of each of Q, K, V.
2. **Attention**, per head ``h`` and query ``t``: :func:`hadware.golden.attention_core.
   attention_core` with ``cfg.attention_config(h)`` (temperature ``temperature[h]``), query
   ``Qb[t, h]``, keys ``Kb[0..n-1, h]``, values ``Vq[0..n-1, h]`` and ``n_valid = t + 1`` when
   ``causal``, else ``n``. ``A[t, h * head_dim + c] = out[c]`` (units ``2**-attn_out_frac_bits``
   of a value step, ``attn_out_bits`` signed). A shared core with its run-time table gives
   exactly the ROM config's arithmetic at the head's temperature (``table_for``), so this step
   does not depend on ``head_parallel``. Standard layer: the same call with
   ``cfg.attention_config(h)`` a standard core and ``Qq``, ``Kq`` (no top-k indices).
3. **Output projection and first residual.** ``O = bitlinear_int(cfg.o_proj, weights.o,
   A).out`` (``Bp`` bits, fraction ``Fr``); ``H[t, i] = SAT(X[t, i] + O[t, i], Br)``.
4. **MLP and second residual.** ``M = mlp_int(cfg.mlp, weights.mlp, H).y`` (``Bp`` bits,
   fraction ``Fr``; input exponent 0); ``Y[t, i] = SAT(H[t, i] + M[t, i], Br)``.

Output ``y[t, i] = Y[t, i] / 2**Fr`` (rows ``t >= n`` are 0).

Saturation count
----------------
``saturations`` of a sequence counts, over its ``n`` tokens, every element whose
saturation changed its value (the value before the clamp lies outside the range), at each of:
the rows of the QKV BitLinear under the int8 rule (its L9: ``d_model`` value rows per token; the
HAD layer's query and key rows use only their accumulator's sign and are not counted, the
standard layer counts all ``3 d_model``), the int8 rule on them (``d_model``, or ``3
d_model``), the
output projection's L9 (``d_model``), the first residual sum (``d_model``), the MLP's gate/up
L9 (``2 d_hidden``), its GLU product ``h`` (``d_hidden``), its down L9 (``d_model``) and the
second residual sum (``d_model``). An element saturated at two of these points counts twice.
Nothing else in the layer can saturate or wrap.

Float reference
---------------
:func:`float_reference`: the same layer in float64 with the same ternary codes, scales and
gains: float BitLinears (RMSNorm, absmax int8 activations, ternary codes times beta; as
:func:`hadware.golden.mlp.float_reference`), ``sign`` of the float Q and K (``sign(0) = +1``),
``V`` quantized by the same rule in float (``clip(round(V * 2**(qkv_frac_bits - v_shift)),
-128, 127)``, one rounding to nearest), the exact softmax (``exp``, float64) over the same
top-k selection of the binarized scores (ties to the lower index) at the head's temperature,
float residuals, exact SiLU. Its input is ``x`` on the residual grid (``X / 2**Fr``), so the
comparison measures the datapath, not the input format.

Accuracy
--------
Measured (tests/test_encoder_layer_golden.py, ``test_accuracy_bound``; 20 weight draws of
8 sequences each here) with the default formats, Xavier-like latent weights (std
``1/sqrt(fan_in)``), gains uniform in [0.5, 1.5], tokens ``x ~ N(0, 1)``, random ``n_valid``
and ``v_shift`` from :func:`~hadware.spec.encoder_layer.choose_v_shift` on the float V of
calibration tokens (2 or 3), as the per-token relative L2 error against
:func:`float_reference`, for ``d_model`` 32 (2 heads of 16, ``n_max`` 16, ``top_k`` 1, 4 or
16, causal or not), 64 (4 heads of 16, ``n_max`` 128, ``top_k`` 8) and 64 (1 head of 64,
``n_max`` 32, ``top_k`` 8):

- the update ``y - x`` (the harder quantity): median 1.5-1.9 %, 95th percentile 2.6-2.9 %,
  99th 3.1-3.4 % for ``d_model`` 32, 4.8 % (1 head) and 16-19 % (4 heads of 16 over 128
  tokens) for ``d_model`` 64;
- ``y``: median 1.1-1.4 %, 95th percentile 1.9-2.1 %.

Bound (tested with these figures' margin): for the update, median at most 2.5 %, 95th
percentile at most 4 % and at most 5 % of the tokens above 5 %; for ``y``, median at most 2 %
and 95th percentile at most 3 %. No useful bound holds for single tokens (below).

Where it comes from. Every int8 quantizer of the layer (the four BitLinears' activations, the
value rule) is discontinuous, and the integer model reaches each one with slightly different
values than the float reference, so a fraction of its codes round the other way:

- the value rule rounds twice (``V`` to ``qkv_frac_bits`` fraction bits at L9, then by
  ``v_shift``) where the reference rounds once; about ``2**-(v_shift+1)`` of the ``V_q``
  (6.4 % at ``v_shift = 3``) differ by one step. This is about half of the median error
  (feeding the reference the integer ``V_q`` brings the update's median to 0.75-0.93 %);
  computing ``V_q = SAT(RHU(acc * C, sh + v_shift), 8)`` from the accumulator would round once;
- ``O`` and ``M`` are rounded to the residual grid (``2**-Fr``, about 0.17 % of their RMS
  each), and those small differences move int8 activation codes of the next BitLinear
  (as in :mod:`hadware.golden.mlp`, one code flip moves a BitLinear's output by about 1 %).

The error is not uniform over tokens. An int8 activation of the QKV BitLinear that rounds the
other way (about 0.07 % of them) can move a query or key accumulator across 0 and flip a
binarized bit; a flipped key bit changes that key's score by 2 for every query of its head,
and with few score values (``head_dim + 1``) and many tied keys at the top-k boundary it
changes the selection of many queries. All but one of the 591 tokens measured above 5 % were
in a sequence with such a flip: 0-0.3 % of the tokens for ``d_model`` 32, 1 % for one head of
64, 2-2.5 % for four heads of 16 over 128 tokens, single tokens off by up to 88 % of their
update.
Only bit-identical float64 arithmetic in the BitLinears would avoid it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hadware.config.encoder_layer import V_BITS, LayerConfig
from hadware.errors import InputError
from hadware.golden import attention_core as core
from hadware.golden.mlp import _bitlinear_float, _rhu, _sat, bitlinear_int, mlp_int
from hadware.golden.topk import PAD_INDEX
from hadware.spec.encoder_layer import (
    EncoderLayerWeights,
    as_weights,
    check_inputs,
    quantize_inputs,
)

__all__ = [
    "SAT_POINTS",
    "check_inputs",
    "float_reference",
    "layer_int",
    "run_vectors",
    "run_vectors_int",
]

#: The saturation points of the layer, in datapath order (trace keys ``"sat." + name``).
SAT_POINTS = ("qkv", "int8_rule", "o", "res1", "gate_up", "glu", "down", "res2")


# -- integer model -------------------------------------------------------------------------------


def _int_tensor(name: str, a: Any) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise InputError(f"{name} must hold integers, not {t.dtype}")
    return t.to(torch.int64)


def _checked(cfg: LayerConfig, X: Any, n_valid: Any) -> tuple[torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    """``(X, n_valid, used)``: the inputs as int64 with the unused tokens of ``X`` zeroed, and
    the ``(b, n)`` mask of used tokens. Raises :class:`InputError` for wrong shapes, an
    ``n_valid`` outside ``1 .. n`` or a used value outside the residual format."""
    X = _int_tensor("X", X)
    if X.ndim != 3 or X.shape[2] != cfg.d_model or not 1 <= X.shape[1] <= cfg.n_max:
        raise InputError(f"X must have shape (b, n, d_model) = (b, n, {cfg.d_model}) with "
                         f"1 <= n <= n_max = {cfg.n_max}, not {tuple(X.shape)}")
    b, n, _ = X.shape
    nv = _int_tensor("n_valid", n_valid).reshape(-1)
    if nv.shape != (b,):
        raise InputError(f"n_valid must have shape (b,) = ({b},), not {tuple(nv.shape)}")
    if b and (int(nv.min()) < 1 or int(nv.max()) > n):
        raise InputError(f"n_valid holds values outside 1 .. n = {n}")
    used = torch.arange(n)[None, :] < nv[:, None]
    X = torch.where(used[:, :, None], X, torch.zeros_like(X))
    lo, hi = -(2 ** (cfg.res_bits - 1)), 2 ** (cfg.res_bits - 1) - 1
    if X.numel() and (int(X.min()) < lo or int(X.max()) > hi):
        raise InputError(f"X holds used values outside the {cfg.res_bits}-bit residual format")
    return X, nv, used


def _count(pre: torch.Tensor, bits: int, used: torch.Tensor) -> torch.Tensor:
    """Per sequence, the elements of used tokens whose pre-clamp value ``pre`` ``(b, n, w)``
    lies outside ``bits`` bits: int64 ``(b,)``."""
    out = (pre < -(2 ** (bits - 1))) | (pre > 2 ** (bits - 1) - 1)
    return (out & used[:, :, None]).sum(dim=(1, 2))


def _l9_pre(trace: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """``RHU(acc * C, sh)``, the value L9 of a BitLinear clamps (0 for a zero token)."""
    c, sh = trace[prefix + "C"], trace[prefix + "sh"]
    return _rhu(trace[prefix + "acc"] * c[:, None], sh[:, None])


def _heads(cfg: LayerConfig, t: torch.Tensor) -> torch.Tensor:
    """``(b, n, d_model)`` -> ``(n_heads, b, n, head_dim)``."""
    b, n, _ = t.shape
    return t.reshape(b, n, cfg.n_heads, cfg.head_dim).permute(2, 0, 1, 3)


def _attention(cfg: LayerConfig, qb: torch.Tensor, kb: torch.Tensor, vq: torch.Tensor,
               q_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 for every head: ``A`` ``(b, n, d_model)`` and ``topk_index``
    ``(b, n_heads, n, top_k)``. One core per head (``head_parallel``) or the shared core with
    each head's temperature as its run-time temperature; the specification says both give
    the same integers (tests/test_encoder_layer_golden.py checks it)."""
    b, n, _ = qb.shape
    H, hd = cfg.n_heads, cfg.head_dim
    q, k, v = _heads(cfg, qb), _heads(cfg, kb), _heads(cfg, vq)
    if cfg.head_parallel:
        res = [core.attention_core(cfg.attention_config(h), q[h], k[h], v[h], q_valid)
               for h in range(H)]
        out = torch.stack([r.out for r in res])                     # (H, b, n, hd)
        index = torch.stack([r.index for r in res])                 # (H, b, n, slots)
    else:
        temps = np.repeat(np.asarray(cfg.temperature, dtype=np.float64), b)
        r = core.attention_core(cfg.shared_attention_config(), q.reshape(H * b, n, hd),
                                k.reshape(H * b, n, hd), v.reshape(H * b, n, hd),
                                q_valid.repeat(H, 1), temperature=temps)
        out = r.out.reshape(H, b, n, hd)
        index = r.index.reshape(H, b, n, -1)
    a = out.permute(1, 2, 0, 3).reshape(b, n, H * hd)
    if cfg.qk_bits != 1:
        return a, None    # the standard core weighs every key: no top-k indices
    return a, index.permute(1, 0, 2, 3)


def layer_int(cfg: LayerConfig, weights: EncoderLayerWeights, X: Any,
              n_valid: Any) -> dict[str, torch.Tensor]:
    """The integer model (steps 1 to 4 of the module docstring) for ``b`` sequences at once.

    ``X`` is int64 ``(b, n, d_model)`` in the residual format (as
    :func:`hadware.spec.encoder_layer.quantize_inputs` gives it; values of tokens at and
    beyond ``n_valid`` are ignored) and ``n_valid`` ``(b,)`` in ``1 .. n``.

    Returns the trace, int64 tensors: ``"X"`` (the input, unused tokens 0), ``"Qb"``,
    ``"Kb"`` (+-1; the standard layer's int8 ``Qq``, ``Kq``), ``"V"``, ``"Vq"``, ``"A"``,
    ``"O"``, ``"H"``, ``"M"``, ``"Y"``, all ``(b, n, d_model)`` with the rows of unused tokens
    0; for the HAD layer ``"topk_index"`` ``(b, n_heads, n, top_k)`` (key indices of each
    head and query, -1 padding; all -1 for an unused token); ``"saturations"`` ``(b,)`` and
    its parts ``"sat.<point>"`` ``(b,)`` for each point of :data:`SAT_POINTS`. Raises
    :class:`~hadware.errors.InputError` for shapes or values outside the contract.
    """
    if weights.cfg != cfg:
        raise InputError("the weights were quantized for a different configuration")
    X, nv, used = _checked(cfg, X, n_valid)
    b, n, d = X.shape
    u3 = used[:, :, None]

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, -1)

    def masked(t: torch.Tensor) -> torch.Tensor:
        return torch.where(u3, t, torch.zeros_like(t))

    # 1. QKV: Q and K binarized from the accumulators' signs (HAD) or by the int8 rule
    # (standard), V by the int8 rule.
    t_qkv = bitlinear_int(cfg.qkv, weights.qkv, X.reshape(b * n, d))
    acc, out = rows(t_qkv["acc"]), rows(t_qkv["out"])
    r0 = 3 * d - cfg.int8_rows              # first row under the int8 rule
    rule_pre = _rhu(masked(out[:, :, r0:]), cfg.v_shift)
    rule = _sat(rule_pre, V_BITS)
    if cfg.qk_bits == 1:
        pm1 = torch.where(acc[:, :, :2 * d] >= 0, 1, -1).to(torch.int64)
        qb, kb = masked(pm1[:, :, :d]), masked(pm1[:, :, d:])
    else:
        qb, kb = masked(rule[:, :, :d]), masked(rule[:, :, d:2 * d])
    v = masked(out[:, :, 2 * d:])
    vq = rule[:, :, -d:]
    # 2. Attention: query t sees keys 0 .. t (causal) or 0 .. n_valid - 1, never beyond.
    t_idx = torch.arange(n, dtype=torch.int64)[None, :]
    q_valid = torch.minimum(t_idx + 1, nv[:, None]) if cfg.causal else nv[:, None].expand(b, n)
    a, index = _attention(cfg, qb, kb, vq, q_valid.contiguous())
    a = masked(a)
    if index is not None:
        index = torch.where(used[:, None, :, None], index, torch.full_like(index, PAD_INDEX))
    # 3. Output projection and the first residual.
    t_o = bitlinear_int(cfg.o_proj, weights.o, a.reshape(b * n, d))
    o = rows(t_o["out"])
    h_pre = X + o
    h = _sat(h_pre, cfg.res_bits)
    # 4. MLP and the second residual.
    t_m = mlp_int(cfg.mlp, weights.mlp, h.reshape(b * n, d))
    m = rows(t_m["y"])
    y_pre = h + m
    y = _sat(y_pre, cfg.res_bits)

    mc = cfg.mlp
    sat = {
        "qkv": _count(rows(_l9_pre(t_qkv))[:, :, r0:], cfg.qkv.out_bits, used),
        "int8_rule": _count(rule_pre, V_BITS, used),
        "o": _count(rows(_l9_pre(t_o)), cfg.o_proj.out_bits, used),
        "res1": _count(h_pre, cfg.res_bits, used),
        "gate_up": _count(rows(_l9_pre(t_m, "gate_up.")), mc.gate_up.out_bits, used),
        "glu": _count(rows(_rhu(t_m["silu"] * t_m["up"], mc.glu_shift)), mc.h_bits, used),
        "down": _count(rows(_l9_pre(t_m, "down.")), mc.down.out_bits, used),
        "res2": _count(y_pre, cfg.res_bits, used),
    }
    trace = {"X": X, "n_valid": nv, "Qb": qb, "Kb": kb, "V": v, "Vq": masked(vq), "A": a,
             "O": masked(o), "H": masked(h), "M": masked(m), "Y": masked(y),
             "saturations": sum(sat.values())}
    if index is not None:
        trace["topk_index"] = index
    trace.update({f"sat.{k}": c for k, c in sat.items()})
    return trace


def _int_inputs(cfg: LayerConfig, input_arrays: Mapping[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
    a = check_inputs(cfg, input_arrays)
    return quantize_inputs(cfg, a), a["n_valid"]


def run_vectors_int(cfg: LayerConfig,
                    weights_arrays: Mapping[str, Any] | EncoderLayerWeights,
                    input_arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The hardware's integers for a vector file, int64: ``"X"`` ``(b, n, d_model)`` and
    ``"n_valid"`` ``(b,)`` (what the testbench drives: the used tokens of each sequence),
    ``"Y"`` ``(b, n, d_model)`` (rows at and beyond ``n_valid`` 0) and ``"saturations"``
    ``(b,)`` (what the layer must return, bit for bit). ``weights_arrays`` is W.npz (latent
    floats, quantized once) or :class:`~hadware.spec.encoder_layer.EncoderLayerWeights`."""
    w = as_weights(cfg, weights_arrays)
    X, nv = _int_inputs(cfg, input_arrays)
    trace = layer_int(cfg, w, X, nv)
    return {"X": trace["X"].numpy(), "n_valid": trace["n_valid"].numpy(),
            "Y": trace["Y"].numpy(), "saturations": trace["saturations"].numpy()}


def run_vectors(cfg: LayerConfig, weights_arrays: Mapping[str, Any] | EncoderLayerWeights,
                input_arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """OUT.npz for IN.npz: ``{"y": float32 (b, n, d_model), "saturations": int64 (b,)}``,
    ``y = Y / 2**res_frac_bits`` (exact in float32 for ``res_bits <= 24``)."""
    r = run_vectors_int(cfg, weights_arrays, input_arrays)
    y = r["Y"].astype(np.float64) / 2.0 ** cfg.res_frac_bits
    return {"y": y.astype(np.float32), "saturations": r["saturations"]}


# -- float reference -----------------------------------------------------------------------------


def float_reference(cfg: LayerConfig,
                    weights: EncoderLayerWeights | Mapping[str, Any],
                    arrays: Mapping[str, Any]) -> np.ndarray:
    """The layer in float64 (the "Float reference" section of the module docstring) for
    IN.npz ``arrays`` (checked as :func:`check_inputs` does), its input ``x`` taken on the
    residual grid. Returns float64 ``(b, n, d_model)``, rows at and beyond ``n_valid`` 0."""
    w = as_weights(cfg, weights)
    X, nv = _int_inputs(cfg, arrays)
    b, n, d = X.shape
    eps = cfg.rms_eps
    used = torch.from_numpy(np.arange(n)[None, :] < nv[:, None])[:, :, None]
    x = torch.from_numpy(X.astype(np.float64) / 2.0 ** cfg.res_frac_bits)
    qkv = _bitlinear_float(x.reshape(b * n, d), w.qkv, eps).reshape(b, n, 3 * d)
    rule = torch.round(qkv * 2.0 ** (cfg.qkv_frac_bits - cfg.v_shift)).clamp(-128, 127)
    if cfg.qk_bits == 1:
        pm1 = torch.where(qkv[:, :, :2 * d] >= 0, 1, -1).to(torch.int64)
    else:
        pm1 = rule[:, :, :2 * d].to(torch.int64)
    vq = rule[:, :, 2 * d:]
    t_idx = np.arange(n)[None, :]
    q_valid = np.minimum(t_idx + 1, nv[:, None]) if cfg.causal else np.repeat(nv[:, None], n, 1)
    q, k, v = _heads(cfg, pm1[:, :, :d]), _heads(cfg, pm1[:, :, d:]), _heads(cfg, vq)
    # The exact softmax average over the same top-k selection, per head, in units of
    # 2**-attn_out_frac_bits value steps (hadware.golden.attention_core.float_reference).
    heads = [core.float_reference(cfg.attention_config(h),
                                  {"q": q[h].numpy(), "k": k[h].numpy(),
                                   "v": v[h].numpy().astype(np.int8), "n_valid": q_valid})
             for h in range(cfg.n_heads)]
    a = torch.from_numpy(np.concatenate(heads, axis=-1)) * 2.0 ** -cfg.o_in_frac_bits
    a = torch.where(used, a, torch.zeros_like(a))
    h = x + _bitlinear_float(a.reshape(b * n, d), w.o, eps).reshape(b, n, d)
    gu = _bitlinear_float(h.reshape(b * n, d), w.mlp.gate_up, eps)
    gate, up = gu[:, :cfg.d_hidden], gu[:, cfg.d_hidden:]
    m = _bitlinear_float(torch.nn.functional.silu(gate) * up, w.mlp.down, eps)
    y = h + m.reshape(b, n, d)
    return torch.where(used, y, torch.zeros_like(y)).numpy()
