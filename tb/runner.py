"""Host side of the cocotb simulations: one build per (block, config, simulator), reused.

``simulate(block, cfg, inputs)`` generates the Verilog (if it changed), builds it with the chosen
simulator (if it is not built yet), writes a run folder, runs the block's cocotb test module on
it and returns what the hardware produced.

Build folders: ``<build_root>/sim/<block>-<config hash>/<simulator>[-waves]/``. A stamp file
holds the hash of the Verilog and the tool versions; a build is redone only when those change.
Concurrent builds of the same folder (pytest workers, several shells) wait on a file lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hadware.blocks import get_block
from hadware.config.base import BlockConfig, atomic_write_text
from hadware.errors import ToolError
from hadware.hw.generate import extras_hash, verilog_text, write_if_changed
from hadware.tools import apply_tool_env, build_root, icarus_available

__all__ = ["SIMULATORS", "SimResult", "build", "simulate"]

log = logging.getLogger(__name__)

SIMULATORS = ("verilator", "icarus")

#: Icarus compiles as Verilog-2005 (cocotb asks for -g2012; the later flag wins). Amaranth's
#: Verilog starts every combinational block from a ``reg ... = 0`` in its sensitivity list;
#: under -g2012 that initialiser raises no event at time 0, so a block whose inputs keep their
#: reset values (an all-zero first token) would stay X until an input changes. As Verilog-2005
#: (and in Verilator) every block is evaluated at time 0.
ICARUS_ARGS = ["-g2005"]
TIMESCALE = ("1ns", "1ps")


@dataclasses.dataclass
class SimResult:
    """What one simulation produced."""

    outputs: dict[str, np.ndarray]
    stats: dict[str, Any]
    run_dir: Path
    waves: Path | None


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _runner(simulator: str, *, public_top_only: bool = False):
    """The cocotb runner of ``simulator``. ``public_top_only`` (Verilator): only the top
    module's signals are made visible to the testbench, instead of every signal of every
    instance (cocotb's default, ``--public-flat-rw``). A gate netlist has hundreds of thousands
    of cell instances; exposing them all costs Verilator gigabytes and many minutes and keeps
    it from optimising; a control file (:func:`_top_control_file`) exposes the top's ports."""
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ToolError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    if simulator == "icarus" and not icarus_available():
        raise ToolError("simulator 'icarus' is not installed (Debian package 'iverilog')")
    apply_tool_env()
    runner = get_runner(simulator)
    if public_top_only and simulator == "verilator":
        full = runner._build_command

        def build_command():
            cmds = full()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

        runner._build_command = build_command
    return runner


def _top_control_file(folder: Path, top: str) -> Path:
    """A Verilator control file that makes the signals of module ``top`` readable and
    writable from the testbench."""
    path = folder / "public_top.vlt"
    write_if_changed(path, f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
    return path


#: Make variables of Verilator's generated makefile for gate-level builds: no C++ optimisation.
NETLIST_MAKEFLAGS = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"


def build(block: str, cfg: BlockConfig, *, simulator: str = "verilator", waves: bool = False,
          root: Path | None = None, extras: dict[str, dict] | None = None,
          netlist: list[Path] | None = None) -> Path:
    """Build ``block`` at ``cfg`` for ``simulator`` unless an up-to-date build exists; return
    the build folder. ``netlist`` replaces the generated RTL by other Verilog files with the
    same top module (a gate-level netlist and its cell models)."""
    root = build_root() if root is None else Path(root)
    name = cfg.build_name + (f"-{extras_hash(extras)}" if extras else "")
    if netlist is None:
        text, desc = verilog_text(block, cfg, extras)
    else:
        text = "\n".join(Path(p).read_text() for p in netlist)
        desc = {"block": block, "netlist": [Path(p).name for p in netlist]}
        name += "-gates-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = root / "sim" / name / (simulator + ("-waves" if waves else ""))
    import cocotb

    key = hashlib.sha256("\0".join([text, simulator, str(waves), cocotb.__version__,
                                     "public-top" if netlist is not None else "",
                                     *(ICARUS_ARGS if simulator == "icarus" else [])])
                         .encode()).hexdigest()
    stamp = folder / "hadware-build.json"
    with _locked(folder):
        if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
            return folder
        src = folder / f"{block}.v"
        write_if_changed(src, text)  # (a netlist is concatenated into one file)
        write_if_changed(folder / f"{block}.json", json.dumps(desc, indent=2) + "\n")
        gate_level = netlist is not None and simulator == "verilator"
        runner = _runner(simulator, public_top_only=gate_level)
        log_file = folder / "build.log"
        # A gate netlist is megabytes of one-line cells: its C++ compiles many times faster
        # without optimisation, and its simulations are short.
        flags = os.environ.get("MAKEFLAGS", "")
        if netlist is not None:
            os.environ["MAKEFLAGS"] = (flags + " " + NETLIST_MAKEFLAGS).strip()
        try:
            with _quiet_stdout(log_file):
                runner.build(sources=[src], hdl_toplevel=block, build_dir=folder,
                             timescale=TIMESCALE, waves=waves, always=True,
                             build_args=(["-Wno-fatal"] + (
                                 ["--trace-underscore", str(_top_control_file(folder, block))]
                                 if gate_level else []))
                             if simulator == "verilator" else ICARUS_ARGS)
        except (SystemExit, Exception) as e:
            raise ToolError(f"{simulator} build of {block} failed ({e}); see {log_file}") from None
        finally:
            os.environ["MAKEFLAGS"] = flags
        atomic_write_text(stamp, json.dumps({"key": key, "block": block,
                                             "config": cfg.to_dict()}) + "\n")
    return folder


@contextlib.contextmanager
def _quiet_stdout(log_file: Path):
    """Send the simulator's console output (file descriptors 1 and 2) to ``log_file``."""
    with open(log_file, "w") as f:
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def simulate(block: str, cfg: BlockConfig, inputs: dict[str, np.ndarray], *,
             simulator: str = "verilator", seed: int = 0, idle_prob: float = 0.0,
             stall_prob: float = 0.0, expected: dict[str, np.ndarray] | None = None,
             waves: bool = False, testcase: str = "vectors", root: Path | None = None,
             run_dir: Path | None = None,
             extras: dict[str, dict[str, np.ndarray]] | None = None,
             netlist: list[Path] | None = None, check: bool = True,
             golden: bool = False) -> SimResult:
    """Run ``inputs`` through the simulated RTL of ``block``.

    ``inputs`` are checked with the block's golden ``check_inputs`` first (the same contract
    as the golden model). With ``expected``, the cocotb scoreboard also compares every output
    element and the simulation fails on any mismatch. Raises :class:`ToolError` when the
    simulation fails, with the tail of its log.
    With ``golden`` (and no ``expected``), the expected outputs are the block's golden model's
    (``run_vectors`` of the registered golden module) for these inputs.
    """
    for name, p in (("idle_prob", idle_prob), ("stall_prob", stall_prob)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{name} must be in [0, 1), not {p!r}")
    b = get_block(block)
    missing = [name for name in b.extras if not extras or name not in extras]
    if missing:
        raise ToolError(f"block {block} needs the extra file(s) {', '.join(missing)}")
    # check=False: the caller has validated inputs of a testcase with its own contract.
    checked = b.golden_module().check_inputs(cfg, inputs) if check else dict(inputs)
    if golden and expected is None:
        expected = b.golden_module().run_vectors(cfg, *(extras[n] for n in b.extras), inputs)
    if not isinstance(checked, dict):  # a block whose check returns its single array
        checked = {next(iter(inputs)): checked}
    folder = build(block, cfg, simulator=simulator, waves=waves, root=root, extras=extras,
                   netlist=netlist)
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=runs)) if run_dir is None else run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.json").write_text(json.dumps({
        "block": block, "config": cfg.to_dict(), "seed": seed,
        "idle_prob": idle_prob, "stall_prob": stall_prob,
    }))
    np.savez(run_dir / "inputs.npz", **checked)
    if expected is not None:
        np.savez(run_dir / "expected.npz", **expected)
    for name in b.extras:
        np.savez(run_dir / f"extra_{name}.npz", **extras[name])
    runner = _runner(simulator)
    log_file = run_dir / "sim.log"
    results = run_dir / "results.xml"
    from cocotb_tools.runner import get_results

    # The runner exits the process on a failed test when it sees PYTEST_CURRENT_TEST; results
    # are read from the XML file below instead, the same way inside and outside pytest.
    env_test = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        with _quiet_stdout(log_file):
            runner.test(test_module=b.tb, hdl_toplevel=block, hdl_toplevel_lang="verilog",
                        testcase=testcase,
                        build_dir=folder, test_dir=run_dir, results_xml=str(results),
                        extra_env={"HADWARE_RUN_DIR": str(run_dir)}, waves=waves,
                        timescale=TIMESCALE, seed=seed)
    except SystemExit as e:
        raise ToolError(f"{simulator} simulation of {block} exited with {e.code}:\n"
                        f"{_tail(log_file)}") from None
    finally:
        if env_test is not None:
            os.environ["PYTEST_CURRENT_TEST"] = env_test
    try:
        n_tests, n_failed = get_results(results)
    except RuntimeError:
        n_tests, n_failed = 0, 1
    if n_tests == 0 or n_failed:
        raise ToolError(f"{simulator} simulation of {block} failed ({run_dir}):\n"
                        f"{_tail(log_file)}")
    with np.load(run_dir / "outputs.npz") as f:
        outputs = {k: f[k] for k in f.files}
    stats = json.loads((run_dir / "stats.json").read_text())
    wave_file = None
    if waves:
        found = sorted(run_dir.glob("*.fst")) + sorted(run_dir.glob("*.vcd"))
        wave_file = found[0] if found else None
    return SimResult(outputs=outputs, stats=stats, run_dir=run_dir, waves=wave_file)
