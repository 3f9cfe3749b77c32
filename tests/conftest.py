"""Shared fixtures: one build folder for all test sessions (simulation builds are reused), and
skipping Icarus tests with a visible reason when Icarus Verilog is not installed, unless
``HADWARE_REQUIRE_ICARUS=1`` (set by ``.ci/run``): then a missing Icarus stops the run."""

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
    if os.environ.get("HADWARE_REQUIRE_ICARUS") == "1":
        raise pytest.UsageError("HADWARE_REQUIRE_ICARUS=1 but Icarus Verilog (iverilog) is not "
                                "installed: the second simulator is required here "
                                "('make sysdeps' installs it with apt-get)")
    skip = pytest.mark.skip(reason="Icarus Verilog (iverilog) is not installed; "
                                   "'make sysdeps' installs it where apt-get is usable")
    for item in items:
        if "icarus" in item.keywords:
            item.add_marker(skip)
