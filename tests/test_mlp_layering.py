"""The MLP side of the dependency rule at run time, in a fresh interpreter: the MLP's spec
modules import neither torch nor Amaranth, and ``hadware generate mlp`` (weights from W.npz,
quantized by :mod:`hadware.spec.mlp`) imports no torch. The rule on every module's import
statements is tests/test_dependencies.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_spec_and_mlp_generation_import_no_torch(tmp_path):
    code = f"""
import sys
import hadware.spec.mlp, hadware.spec.quant, hadware.spec.silu, hadware.spec.ternary
assert not any(m == "amaranth" or m.startswith(("torch", "amaranth.")) for m in sys.modules)
import numpy as np
from hadware.cli import main
rng = np.random.default_rng(0)
np.savez({str(tmp_path / "W.npz")!r}, w_gate_up=rng.normal(0, 0.25, (96, 16)),
         w_down=rng.normal(0, 0.15, (16, 48)), g_gate_up=np.ones(16), g_down=np.ones(48))
assert main(["generate", "mlp", "--weights", {str(tmp_path / "W.npz")!r}, "-o",
             {str(tmp_path)!r}, "--no-lint"]) == 0
assert "torch" not in sys.modules, "torch imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
