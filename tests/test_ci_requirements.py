"""CI cannot go green without the second simulator: with ``HADWARE_REQUIRE_ICARUS=1`` (as
``.ci/run`` sets it) a missing Icarus Verilog stops the test run; without it, the Icarus tests
are skipped with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pytest_without_iverilog(tmp_path, **env):
    # A PATH with python but no iverilog.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    run_env = {k: v for k, v in os.environ.items() if k != "HADWARE_REQUIRE_ICARUS"}
    run_env.update(PATH=str(bin_dir), PYTEST_ADDOPTS="-p no:xdist -p no:cacheprovider", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_payload.py"],
                          cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=300)


def test_ci_fails_without_icarus(tmp_path):
    r = _pytest_without_iverilog(tmp_path, HADWARE_REQUIRE_ICARUS="1")
    assert r.returncode != 0
    assert "Icarus Verilog (iverilog) is not installed" in r.stdout + r.stderr


def test_without_the_requirement_the_run_goes_on(tmp_path):
    r = _pytest_without_iverilog(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_ci_script_sets_the_requirement():
    text = (ROOT / ".ci" / "run").read_text()
    assert "export HADWARE_REQUIRE_ICARUS=1" in text
    assert text.index("HADWARE_REQUIRE_ICARUS") < text.index("make test")


def test_every_test_runs_under_a_timeout(request):
    # pytest-timeout from pyproject's addopts: a hung simulation fails instead of stalling CI.
    assert 0 < request.config.getoption("timeout") <= 900
