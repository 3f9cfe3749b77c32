"""The standard int8 encoder layer: :class:`~hadware.hw.encoder_layer.EncoderLayer` with the
standard parts (:class:`~hadware.config.std_layer.StdLayerConfig`): int8 BitLinears (a
multiplier per lane in every projection, :class:`~hadware.hw.ternary_projection.
Int8Projection`), queries and keys by the int8 rule, one standard attention core
(:class:`~hadware.hw.std_attention.StdAttention`) per head or one shared. Streams, phases
and the cycle formula are the HAD layer's (:mod:`hadware.hw.encoder_layer`; a shared core's
table is one beat per head); arithmetic exactly :mod:`hadware.golden.encoder_layer`."""

from __future__ import annotations

from hadware.config.std_layer import StdLayerConfig
from hadware.hw.encoder_layer import EncoderLayer

__all__ = ["StdLayer"]


class StdLayer(EncoderLayer):
    """The standard int8 layer."""

    config_class = StdLayerConfig
