"""Configuration of the standard int8 encoder layer, the baseline of the HAD layer: the same
structure and fields (:class:`~hadware.config.encoder_layer.LayerConfig`) with the standard
parts. Golden model :mod:`hadware.golden.encoder_layer` (which specifies both layers)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hadware.config.encoder_layer import LayerConfig
from hadware.config.std_attention import StdAttentionConfig

__all__ = ["StdLayerConfig"]


@dataclasses.dataclass(frozen=True)
class StdLayerConfig(LayerConfig):
    """Configuration of the ``std_layer`` block, the standard int8 layer of the same shape:
    int8 BitLinears (``weights`` ``"int8"``: a multiplier per lane in every projection),
    queries, keys and values quantized to int8 by the one int8 rule, the standard attention
    core (:class:`~hadware.config.std_attention.StdAttentionConfig`: int8 dot products, a
    softmax over every key) per head or one shared, the int8 GLU MLP. Fields:
    :class:`LayerConfig`, with ``temperature`` on the int8 dot products: its default (None) is
    ``2**(2 (v_shift - qkv_frac_bits)) / sqrt(head_dim)``, the ``1/sqrt(head_dim)`` of float
    attention in the units of the int8 scores."""

    block = "std_layer"
    qk_bits = 8

    temperature: Any = None
    weights: str = "int8"

    def validate(self) -> None:
        if self.temperature is None:
            step2 = 2.0 ** (2 * (self.v_shift - self.qkv_frac_bits))
            object.__setattr__(self, "temperature",
                               step2 / math.sqrt(self.head_dim) if isinstance(
                                   self.head_dim, int) and self.head_dim > 0 else 0.125)
        super().validate()

    def attention_config(self, head: int) -> StdAttentionConfig:
        return StdAttentionConfig(
            d=self.head_dim, n_max=self.n_max, d_v=self.head_dim, lanes=self.lanes,
            temperature=self.temperature[head], exp_frac_bits=self.exp_frac_bits,
            out_frac_bits=self.attn_out_frac_bits)
