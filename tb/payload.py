"""Packing of stream payloads to and from the integers that appear on the Verilog ports.

Amaranth flattens a structured payload into one port; these helpers place each field at the
offset its :mod:`amaranth.lib.data` layout gives it, so testbenches never hard-code bit positions.
Signed fields are two's complement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack"]


def pack(layout: Any, value: Any) -> int:
    """Pack ``value`` (a mapping for a struct, a sequence for an array, an int for a plain shape)
    into an unsigned integer of ``layout``'s width. Integers must fit their field."""
    if isinstance(layout, data.StructLayout):
        if not isinstance(value, Mapping):
            raise TypeError(f"struct payload needs a mapping, not {type(value).__name__}")
        word = 0
        for name, field in layout:
            word |= pack(field.shape, value[name]) << field.offset
        return word
    if isinstance(layout, data.ArrayLayout):
        if not isinstance(value, Sequence) or len(value) != layout.length:
            raise ValueError(f"array payload needs {layout.length} elements")
        width = Shape.cast(layout.elem_shape).width
        word = 0
        for i, v in enumerate(value):
            word |= pack(layout.elem_shape, v) << (i * width)
        return word
    shape = Shape.cast(layout)
    v = int(value)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
        else (0, (1 << shape.width) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"value {v} does not fit {shape!r}")
    return v & ((1 << shape.width) - 1)


def unpack(layout: Any, word: int) -> Any:
    """Inverse of :func:`pack`: a dict for a struct, a list for an array, an int otherwise."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, word >> field.offset) for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        width = Shape.cast(layout.elem_shape).width
        return [unpack(layout.elem_shape, word >> (i * width)) for i in range(layout.length)]
    shape = Shape.cast(layout)
    v = word & ((1 << shape.width) - 1)
    if shape.signed and v >> (shape.width - 1):
        v -= 1 << shape.width
    return v
