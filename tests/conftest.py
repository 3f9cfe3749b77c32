"""Shared fixtures: one build folder for all test sessions (simulation builds are reused), and
skipping Icarus tests with a visible reason when Icarus Verilog is not installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hadware.tools import icarus_available

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HADWARE_BUILD", str(ROOT / "build" / "tests"))


def pytest_collection_modifyitems(config, items):
    if icarus_available():
        return
    skip = pytest.mark.skip(reason="Icarus Verilog (iverilog) is not installed; "
                                   "'make sysdeps' installs it where apt-get is usable")
    for item in items:
        if "icarus" in item.keywords:
            item.add_marker(skip)
