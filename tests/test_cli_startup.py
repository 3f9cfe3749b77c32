"""A fast command line: ``hadware --help``, ``hadware config BLOCK`` and ``hadware golden BLOCK``
import the heavy libraries only where the command needs them.

Each command runs in a fresh interpreter, which then lists ``sys.modules``; the test holds that
list, not the wall-clock time (measured, not tested: see the README). ``golden`` needs torch:
the golden models compute in torch (``golden/attention_core.py``, ``golden/topk.py`` and
``golden/score_unit.py`` import it at the top), so torch is allowed there and nowhere else
here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hadware.blocks import BLOCKS

#: The designs whose commands must start fast: the attention family and the score unit.
FAST_BLOCKS = ["attention", "std_attention", "int8_topk_attention", "binary_dense_attention",
               "score_unit"]

#: Top-level packages that cost a large part of a second or more to import, and the project's
#: own packages that pull them in (hardware, testbenches, synthesis, training).
HEAVY = {"torch", "amaranth", "cocotb", "cocotb_tools", "dask", "distributed", "matplotlib",
         "scipy", "sklearn", "sympy", "pandas", "hadware.hw", "hadware.tb", "hadware.synth",
         "hadware.sw"}

#: What each command may import of those (numpy is not heavy but not needed by config/help).
ALLOWED = {"help": set(), "config": set(), "golden": {"torch"}}
NUMPY_ALLOWED = {"help": False, "config": False, "golden": True}

#: Runs ``main(argv)`` and writes the exit status and the loaded modules to a JSON file.
PROBE = """
import json, sys
from hadware.cli import main
out, argv = sys.argv[1], sys.argv[2:]
try:
    rc = main(argv)
except SystemExit as e:
    rc = e.code
with open(out, "w") as f:
    json.dump({"rc": rc, "modules": sorted(sys.modules)}, f)
"""


def loaded(tmp_path, *argv: str) -> set[str]:
    """The modules loaded by ``hadware ARGV`` in a fresh interpreter (which must succeed)."""
    report = tmp_path / "modules.json"
    p = subprocess.run([sys.executable, "-c", PROBE, str(report), *argv], capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    result = json.loads(report.read_text())
    assert result["rc"] == 0, p.stderr
    return set(result["modules"])


def check(modules: set[str], kind: str) -> None:
    heavy = {m for m in modules for h in HEAVY if m == h or m.startswith(h + ".")}
    top = {m.split(".")[0] if not m.startswith("hadware.") else ".".join(m.split(".")[:2])
           for m in heavy}
    assert top <= ALLOWED[kind], f"{kind} imports {sorted(top - ALLOWED[kind])}"
    if not NUMPY_ALLOWED[kind]:
        assert "numpy" not in modules, f"{kind} imports numpy"


@pytest.mark.parametrize("argv", [["--help"], ["blocks"], ["config", "--help"],
                                  ["golden", "--help"]], ids=" ".join)
def test_help(tmp_path, argv):
    check(loaded(tmp_path, *argv), "help")


@pytest.mark.parametrize("name", FAST_BLOCKS)
def test_config(tmp_path, name):
    check(loaded(tmp_path, "config", name), "config")
    cls = BLOCKS[name].config_class()
    cls().save(tmp_path / "base.json")
    first = cls.field_names()[0]
    modules = loaded(tmp_path, "config", name, "--from", "base.json", "--set",
                     f"{first}={json.dumps(getattr(cls(), first))}", "-o", "c.json")
    check(modules, "config")
    assert cls.load(tmp_path / "c.json") == cls()


def _inputs(name: str) -> dict[str, np.ndarray]:
    """Small inputs of the block's default config."""
    rng = np.random.default_rng(0)
    pm1 = np.array([-1, 1], dtype=np.int8)
    cfg = BLOCKS[name].config_class()()
    if name == "score_unit":
        return {"q": rng.choice(pm1, (2, cfg.d)), "k": rng.choice(pm1, (3, cfg.d))}
    if cfg.scorer == "hamming":
        q, k = rng.choice(pm1, (2, cfg.d)), rng.choice(pm1, (5, cfg.d))
    else:
        q, k = (rng.integers(-128, 128, (m, cfg.d)).astype(np.int8) for m in (2, 5))
    return {"q": q, "k": k, "v": rng.integers(-128, 128, (5, cfg.d_v)).astype(np.int8)}


@pytest.mark.parametrize("name", FAST_BLOCKS)
def test_golden(tmp_path, name):
    np.savez(tmp_path / "in.npz", **_inputs(name))
    check(loaded(tmp_path, "golden", name, "--inputs", "in.npz", "--outputs", "out.npz"),
          "golden")
    assert (tmp_path / "out.npz").exists() and (tmp_path / "out.npz.json").exists()


def test_the_probe_sees_heavy_imports(tmp_path):
    """The check fails where it should: ``train --help`` builds its options from the training
    module, which needs torch."""
    with pytest.raises(AssertionError, match=r"help imports \[.*'torch'"):
        check(loaded(tmp_path, "train", "--help"), "help")
