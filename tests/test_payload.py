"""Payload packing used by the testbenches, checked against hand-placed bit fields."""

from __future__ import annotations

import random

import pytest
from amaranth import signed
from amaranth.lib import data

from hadware.tb.payload import pack, unpack

LAYOUT = data.StructLayout({"a": 3, "b": data.ArrayLayout(signed(4), 2), "c": signed(5)})


def test_pack_places_fields_by_offset():
    # a at bits 0..2, b[0] at 3..6, b[1] at 7..10, c at 11..15 (two's complement).
    word = pack(LAYOUT, {"a": 5, "b": [-1, 3], "c": -16})
    assert word == 5 | (0b1111 << 3) | (0b0011 << 7) | (0b10000 << 11)


def test_round_trip_random():
    rng = random.Random(0)
    for _ in range(200):
        v = {"a": rng.randrange(8), "b": [rng.randrange(-8, 8) for _ in range(2)],
             "c": rng.randrange(-16, 16)}
        assert unpack(LAYOUT, pack(LAYOUT, v)) == v


def test_out_of_range_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        pack(LAYOUT, {"a": 8, "b": [0, 0], "c": 0})
    with pytest.raises(ValueError, match="does not fit"):
        pack(LAYOUT, {"a": 0, "b": [8, 0], "c": 0})
