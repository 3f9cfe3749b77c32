"""Float PyTorch modules that mirror the hardware bit for bit where it matters.

Binarized Hamming attention (HAD)
    Queries and keys are divided by a per-layer (optionally per-head) scale ``sigma`` and
    binarized with the hardware convention ``sign(0) = +1`` (bit 1 = +1, bit 0 = -1). The score
    of a query and a key is ``Q_b . K_b``, an integer in ``[-d, d]`` with the parity of the head
    dimension ``d``; it equals ``2 * popcount(XNOR(q_bits, k_bits)) - d``. The attention logit
    is ``temperature * score`` with ``temperature = sigma_Q * sigma_K / sqrt(d)``, the value the
    hardware exponent lookup table ``LUT[m] = round(2**f * exp(-2 * temperature * m))`` is built
    from. Each query row keeps its ``top_k`` largest scores (ties go to the lower key index),
    the softmax runs over the kept entries and every other weight is exactly zero. The values
    V of a HAD head are fake-quantized as the deployment quantizes them before they reach the
    hardware (:func:`quantize_values`: int8, one scale ``max|V| / 127`` per sample and head),
    in training as in evaluation, so the student scored in PyTorch is the model the hardware
    runs; the straight-through estimator passes the gradient to the float V.

BitLinear and the ternary GLU
    As the MatMul-free reference: RMSNorm with a learnable gain (no bias, eps 1e-6), per-token
    absmax int8 activations, absmean ternary weights, ``y = (x_q @ W_t^T) * beta / s``, with a
    straight-through estimator on both quantizers. With ``quantize=False`` the same module is
    the float layer of the teacher (RMSNorm and a plain linear map), so switching a trained
    float MLP to ternary changes nothing but the quantization. :meth:`BitLinear.load_ternary`
    fixes a layer to exported codes and beta (the student rebuilt from an export).

Straight-through estimators are written ``q + (x - x.detach())``: the forward value is the
quantized ``q`` exactly (not ``x + (q - x)``, which can differ from ``q`` in the last place),
and the gradient reaches ``x`` unchanged.

Everything here is deterministic given the inputs; no module draws random numbers in
``forward``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hadware.config.base import check_float, check_int

__all__ = [
    "BitLinear",
    "Encoder",
    "GluMlp",
    "HadAttention",
    "ModelConfig",
    "Norm",
    "absmax_quantize",
    "absmean_ternary",
    "calibrate_sigma",
    "fake_quantize_values",
    "had_scores",
    "hw_sign",
    "quantize_values",
    "sign_ste",
    "soft_binarize",
    "ste",
    "topk_mask",
]

#: Gradient of the sign straight-through estimator is zero where ``|x|`` exceeds this.
STE_CLIP = 2.0
#: RMSNorm epsilon of BitLinear (as the reference code).
BITLINEAR_EPS = 1e-6


# --------------------------------------------------------------------------------------------
# Binarization
# --------------------------------------------------------------------------------------------


def hw_sign(x: torch.Tensor) -> torch.Tensor:
    """Sign with the hardware convention: ``+1`` where ``x >= 0`` (zero included), else ``-1``.

    Returns a tensor of the dtype of ``x`` holding only ``+1`` and ``-1``. The bit stored in
    hardware is ``hw_sign(x) > 0``.
    """
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip = clip
        return hw_sign(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.clip).to(grad.dtype), None


def sign_ste(x: torch.Tensor, clip: float = STE_CLIP) -> torch.Tensor:
    """:func:`hw_sign` in the forward pass; in the backward pass the gradient passes through
    unchanged where ``|x| <= clip`` and is zero where ``|x| > clip``."""
    return _SignSTE.apply(x, clip)


def soft_binarize(x: torch.Tensor, c: float, scaled: bool) -> torch.Tensor:
    """Smooth stand-in for the sign used in the first two distillation stages.

    ``scaled=True`` (stage 1) returns ``c * tanh(x / c)``: close to the identity for ``c = 5``,
    so the student starts as the teacher, and equal to ``tanh(x)`` at ``c = 1``.
    ``scaled=False`` (stage 2) returns ``tanh(x / c)``, which tends to the sign as ``c -> 0``.
    Both agree at ``c = 1``, so the schedule is continuous across the stage boundary.
    """
    if not c > 0:
        raise ValueError(f"c must be positive, not {c!r}")
    y = torch.tanh(x / c)
    return y * c if scaled else y


def had_scores(q_b: torch.Tensor, k_b: torch.Tensor) -> torch.Tensor:
    """Scores ``Q_b @ K_b^T`` over the last dimension: ``(..., Lq, d) x (..., Lk, d) ->
    (..., Lq, Lk)``. With +-1 inputs every entry is an integer in ``[-d, d]`` with the parity
    of ``d`` (exact in float32 for ``d < 2**24``)."""
    return q_b @ k_b.transpose(-1, -2)


def topk_mask(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    """Boolean mask of the entries kept by the hardware top-k of each row (last dimension).

    An entry is kept when it is among the ``k`` largest of its row; among equal scores the
    lower index wins, i.e. the kept set is the first ``k`` of the row sorted by the key
    ``(-score, index)``. With ``k is None`` or ``k >= row length`` every entry is kept.
    Exactly ``min(k, row length)`` entries per row are kept.
    """
    n = scores.shape[-1]
    if k is None or k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k!r}")
    kth = torch.topk(scores, k, dim=-1, sorted=True).values[..., -1:]
    above = scores > kth
    equal = scores == kth
    room = k - above.sum(dim=-1, keepdim=True)
    rank_among_equal = torch.cumsum(equal.to(torch.int32), dim=-1)
    return above | (equal & (rank_among_equal <= room))


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: the value of ``q`` exactly, the gradient of ``x``."""
    return q.detach() + (x - x.detach())


def quantize_values(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 codes of attention values as the host hands them to the hardware (``hadware run``).

    One symmetric scale per matrix of the last two dimensions (one sample's keys x head
    dimensions, for one head): ``scale = max|v| / 127`` (1 for an all-zero matrix),
    ``codes = clamp(round(v / scale), -127, 127)`` with ``round`` half to even, computed in the
    dtype of ``v``. Returns ``(codes, scale)``: int8 of the shape of ``v`` and ``scale`` of
    shape ``(..., 1, 1)`` in the dtype of ``v``; ``v ~= codes * scale``. The hardware's head
    output is in units of ``scale`` (times ``2**-out_frac_bits``).
    """
    if v.dim() < 2:
        raise ValueError(f"v must have at least 2 dimensions (keys, head dims), not {v.dim()}")
    v = v.detach()
    amax = v.abs().amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    codes = torch.clamp(torch.round(v / scale), -127, 127).to(torch.int8)
    return codes, scale


def fake_quantize_values(v: torch.Tensor) -> torch.Tensor:
    """``codes * scale`` of :func:`quantize_values` in the forward pass, the identity in the
    backward pass (straight-through estimator; the scale is treated as a constant)."""
    codes, scale = quantize_values(v)
    return ste(v, codes.to(v.dtype) * scale)


# --------------------------------------------------------------------------------------------
# BitLinear
# --------------------------------------------------------------------------------------------


def absmax_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (last dimension) absmax int8 quantization of the reference BitLinear.

    Returns ``(x_q, s)`` with ``s = 127 / max(max|x|, 1e-5)`` of shape ``(..., 1)`` and
    ``x_q = clamp(round(x * s), -128, 127)`` (float tensor holding integers).
    """
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5)
    return torch.clamp(torch.round(x * s), -128, 127), s


def absmean_ternary(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantization of a weight tensor (one scale per tensor).

    Returns ``(w_t, beta)`` with ``beta = max(mean|w|, 1e-5)`` (0-d tensor) and
    ``w_t = clamp(round(w / beta), -1, 1)`` holding only -1, 0 and +1.
    """
    beta = w.abs().mean().clamp_min(1e-5)
    return torch.clamp(torch.round(w / beta), -1, 1), beta


class BitLinear(nn.Module):
    """RMSNorm + linear map, ternary/int8 quantized when ``quantize`` is true.

    Forward with ``quantize=True``::

        x_n = x / sqrt(mean(x**2) + 1e-6) * g
        x_q, s = absmax_quantize(x_n);  W_t, beta = absmean_ternary(W)
        y = (x_q @ W_t^T) * beta / s

    The gradient reaches ``x`` and the latent float ``W`` through straight-through estimators
    (the rounding is treated as the identity). With ``quantize=False`` the output is
    ``x_n @ W^T``. No bias. After :meth:`load_ternary` the layer uses the given codes and
    beta instead of quantizing ``W``.
    """

    def __init__(self, in_features: int, out_features: int, *, quantize: bool = False) -> None:
        super().__init__()
        check_int("in_features", in_features, lo=1)
        check_int("out_features", out_features, lo=1)
        self.in_features = in_features
        self.out_features = out_features
        self.quantize = bool(quantize)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.gain = nn.Parameter(torch.ones(in_features))
        nn.init.normal_(self.weight, std=in_features**-0.5)
        # Set by load_ternary; not part of the state dict (an export stores them itself).
        self.register_buffer("ternary_codes", None, persistent=False)
        self.register_buffer("ternary_beta", None, persistent=False)

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm with the learnable gain (eps 1e-6)."""
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + BITLINEAR_EPS) * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_n = self.normed(x)
        if not self.quantize:
            return F.linear(x_n, self.weight)
        x_q, s = absmax_quantize(x_n)
        if self.ternary_codes is not None:
            w_q = self.ternary_codes.to(x_n.dtype) * self.ternary_beta
        else:
            w_t, beta = absmean_ternary(self.weight)
            w_q = ste(self.weight, w_t * beta)
        return F.linear(ste(x_n, x_q / s), w_q)

    @torch.no_grad()
    def load_ternary(self, codes: Any, beta: float, gain: Any) -> None:
        """Fix the layer to exported ternary ``codes`` (``(out, in)``, values in {-1, 0, 1}),
        their ``beta`` and the RMSNorm ``gain`` (``(in,)``), as :mod:`hadware.sw.export`
        stores them; switches the layer to ``quantize=True``. The forward pass then computes
        with ``codes * beta`` (beta rounded to the layer's dtype), never re-quantizing:
        re-quantizing ternary weights would shrink ``beta`` by the fraction of non-zeros. The
        latent ``weight`` is set to ``codes * beta``. Raises ``ValueError`` for a shape that
        does not fit the layer or a code outside {-1, 0, 1}."""
        codes = torch.as_tensor(np.asarray(codes))
        gain = torch.as_tensor(np.asarray(gain, dtype=np.float64))
        if tuple(codes.shape) != tuple(self.weight.shape):
            raise ValueError(f"codes must have shape {tuple(self.weight.shape)}, not "
                             f"{tuple(codes.shape)}")
        if tuple(gain.shape) != (self.in_features,):
            raise ValueError(f"gain must have shape ({self.in_features},), not "
                             f"{tuple(gain.shape)}")
        if codes.numel() and not bool(((codes >= -1) & (codes <= 1)).all()):
            raise ValueError("codes must hold only -1, 0 and +1")
        self.ternary_codes = codes.to(torch.int8).clone()
        self.ternary_beta = torch.tensor(float(beta), dtype=self.weight.dtype)
        self.weight.copy_(self.ternary_codes.to(self.weight.dtype) * self.ternary_beta)
        self.gain.copy_(gain.to(self.gain.dtype))
        self.quantize = True

    @torch.no_grad()
    def export_ternary(self) -> tuple[torch.Tensor, float]:
        """The ternary codes (int8 tensor in {-1, 0, 1}, shape ``(out, in)``) and ``beta``.

        Quantize once from the latent weights and keep both; re-quantizing ternary weights
        shrinks ``beta`` by the fraction of non-zeros. After :meth:`load_ternary`, the codes
        and beta loaded.
        """
        if self.ternary_codes is not None:
            return self.ternary_codes.clone(), float(self.ternary_beta)
        w_t, beta = absmean_ternary(self.weight)
        return w_t.to(torch.int8), float(beta)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, quantize={self.quantize}"


class GluMlp(nn.Module):
    """GLU channel mixer: ``gate, up = split(BitLinear(d -> 2I)(x))``,
    ``y = BitLinear(I -> d)(silu(gate) * up)``. ``ternary`` switches both layers between the
    float form (teacher) and the quantized form (MatMul-free)."""

    def __init__(self, d_model: int, hidden: int, *, ternary: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.gate_up = BitLinear(d_model, 2 * hidden, quantize=ternary)
        self.down = BitLinear(hidden, d_model, quantize=ternary)

    @property
    def ternary(self) -> bool:
        return self.gate_up.quantize

    @ternary.setter
    def ternary(self, value: bool) -> None:
        self.gate_up.quantize = self.down.quantize = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------


class HadAttention(nn.Module):
    """Multi-head self-attention whose heads are softmax (teacher) or HAD heads.

    Members
    -------
    had : torch.Tensor (bool buffer, ``(n_heads,)``)
        Which heads are binarized. All false: a standard attention layer.
    sigma_q, sigma_k : torch.Tensor (buffers, ``(n_heads,)``)
        The binarization scales; set by :func:`calibrate_sigma` and frozen afterwards. With
        ``sigma_scope="layer"`` all heads of a layer share one value.
    top_k : int or None
        Kept entries per query row in HAD heads (``None``: all).
    binarize : tuple
        ``("sign",)`` (stages 3-4, evaluation, hardware) or ``("soft", c, scaled)`` (stages
        1-2, see :func:`soft_binarize`). Top-k applies in every mode.
    v_int8 : bool
        Fake-quantize the values of the HAD heads with :func:`fake_quantize_values` (int8,
        one scale per sample and head, as the host hands them to the hardware), in training
        and evaluation alike; default true. Softmax (teacher) heads keep float values.
        ``False`` only measures what the quantization costs.
    """

    def __init__(self, d_model: int, n_heads: int, *, top_k: int | None = None,
                 sigma_scope: str = "layer") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.top_k = top_k
        self.sigma_scope = sigma_scope
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.register_buffer("had", torch.zeros(n_heads, dtype=torch.bool))
        self.register_buffer("sigma_q", torch.ones(n_heads))
        self.register_buffer("sigma_k", torch.ones(n_heads))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.binarize: tuple = ("sign",)
        self.v_int8 = True
        self._calib: list[torch.Tensor] | None = None

    @property
    def temperature(self) -> torch.Tensor:
        """``sigma_q * sigma_k / sqrt(head_dim)`` per head, shape ``(n_heads,)``."""
        return self.sigma_q * self.sigma_k / math.sqrt(self.head_dim)

    # -- calibration ------------------------------------------------------------------------

    def start_calibration(self) -> None:
        """Start accumulating std(Q) and std(K); forwards must run under ``no_grad``."""
        self._calib = []

    def finish_calibration(self) -> None:
        """Freeze ``sigma_q``/``sigma_k`` at the mean of the stds seen since the start."""
        if not self._calib:
            raise RuntimeError("finish_calibration() without any forward pass since "
                               "start_calibration()")
        stds = torch.stack(self._calib).mean(dim=0)
        self.sigma_q.copy_(stds[0])
        self.sigma_k.copy_(stds[1])
        self.calibrated.fill_(True)
        self._calib = None

    def _accumulate(self, q: torch.Tensor, k: torch.Tensor) -> None:
        if self.sigma_scope == "layer":
            sq = q.detach().std().expand(self.n_heads)
            sk = k.detach().std().expand(self.n_heads)
        else:
            sq = q.detach().transpose(0, 1).reshape(self.n_heads, -1).std(dim=1)
            sk = k.detach().transpose(0, 1).reshape(self.n_heads, -1).std(dim=1)
        self._calib.append(torch.stack([sq, sk]))

    # -- forward ----------------------------------------------------------------------------

    def binarized(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (soft or hard) binarized ``Q/sigma_q`` and ``K/sigma_k``, ``(B, H, L, d)``."""
        xq = q / self.sigma_q.view(1, -1, 1, 1)
        xk = k / self.sigma_k.view(1, -1, 1, 1)
        if self.binarize[0] == "sign":
            return sign_ste(xq), sign_ste(xk)
        _, c, scaled = self.binarize
        return soft_binarize(xq, c, scaled), soft_binarize(xk, c, scaled)

    def had_probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Sparse attention probabilities of HAD, ``(B, H, Lq, Lk)``; dropped entries are 0."""
        if not bool(self.calibrated):
            raise RuntimeError("HAD attention used before calibrate_sigma()")
        qb, kb = self.binarized(q, k)
        scores = had_scores(qb, kb)
        keep = topk_mask(scores.detach(), self.top_k)
        logits = scores * self.temperature.view(1, -1, 1, 1)
        return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(output, probs)``; ``probs`` is ``(B, H, L, L)``, softmax attention for
        the teacher heads, sparse HAD attention for the others."""
        b, n, _ = x.shape
        q, k, v = (self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        if self._calib is not None:
            self._accumulate(q, k)
        n_had = int(self.had.sum())
        if n_had < self.n_heads:
            soft = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        if n_had == 0:
            probs = soft
        elif n_had == self.n_heads:
            probs = self.had_probs(q, k)
        else:
            probs = torch.where(self.had.view(1, -1, 1, 1), self.had_probs(q, k), soft)
        if self.v_int8 and n_had:
            v_q = fake_quantize_values(v)
            v = v_q if n_had == self.n_heads else torch.where(self.had.view(1, -1, 1, 1), v_q, v)
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(out), probs


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


class Norm(nn.Module):
    """Pre-norm of a block: ``"layernorm"`` (``nn.LayerNorm``) or ``"rmsnorm"`` (gain only)."""

    def __init__(self, kind: str, d: int) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, eps=1e-5)
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-6) * self.weight


_CHOICES = {
    "input_kind": ("patches", "tokens"),
    "norm": ("layernorm", "rmsnorm"),
    "pool": ("mean", "cls", "last"),
    "sigma_scope": ("layer", "head"),
    "attention": ("softmax", "had"),
    "mlp": ("float", "ternary"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`Encoder`; everything needed to rebuild it from a state dict.

    Parameters
    ----------
    input_kind : ``"patches"`` (float features per token, a linear patch embedding) or
        ``"tokens"`` (integer fields per token, one embedding table per field, summed).
    input_dim : features per patch (``patches``); ignored for ``tokens``.
    vocab_sizes : vocabulary of each token field (``tokens``).
    seq_len : tokens per sequence (without the CLS token).
    n_classes : classifier outputs.
    d_model, n_heads, n_layers, mlp_hidden : sizes; head dim = ``d_model // n_heads``.
    norm : pre-norm kind. pool : ``"mean"``, ``"cls"`` or ``"last"`` (the last token).
    top_k : HAD top-k per query row, at most :attr:`n_keys` (``None``: all keys).
    sigma_scope : ``"layer"`` (one sigma per layer, as the paper) or ``"head"``.
    attention : ``"softmax"`` or ``"had"`` (all heads). mlp : ``"float"`` or ``"ternary"``.
    """

    input_kind: str
    seq_len: int
    n_classes: int
    input_dim: int = 0
    vocab_sizes: tuple[int, ...] = ()
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    mlp_hidden: int = 128
    norm: str = "layernorm"
    pool: str = "mean"
    top_k: int | None = None
    sigma_scope: str = "layer"
    attention: str = "softmax"
    mlp: str = "float"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab_sizes", tuple(self.vocab_sizes))
        for name, options in _CHOICES.items():
            value = getattr(self, name)
            if value not in options:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, "
                                 f"not {value!r}")
        check_int("seq_len", self.seq_len, lo=1)
        check_int("n_classes", self.n_classes, lo=2)
        check_int("d_model", self.d_model, lo=1)
        check_int("n_heads", self.n_heads, lo=1)
        check_int("n_layers", self.n_layers, lo=1)
        check_int("mlp_hidden", self.mlp_hidden, lo=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model must be a multiple of n_heads ({self.n_heads}), "
                             f"not {self.d_model!r}")
        if self.top_k is not None:
            check_int("top_k", self.top_k, lo=1)
            check_int("top_k", self.top_k, hi=self.n_keys, what=f"an integer between 1 and "
                      f"the keys of a row ({self.n_keys}, from seq_len and pool)")
        check_float("dropout", self.dropout, lo=0.0, hi=0.9)
        if self.input_kind == "patches":
            check_int("input_dim", self.input_dim, lo=1)
        else:
            if not self.vocab_sizes:
                raise ValueError("vocab_sizes must name at least one vocabulary for tokens")
            for i, v in enumerate(self.vocab_sizes):
                check_int(f"vocab_sizes[{i}]", v, lo=1)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_keys(self) -> int:
        """Keys of an attention row: ``seq_len``, plus the CLS token with ``pool="cls"``."""
        return self.seq_len + (1 if self.pool == "cls" else 0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vocab_sizes"] = list(self.vocab_sizes)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = Norm(cfg.norm, cfg.d_model)
        self.attn = HadAttention(cfg.d_model, cfg.n_heads, top_k=cfg.top_k,
                                 sigma_scope=cfg.sigma_scope)
        self.norm2 = Norm(cfg.norm, cfg.d_model)
        self.mlp = GluMlp(cfg.d_model, cfg.mlp_hidden, ternary=cfg.mlp == "ternary")
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, probs = self.attn(self.norm1(x))
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, probs


class Encoder(nn.Module):
    """Pre-norm transformer encoder classifier built from :class:`HadAttention` and
    :class:`GluMlp`.

    ``forward(x)`` takes ``(B, L, input_dim)`` floats (patches) or ``(B, L)`` / ``(B, L, F)``
    integers (tokens) and returns ``(logits, probs)``: ``(B, n_classes)`` logits and the list
    of per-layer attention probabilities ``(B, H, L', L')`` (``L' = L + 1`` with a CLS token).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        if config.input_kind == "patches":
            self.embed = nn.Linear(config.input_dim, d)
        else:
            self.embed = nn.ModuleList(nn.Embedding(v, d) for v in config.vocab_sizes)
            for e in self.embed:
                nn.init.normal_(e.weight, std=0.02 * math.sqrt(d))
        n_pos = config.seq_len + (config.pool == "cls")
        self.pos = nn.Parameter(torch.randn(n_pos, d) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if config.pool == "cls" else None
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.norm = Norm(config.norm, d)
        self.head = nn.Linear(d, config.n_classes)
        self.set_attention(config.attention)

    @property
    def attentions(self) -> list[HadAttention]:
        return [b.attn for b in self.blocks]

    def set_attention(self, kind: str, heads: Sequence[Sequence[int]] | None = None) -> None:
        """Make heads softmax (``"softmax"``) or HAD (``"had"``); ``heads`` (per layer, head
        indices) restricts the change to those heads. Updates ``self.config`` when all heads
        end up of one kind."""
        if kind not in _CHOICES["attention"]:
            raise ValueError(f"attention must be 'softmax' or 'had', not {kind!r}")
        for i, attn in enumerate(self.attentions):
            idx = list(range(attn.n_heads)) if heads is None else list(heads[i])
            attn.had[idx] = kind == "had"
        if all(bool(a.had.all()) for a in self.attentions):
            self.config = dataclasses.replace(self.config, attention="had")
        elif not any(bool(a.had.any()) for a in self.attentions):
            self.config = dataclasses.replace(self.config, attention="softmax")

    def set_mlp(self, kind: str) -> None:
        """Switch every MLP to ``"float"`` or ``"ternary"`` (same parameters)."""
        if kind not in _CHOICES["mlp"]:
            raise ValueError(f"mlp must be 'float' or 'ternary', not {kind!r}")
        for b in self.blocks:
            b.mlp.ternary = kind == "ternary"
        self.config = dataclasses.replace(self.config, mlp=kind)

    def set_binarize(self, mode: tuple) -> None:
        """Set the binarization mode of every HAD head (see :class:`HadAttention`)."""
        for a in self.attentions:
            a.binarize = mode

    def set_v_int8(self, on: bool) -> None:
        """Fake-quantize the HAD heads' values as deployed (``True``, the default) or keep them
        float (``False``, to measure the difference); see :class:`HadAttention`."""
        for a in self.attentions:
            a.v_int8 = bool(on)

    def temperatures(self) -> list[list[float]]:
        """Per layer, per head ``sigma_q * sigma_k / sqrt(head_dim)``."""
        return [[float(t) for t in a.temperature] for a in self.attentions]

    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.input_kind == "patches":
            h = self.embed(x)
        else:
            if x.dim() == 2:
                x = x.unsqueeze(-1)
            h = sum(e(x[..., i]) for i, e in enumerate(self.embed))
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
        return h + self.pos[: h.shape[1]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.embed_input(x)
        probs = []
        for block in self.blocks:
            h, p = block(h)
            probs.append(p)
        h = self.norm(h)
        if self.config.pool == "mean":
            pooled = h.mean(dim=1)
        else:
            pooled = h[:, 0] if self.config.pool == "cls" else h[:, -1]
        return self.head(pooled), probs

    def checkpoint(self) -> dict[str, Any]:
        """``{"config": ModelConfig dict, "state_dict": ...}``; :meth:`from_checkpoint`
        rebuilds the model from it."""
        return {"config": self.config.to_dict(), "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> Encoder:
        model = cls(ModelConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model


@torch.no_grad()
def calibrate_sigma(model: Encoder, batches: Iterable[torch.Tensor],
                    n_batches: int = 100) -> None:
    """Estimate ``sigma_q``/``sigma_k`` of every layer as the mean over up to ``n_batches``
    batches of std(Q) and std(K), then freeze them (``calibrated`` set). Runs the model with
    softmax attention in every head (the teacher's statistics), in eval mode, without
    gradients; the head kinds are restored afterwards."""
    was_training = model.training
    model.eval()
    saved = [a.had.clone() for a in model.attentions]
    for a in model.attentions:
        a.had.fill_(False)
        a.start_calibration()
    try:
        for i, x in enumerate(batches):
            if i >= n_batches:
                break
            model(x)
    finally:
        done = all(a._calib for a in model.attentions)
        for a in model.attentions:
            if done:
                a.finish_calibration()
            else:
                a._calib = None
        for a, had in zip(model.attentions, saved, strict=True):
            a.had.copy_(had)
        model.train(was_training)
    if not done:
        raise ValueError("calibrate_sigma() needs at least one batch")
