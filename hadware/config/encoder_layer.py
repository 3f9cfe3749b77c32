"""Configuration of the MatMul-free HAD encoder layer.

One pre-norm transformer layer over a sequence of up to ``n_max`` tokens of ``d_model``
values, with no matrix multiplication anywhere: ternary BitLinear projections (adder trees),
binarized queries and keys scored by XNOR-popcount, top-k softmax, the ternary GLU MLP. The
integer arithmetic is specified in :mod:`hadware.golden.encoder_layer`; this module holds its
parameters and derives the configurations of the parts it is built from (the attention core
of :mod:`hadware.config.attention`, the BitLinear geometry and the MLP of
:mod:`hadware.config.mlp`), so that the layer, its golden model and its testbench agree on
every width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from hadware.config.attention import AttentionConfig
from hadware.config.attention_core import AttentionCoreConfig
from hadware.config.base import BlockConfig, check_bool, check_float, check_int
from hadware.config.mlp import MAX_BITS, BitLinearGeometry, MlpConfig, check_weights_format
from hadware.spec.widths import unsigned_width

__all__ = ["EncoderLayerConfig", "LayerConfig"]

#: Bits of a quantized value element (the attention core's int8 values).
V_BITS = 8


@dataclasses.dataclass(frozen=True)
class LayerConfig(BlockConfig):
    """Fields, checks and derived parts shared by the layer blocks (not a block itself): the
    MatMul-free HAD layer :class:`EncoderLayerConfig` and the standard int8 layer
    :class:`~hadware.config.std_layer.StdLayerConfig` are the same structure with other
    parts (the attention core, the weight format, whether queries and keys are bits or
    int8). Golden model
    :mod:`hadware.golden.encoder_layer`.

    Parameters
    ----------
    d_model : int
        Width of a token of the residual stream; ``n_heads * head_dim``.
    n_heads, head_dim : int
        Attention heads and the width of each (query, key and value bits of a head; a positive
        multiple of 8, as binarized keys are stored in bytes).
    n_max : int
        Most tokens of a sequence (1 to 4096); the attention context.
    top_k : int
        Keys kept per query (1 to ``n_max``); the HAD layer only.
    d_hidden : int
        Hidden width of the GLU MLP.
    lanes : int
        Ternary weights per cycle of every projection, elements per beat of the token streams
        (it divides ``d_model`` and ``d_hidden``) and key rows scored per cycle by the
        attention core (at most ``min(n_max, 64)``). Changes timing and area, never a result.
    temperature : float or tuple of float
        The softmax temperature of each head (one value for every head, or ``n_heads``
        values): the head's attention weights are ``exp(-temperature * (s_max - s))`` over its
        integer scores ``s``.
    causal : bool
        Token ``t`` attends to tokens ``0 .. t`` only (the core's per-query ``n``); otherwise
        to every token of its sequence.
    head_parallel : bool
        One attention core per head, all heads of a token at once (each core with its own
        temperature table in ROM), or one core shared by the heads in turn (its table written
        at run time before each head).
    res_bits, res_frac_bits : int
        Format of the residual stream (the layer's input ``x``, the stream ``h`` between the
        attention and the MLP, and the output ``y``): ``res_bits``-bit two's-complement
        integers in units of ``2**-res_frac_bits``. Default (16, 8): range +-128 with steps
        of 1/256. An input value outside the range is refused; a sum that leaves it saturates
        and is counted (the ``sat`` status). ``res_bits`` 4 to 22.
    qkv_bits, qkv_frac_bits : int
        Output format of the QKV BitLinear (the rows before their int8 quantization; the HAD
        layer's query and key rows only give their accumulator's sign). Default (16, 8).
    v_shift : int
        The int8 rule: ``V_q = SAT(RHU(V, v_shift), 8)``, so a value element is
        ``V_q * 2**(v_shift - qkv_frac_bits)`` (the standard layer quantizes its queries and
        keys by the same rule). One scale for the layer, chosen at export from calibration
        data (:func:`hadware.spec.encoder_layer.choose_v_shift`); 0 to ``qkv_bits - 1``.
    exp_frac_bits, attn_out_frac_bits :
        The attention core's ``exp_frac_bits`` and ``out_frac_bits``
        (:mod:`hadware.config.attention_core`). Default 19, 8.
    topk_unit : str
        The HAD core's ``topk_unit``, default ``"counting"``; the HAD layer only.
    weights : str
        The weight format of the four BitLinears (:mod:`hadware.spec.weights`): ``"ternary"``
        (the HAD layer's default: adder trees) or ``"int8"`` (the standard layer's default:
        one multiplier per lane).
    gain_bits, gain_frac_bits, mant_bits, recip_frac_bits, kappa_bits, scale_bits, rms_eps :
        Shared by the four BitLinear layers (QKV, output projection, the MLP's two), as in
        :class:`~hadware.config.mlp.MlpConfig`.
    act_bits, act_frac_bits, silu_range_log2, silu_seg_frac_bits, silu_frac_bits, h_bits,
    h_frac_bits :
        The MLP's inner formats (:class:`~hadware.config.mlp.MlpConfig`).

    Derived: :attr:`qkv` and :attr:`o_proj` (BitLinear geometries), :meth:`attention_config`
    (the attention core of a head), :attr:`mlp` (the MLP block's config).
    """

    #: Bits of a query or key element in the layer's buffers: 1 (binarized) or 8 (int8).
    qk_bits: ClassVar[int]

    d_model: int = 32
    n_heads: int = 2
    head_dim: int = 16
    n_max: int = 16
    d_hidden: int = 64
    lanes: int = 4
    temperature: Any = 0.125
    causal: bool = False
    head_parallel: bool = True
    res_bits: int = 16
    res_frac_bits: int = 8
    qkv_bits: int = 16
    qkv_frac_bits: int = 8
    v_shift: int = 4
    exp_frac_bits: int = 19
    attn_out_frac_bits: int = 8
    weights: str = "ternary"
    gain_bits: int = 18
    gain_frac_bits: int = 14
    mant_bits: int = 18
    recip_frac_bits: int = 10
    kappa_bits: int = 18
    scale_bits: int = 20
    rms_eps: float = 1e-6
    act_bits: int = 24
    act_frac_bits: int = 16
    silu_range_log2: int = 4
    silu_seg_frac_bits: int = 6
    silu_frac_bits: int = 18
    h_bits: int = 24
    h_frac_bits: int = 16

    def validate(self) -> None:
        check_int("n_heads", self.n_heads, lo=1, hi=64)
        check_int("head_dim", self.head_dim, lo=8, hi=1024, multiple_of=8,
                  what="a positive multiple of 8, at most 1024")
        check_int("d_model", self.d_model, lo=8, hi=4096)
        if self.d_model != self.n_heads * self.head_dim:
            raise ValueError(f"d_model must be n_heads * head_dim ({self.n_heads} * "
                             f"{self.head_dim} = {self.n_heads * self.head_dim}), not "
                             f"{self.d_model!r}")
        check_int("n_max", self.n_max, lo=1, hi=4096)
        self.validate_attention()
        check_weights_format(self.weights)
        check_int("d_hidden", self.d_hidden, lo=1, hi=4096)
        lanes_max = min(self.n_max, 64)
        check_int("lanes", self.lanes, lo=1, hi=lanes_max,
                  what=f"an integer between 1 and min(n_max, 64) ({lanes_max})")
        if self.d_model % self.lanes or self.d_hidden % self.lanes:
            raise ValueError(f"lanes must divide d_model ({self.d_model}) and d_hidden "
                             f"({self.d_hidden}), not {self.lanes!r}")
        object.__setattr__(self, "temperature", self._temperatures())
        check_bool("causal", self.causal)
        check_bool("head_parallel", self.head_parallel)
        check_int("res_bits", self.res_bits, lo=4, hi=MAX_BITS - 2)
        check_int("res_frac_bits", self.res_frac_bits, lo=0, hi=self.res_bits - 1,
                  what=f"an integer between 0 and res_bits - 1 ({self.res_bits - 1})")
        check_int("qkv_bits", self.qkv_bits, lo=V_BITS, hi=MAX_BITS)
        check_int("qkv_frac_bits", self.qkv_frac_bits, lo=0, hi=self.qkv_bits - 1,
                  what=f"an integer between 0 and qkv_bits - 1 ({self.qkv_bits - 1})")
        check_int("v_shift", self.v_shift, lo=0, hi=self.qkv_bits - 1,
                  what=f"an integer between 0 and qkv_bits - 1 ({self.qkv_bits - 1})")
        # The parts validate the remaining fields and name them.
        for h in range(self.n_heads):
            self.attention_config(h)
        self.mlp  # noqa: B018 - validates the MLP's fields
        if self.o_in_frac_bits < 0:
            raise ValueError(f"v_shift must be at most attn_out_frac_bits + qkv_frac_bits "
                             f"({self.attn_out_frac_bits + self.qkv_frac_bits}), not "
                             f"{self.v_shift!r}")
        attn_width = self.attention_config(0).out_width
        if attn_width > MAX_BITS:
            raise ValueError(f"attn_out_frac_bits {self.attn_out_frac_bits} makes the "
                             f"attention output {attn_width} bits wide, more than {MAX_BITS}")

    def validate_attention(self) -> None:
        """The attention part's own fields (a layer block overrides it)."""

    def _temperatures(self) -> tuple[float, ...]:
        t = self.temperature
        if isinstance(t, list | tuple):
            if len(t) != self.n_heads:
                raise ValueError(f"temperature must be one value or n_heads ({self.n_heads}) "
                                 f"values, not {len(t)} values {list(t)!r}")
            values = tuple(t)
        else:
            values = (t,) * self.n_heads
        out = []
        for h, v in enumerate(values):
            name = "temperature" if not isinstance(t, list | tuple) else f"temperature[{h}]"
            out.append(check_float(name, v, lo=0.0, lo_open=True))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["temperature"] = list(self.temperature)
        return d

    # -- the parts -----------------------------------------------------------------------------

    def attention_config(self, head: int) -> AttentionCoreConfig:  # pragma: no cover
        """The attention core of head ``head`` (its ROM temperature). A shared core
        (``head_parallel`` false) is :meth:`shared_attention_config`."""
        raise NotImplementedError

    def shared_attention_config(self) -> AttentionCoreConfig:
        """The one core shared by every head: head 0's config with a run-time table."""
        return dataclasses.replace(self.attention_config(0), runtime_temperature=True)

    def core_configs(self) -> list[AttentionCoreConfig]:
        """The configs of the attention cores the layer instantiates."""
        if self.head_parallel:
            return [self.attention_config(h) for h in range(self.n_heads)]
        return [self.shared_attention_config()]

    def _common(self) -> dict[str, Any]:
        return dict(gain_bits=self.gain_bits, gain_frac_bits=self.gain_frac_bits,
                    mant_bits=self.mant_bits, recip_frac_bits=self.recip_frac_bits,
                    kappa_bits=self.kappa_bits, scale_bits=self.scale_bits,
                    rms_eps=self.rms_eps)

    @property
    def qkv(self) -> BitLinearGeometry:
        """The QKV BitLinear: ``d_model -> 3 d_model`` (rows Q, then K, then V; heads
        contiguous inside each), input the residual format, output ``(qkv_bits,
        qkv_frac_bits)``."""
        return BitLinearGeometry(
            name="qkv", fan_in=self.d_model, fan_out=3 * self.d_model, in_bits=self.res_bits,
            in_frac_bits=self.res_frac_bits, out_bits=self.qkv_bits,
            out_frac_bits=self.qkv_frac_bits, weights=self.weights, **self._common())

    @property
    def attn_out_bits(self) -> int:
        """Signed width of an attention output element (the core's ``out_width``)."""
        return self.attention_config(0).out_width

    @property
    def o_in_frac_bits(self) -> int:
        """Fraction bits of the output projection's input: an attention output is in units of
        ``2**-attn_out_frac_bits`` value steps, a value step ``2**(v_shift - qkv_frac_bits)``."""
        return self.attn_out_frac_bits + self.qkv_frac_bits - self.v_shift

    @property
    def proj_bits(self) -> int:
        """Signed width of the outputs added to the residual stream (output projection, MLP):
        ``res_bits + 2``, in units of ``2**-res_frac_bits``."""
        return self.res_bits + 2

    @property
    def o_proj(self) -> BitLinearGeometry:
        """The output BitLinear: ``d_model -> d_model``, input the heads' attention outputs,
        output ``(proj_bits, res_frac_bits)``."""
        return BitLinearGeometry(
            name="o", fan_in=self.d_model, fan_out=self.d_model, in_bits=self.attn_out_bits,
            in_frac_bits=self.o_in_frac_bits, out_bits=self.proj_bits,
            out_frac_bits=self.res_frac_bits, weights=self.weights, **self._common())

    @property
    def mlp(self) -> MlpConfig:
        """The GLU MLP on the residual stream: input ``(res_bits, res_frac_bits)`` without an
        exponent, output ``(proj_bits, res_frac_bits)``."""
        return MlpConfig(
            d_model=self.d_model, d_hidden=self.d_hidden, lanes=self.lanes,
            x_bits=self.res_bits, x_frac_bits=self.res_frac_bits, x_exp_bits=0,
            act_bits=self.act_bits, act_frac_bits=self.act_frac_bits,
            silu_range_log2=self.silu_range_log2, silu_seg_frac_bits=self.silu_seg_frac_bits,
            silu_frac_bits=self.silu_frac_bits, h_bits=self.h_bits,
            h_frac_bits=self.h_frac_bits, y_bits=self.proj_bits,
            y_frac_bits=self.res_frac_bits, weights=self.weights, **self._common())

    @property
    def int8_rows(self) -> int:
        """QKV rows quantized by the int8 rule (and counted at the QKV L9): the value rows
        (``d_model``) of the HAD layer, every row (``3 d_model``) of the standard layer."""
        return self.d_model if self.qk_bits == 1 else 3 * self.d_model

    @property
    def sat_events_max(self) -> int:
        """Most saturations one sequence can count: per token ``2 int8_rows`` (the QKV
        BitLinear's rows under the int8 rule, and the rule), ``d_model`` (output
        projection), ``d_model`` (first residual sum), ``2 d_hidden`` (gate/up), ``d_hidden``
        (GLU), ``d_model`` (down), ``d_model`` (second residual sum)."""
        return self.n_max * (2 * self.int8_rows + 4 * self.d_model + 3 * self.d_hidden)

    @property
    def sat_width(self) -> int:
        """Bits of the per-sequence saturation count."""
        return unsigned_width(self.sat_events_max)

    @property
    def token_beats(self) -> int:
        """Beats of one token on the token streams: ``d_model / lanes``."""
        return self.d_model // self.lanes

    @property
    def weight_count(self) -> int:
        """Weights of the layer: ``4 d_model**2 + 3 d_model d_hidden``."""
        return 4 * self.d_model ** 2 + 3 * self.d_model * self.d_hidden

    @property
    def index_width(self) -> int:
        """Bits of a token index ``0 .. n_max - 1``."""
        return max(1, math.ceil(math.log2(self.n_max)))


@dataclasses.dataclass(frozen=True)
class EncoderLayerConfig(LayerConfig):
    """Configuration of the ``encoder_layer`` block, the MatMul-free HAD layer: ternary
    BitLinears, queries and keys binarized by their accumulators' signs, one HAD attention
    core (:class:`~hadware.config.attention.AttentionConfig`) per head or one shared. Fields:
    :class:`LayerConfig`, plus ``top_k`` and ``topk_unit``."""

    block = "encoder_layer"
    qk_bits = 1

    top_k: int = 4
    topk_unit: str = "counting"

    def validate_attention(self) -> None:
        check_int("top_k", self.top_k, lo=1, hi=self.n_max,
                  what=f"an integer between 1 and n_max ({self.n_max})")

    def attention_config(self, head: int) -> AttentionConfig:
        return AttentionConfig(
            d=self.head_dim, n_max=self.n_max, d_v=self.head_dim, lanes=self.lanes,
            temperature=self.temperature[head], exp_frac_bits=self.exp_frac_bits,
            out_frac_bits=self.attn_out_frac_bits, top_k=self.top_k, topk_unit=self.topk_unit)

