"""The ``hadware`` command line.

Subcommands::

    hadware blocks                                   list the blocks
    hadware config   BLOCK [--from CFG] [--set NAME=VALUE ...] [-o CFG.json]
                                                     write a block's config: its defaults
                                                     or CFG, with the values set
    hadware generate BLOCK [--config CFG] -o DIR     Verilog + description JSON, linted
    hadware golden   BLOCK [--config CFG] --inputs IN.npz --outputs OUT.npz
    hadware sim      BLOCK [--config CFG] --inputs IN.npz --outputs OUT.npz [--simulator ...]
    hadware synth    BLOCK [--config CFG] -o DIR [--seeds N] [--target-mhz F]
                                                     area, FPGA cells, fmax, critical path
    hadware explore  GRID.json -o DIR [--jobs N | --scheduler tcp://HOST:PORT]
                                                     a grid of any config fields, cached
    hadware demo     [-o DIR]                        the built-in demonstration

Errors caused by the user's input (a bad config value, a missing file, an input array that does
not fit, an option out of its range, an output in a folder that is missing or not writable)
are printed on one line and the exit status is 1, before anything is written; ``--debug`` shows
the traceback.

``config --set NAME=VALUE`` takes each value as JSON when it parses as JSON (``16``, ``0.5``,
``true``, ``null``, ``"16"`` in quotes) and as a plain string otherwise; the result is validated
as a config file given to ``--config`` is. A name that is not a parameter of the block, or a
name set twice, is refused.

Precision: for an attention block, ``config`` and ``generate`` log the proven error bound of
the output in units of its last place (``error_bound_ulp``) and warn when it exceeds 1;
``golden`` and ``sim`` write it into the report ``OUT.npz.json`` beside ``OUT.npz`` (with the
block, the config and the array shapes), so that the vector files hold the same arrays.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hadware.blocks import BLOCKS, get_block
from hadware.errors import HadwareError

__all__ = ["main"]

log = logging.getLogger("hadware")


def _add_block(p: argparse.ArgumentParser, config: bool = True) -> None:
    p.add_argument("block", metavar="BLOCK", help=f"one of: {', '.join(sorted(BLOCKS))}"
                   + (" (synth also: compare, sweep)" if p.prog.endswith("synth") else ""))
    if config:
        p.add_argument("--config", metavar="CFG.json", help="block configuration "
                       "(default: the block's defaults; see 'hadware config BLOCK')")
        p.add_argument("--weights", metavar="W.npz", help="weights, for blocks that have them "
                       "(mlp, encoder_layer): float latent weights as a trained model has them")


def _load(args) -> tuple:
    b = get_block(args.block)
    return b, b.load_config(args.config)


#: The extra vector files the command line offers (``--weights``); a block uses those in its
#: ``extras``.
EXTRA_OPTIONS = ("weights",)


def _refuse_unused_extras(args, used: tuple[str, ...], user: str) -> None:
    """An error for an extra file given to a command or block that does not read it."""
    for name in EXTRA_OPTIONS:
        if getattr(args, name, None) is not None and name not in used:
            takers = ", ".join(sorted(n for n, b in BLOCKS.items() if name in b.extras))
            raise HadwareError(f"--{name} is not used by {user} (blocks that take "
                               f"--{name}: {takers or 'none'})")


def _extras(b, args) -> dict:
    """The block's extra vector files (``--weights`` ...), loaded; an error names a missing
    one, or one given to a block that has none."""
    from hadware.vectors import load_npz

    _refuse_unused_extras(args, b.extras, f"block {b.name}")
    out = {}
    for name in b.extras:
        path = getattr(args, name, None)
        if path is None:
            raise HadwareError(f"block {b.name} needs --{name} FILE.npz")
        out[name] = load_npz(path, what=f"{name} file")
    return out


def cmd_blocks(args) -> int:
    for name, b in sorted(BLOCKS.items()):
        print(f"{name:12s} {b.summary}")
    return 0


def _log_error_bound(cfg) -> None:
    """State an attention config's proven error bound (``error_bound_ulp``), with a warning
    when it exceeds one unit of the last place."""
    bound = getattr(cfg, "error_bound_ulp", None)
    if bound is None:
        return
    log.info("error bound: %.4g ulp of out (units of 2**-%d) from the exact softmax",
             bound, cfg.out_frac_bits)
    if bound > 1.0:
        log.warning("warning: the error bound %.4g ulp exceeds 1 ulp; raise exp_frac_bits "
                    "(or lower out_frac_bits) for outputs within 1 ulp", bound)


def _write_outputs(args, b, cfg, outputs: dict, **facts) -> None:
    """Write ``--outputs OUT.npz`` and its report ``OUT.npz.json`` (block, config, arrays and,
    for an attention block, ``error_bound_ulp``); both atomically."""
    from hadware.config.base import atomic_write_text
    from hadware.vectors import save_npz

    report = {"block": b.name, "config": cfg.to_dict(), "config_hash": cfg.stable_hash(),
              "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                         for k, v in outputs.items()}, **facts}
    if getattr(cfg, "error_bound_ulp", None) is not None:
        report["error_bound_ulp"] = cfg.error_bound_ulp
    save_npz(args.outputs, outputs)
    atomic_write_text(report_path(args.outputs), json.dumps(report, indent=2) + "\n")


def report_path(outputs: str | Path) -> Path:
    """The JSON report beside an output vector file: ``OUT.npz`` -> ``OUT.npz.json``."""
    return Path(outputs).with_name(Path(outputs).name + ".json")


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """The ``NAME=VALUE`` items of ``option`` as a mapping. A value is JSON when it parses as
    JSON (a number, ``true``, ``false``, ``null``, a string in double quotes) and the plain
    string otherwise. An item without ``=`` or without a name, and a name given twice, are a
    :class:`HadwareError` naming the item."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items:
        name, eq, text = item.partition("=")
        if not eq or not name:
            raise HadwareError(f"{option} {item!r}: expected NAME=VALUE")
        if name in given:
            raise HadwareError(f"{option}: {name} is set twice ({given[name]}, {item}); "
                               "set each parameter once")
        given[name] = item
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError:
            values[name] = text
    return values


def cmd_config(args) -> int:
    from hadware.config.base import check_output_file

    b = get_block(args.block)
    changes = parse_assignments(args.set)
    cfg = b.load_config(args.from_file)  # the defaults without --from, as --config does
    if changes:
        cfg = cfg.with_changes(changes, source="--set")
    if args.output:
        check_output_file("-o", args.output)
    _log_error_bound(cfg)
    if args.output:
        cfg.save(args.output)  # atomically: a temporary file, then a rename
        log.info("wrote %s", args.output)
    else:
        sys.stdout.write(cfg.to_json())
    return 0


def cmd_generate(args) -> int:
    from hadware.hw.generate import generate, lint

    b, cfg = _load(args)
    _log_error_bound(cfg)
    paths = generate(b.name, cfg, args.output, _extras(b, args))
    print(f"verilog:     {paths['verilog']}")
    print(f"description: {paths['description']}")
    if not args.no_lint:
        warnings = lint(paths["verilog"], b.name)
        for w in warnings:
            print(w)
        if warnings:
            raise HadwareError(f"verilator lint: {len(warnings)} warning(s) in "
                               f"{paths['verilog']}")
        print("lint:        clean (verilator --lint-only -Wall, documented waivers)")
    return 0


def _vector_job(args) -> tuple:
    """What ``golden`` and ``sim`` read, every input checked before any work: the block, its
    config, its extra files and the inputs; ``--outputs`` must be writable."""
    from hadware.config.base import check_output_file
    from hadware.vectors import load_npz

    b, cfg = _load(args)
    check_output_file("--outputs", args.outputs)
    return b, cfg, _extras(b, args), load_npz(args.inputs)


def cmd_golden(args) -> int:
    b, cfg, extras, inputs = _vector_job(args)
    outputs = b.golden_module().run_vectors(cfg, *[extras[n] for n in b.extras], inputs)
    _write_outputs(args, b, cfg, outputs)
    print(f"golden {b.name}: wrote {', '.join(f'{k} {v.shape}' for k, v in outputs.items())} "
          f"to {args.outputs}")
    return 0


def cmd_sim(args) -> int:
    from hadware.tb.runner import simulate

    b, cfg, extras, inputs = _vector_job(args)
    t0 = time.time()
    r = simulate(b.name, cfg, inputs, simulator=args.simulator, seed=args.seed,
                 idle_prob=args.idle, stall_prob=args.stall, waves=args.waves, extras=extras)
    _write_outputs(args, b, cfg, r.outputs, simulator=args.simulator,
                   cycles=int(r.stats["cycles"]))
    print(f"sim {b.name} ({args.simulator}): {r.stats['cycles']} cycles, "
          f"{time.time() - t0:.1f} s; wrote "
          f"{', '.join(f'{k} {v.shape}' for k, v in r.outputs.items())} to {args.outputs}")
    if r.waves:
        print(f"waves: {r.waves}")
    return 0


def cmd_synth(args) -> int:
    if args.block in ("compare", "sweep"):
        return cmd_compare(args)
    from hadware.synth.flow import check_target, synthesize

    b, cfg = _load(args)
    _check_timing_options(args)
    if args.layer:
        raise HadwareError(f"--layer applies to 'synth compare' only, not to {b.name}")
    if args.fit_lanes:
        raise HadwareError(f"--fit-lanes applies to 'synth compare' only, not to {b.name}")
    families = tuple(f.strip() for f in args.fpga.split(",") if f.strip())
    report = synthesize(b.name, cfg, args.output, fmax=not args.no_fmax,
                        extras=_extras(b, args), seeds=args.seeds, families=families)
    sys.stdout.write((Path(args.output) / "report.md").read_text())
    log.debug("%s", json.dumps(report))
    # (after the report is written; the ECP5's fmax, or the first family's without it)
    check_target(report["fpga"], args.target_mhz, b.name,
                 "ecp5" if "ecp5" in families else families[0])
    return 0


def _check_timing_options(args) -> None:
    """``--seeds`` at least 1; ``--target-mhz`` a positive finite number that needs place and
    route (refused with ``--no-fmax``)."""
    _check_count("--seeds", args.seeds)
    t = args.target_mhz
    if t is not None:
        if not math.isfinite(t) or t <= 0:
            raise HadwareError(f"--target-mhz {t:g}: expected a positive frequency in MHz")
        if args.no_fmax:
            raise HadwareError(f"--target-mhz {t:g} needs place and route; drop --no-fmax")


def cmd_compare(args) -> int:
    from hadware.config.attention import AttentionConfig

    _refuse_unused_extras(args, (), f"synth {args.block}")
    if args.fpga != "ice40,ecp5":
        raise HadwareError(f"--fpga {args.fpga}: applies to 'synth BLOCK' only, not to "
                           f"'synth {args.block}'")
    for option in ("queries", "jobs"):
        _check_count(f"--{option}", getattr(args, option))
    if args.layer:
        return _compare_layers(args)
    cfg = AttentionConfig() if args.config is None else AttentionConfig.load(args.config)
    if args.block == "compare":
        from hadware.synth.compare import compare

        _check_timing_options(args)
        compare(cfg, args.output, queries=args.queries, fmax=not args.no_fmax, jobs=args.jobs,
                seeds=args.seeds, target_mhz=args.target_mhz, fit_lanes=args.fit_lanes)
    else:
        if args.seeds != 1 or args.target_mhz is not None or args.fit_lanes:
            raise HadwareError("synth sweep: --seeds and --target-mhz apply to 'synth BLOCK' "
                               "and 'synth compare' only, --fit-lanes to 'synth compare'")
        from hadware.synth.sweep import sweep

        sweep(cfg, args.output, queries=args.queries, jobs=args.jobs,
              scheduler=args.scheduler, progress=True)
    sys.stdout.write((Path(args.output) / "report.md").read_text())
    return 0


def _compare_layers(args) -> int:
    from hadware.config.encoder_layer import EncoderLayerConfig
    from hadware.synth.layer_compare import compare_layers

    if args.block != "compare":
        raise HadwareError("--layer applies to 'synth compare' only")
    if args.seeds != 1 or args.target_mhz is not None or args.fit_lanes:
        raise HadwareError("synth compare --layer: --seeds, --target-mhz and --fit-lanes "
                           "apply to the attention compare only")
    _check_count("--sequences", args.sequences)
    cfg = EncoderLayerConfig() if args.config is None else EncoderLayerConfig.load(args.config)
    compare_layers(cfg, args.output, sequences=args.sequences, fmax=not args.no_fmax,
                   jobs=args.jobs)
    sys.stdout.write((Path(args.output) / "report.md").read_text())
    return 0


def cmd_train(args) -> int:
    from hadware.sw.train import run

    return run(args)


def cmd_train_sweep(args) -> int:
    from hadware.sw.train import sweep_recall

    sweep_recall(args.out, top_ks=tuple(args.top_ks), seed=args.seed, threads=args.threads,
                 jobs=args.jobs, scheduler=args.scheduler)
    sys.stdout.write((Path(args.out) / "sweep.md").read_text())
    return 0


def cmd_explore(args) -> int:
    from hadware.synth.explore import explore

    if args.jobs < 1:
        raise HadwareError(f"--jobs must be an integer of at least 1, not {args.jobs}")
    s = explore(args.grid, args.output, jobs=args.jobs, scheduler=args.scheduler,
                retries=args.retries, queries=args.queries, seed=args.seed,
                timeout=args.timeout, clock_mhz=args.clock_mhz, progress=not args.no_progress,
                front_by=args.front_by or ())
    print(f"explore: {len(s['rows'])} points, {s['computed']} computed, {s['cached']} from "
          f"the cache, {s['failed']} failed, {s['invalid']} invalid -> "
          f"{Path(args.output) / 'report.md'}")
    for r in s["rows"]:
        if r["status"] != "ok":
            print(f"  {r['status']}: {r['error']}")
    if s["failed"]:
        raise HadwareError(f"{s['failed']} point(s) failed; their errors are in "
                           f"{Path(args.output) / 'results.jsonl'}")
    return 0


def cmd_export(args) -> int:
    from hadware.sw.export import export_checkpoint

    m = export_checkpoint(args.checkpoint, args.out, task=args.task, lanes=args.lanes)
    print(f"exported {len(m['layers'])} layer(s), {len(m['files'])} files to {args.out}")
    return 0


def cmd_rtl(args) -> int:
    from hadware.sw.export import generate_model

    r = generate_model(args.folder, args.output, lint=not args.no_lint)
    for b in r["blocks"]:
        lint_text = "" if b["lint_warnings"] is None else \
            f"  lint: {len(b['lint_warnings'])} warning(s)"
        print(f"  {b['name']:16s} {Path(args.output) / b['verilog']}{lint_text}")
    print(f"index: {Path(args.output) / 'model.json'}")
    bad = [b["name"] for b in r["blocks"] if b["lint_warnings"]]
    if bad:
        raise HadwareError(f"verilator lint warnings in {', '.join(bad)}")
    return 0


def cmd_run(args) -> int:
    from hadware.sw.run import run_exported

    r = run_exported(args.folder, golden=args.golden, both=args.both, samples=args.samples,
                     out=args.out)
    for k, v in r.items():
        print(f"  {k:24s} {v}")
    if args.both and not r["hw_matches_golden"]:
        raise HadwareError("the simulated hardware and the golden models differ: "
                           + (r["first_block_mismatch"] or "in the logits"))
    return 0


def cmd_demo(args) -> int:
    from hadware.sw.demo import run_demo

    run_demo(args.output, seed=args.seed, samples=args.samples, retrain=args.retrain,
             synth=not args.no_synth)
    return 0


def _check_count(option: str, value: int) -> None:
    """A count option (``--queries``, ``--jobs``): an integer of at least 1."""
    from hadware.config.base import check_int

    check_int(option, value, lo=1, what="an integer of at least 1")


def _prob(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {text}")
    return v


class _Subparser(argparse.ArgumentParser):
    """A subcommand's parser whose arguments may come from a module imported only when the
    subcommand is used (``train`` needs torch; ``generate`` and the others must not import
    it)."""

    def __init__(self, *args, add_arguments: Callable[[argparse.ArgumentParser], None]
                 | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._add_arguments = add_arguments

    def _complete(self) -> None:
        if self._add_arguments is not None:
            add, self._add_arguments = self._add_arguments, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._complete()
        return super().format_help()


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from hadware.sw.train import add_arguments

    add_arguments(parser)


def _add_scheduler(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help=f"{prefix}run the points on this Dask scheduler's workers (the same "
                   "pinned install on each) instead of local processes")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hadware", description="Verified RTL for binarized "
                                "Hamming attention and ternary MatMul-free MLPs.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Subparser)

    s = sub.add_parser("blocks", help="list the blocks")
    s.set_defaults(func=cmd_blocks)

    s = sub.add_parser("config", help="write a block's configuration: its defaults or a "
                       "config file, with values set")
    _add_block(s, config=False)
    s.add_argument("--from", dest="from_file", metavar="CFG.json",
                   help="start from this config file instead of the block's defaults")
    s.add_argument("--set", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                   help="set a parameter (repeatable; each name once); VALUE is JSON when it "
                   "parses (16, 0.5, true, null, '\"text\"'), a plain string otherwise; "
                   "validated as a config file is")
    s.add_argument("-o", "--output", metavar="CFG.json",
                   help="write the config here (atomically) instead of to stdout")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("generate", help="generate Verilog and its description, then lint it")
    _add_block(s)
    s.add_argument("-o", "--output", metavar="DIR", required=True)
    s.add_argument("--no-lint", action="store_true", help="skip the Verilator lint")
    s.set_defaults(func=cmd_generate)

    for name, func, text in (("golden", cmd_golden, "run the golden model on a vector file"),
                             ("sim", cmd_sim, "run a vector file through the simulated RTL")):
        s = sub.add_parser(name, help=text)
        _add_block(s)
        s.add_argument("--inputs", metavar="IN.npz", required=True)
        s.add_argument("--outputs", metavar="OUT.npz", required=True,
                       help="output arrays, in an existing folder; beside them OUT.npz.json: "
                       "block, config, array shapes and, for attention, error_bound_ulp")
        s.set_defaults(func=func)
        if name == "sim":
            s.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
            s.add_argument("--seed", type=int, default=0, help="seed of the random stalls")
            s.add_argument("--stall", type=_prob, default=0.0, metavar="P",
                           help="probability that the output is not ready in a cycle")
            s.add_argument("--idle", type=_prob, default=0.0, metavar="P",
                           help="probability that an input beat is held back a cycle")
            s.add_argument("--waves", action="store_true", help="record an FST/VCD trace")

    s = sub.add_parser("synth", help="synthesize: area, FPGA cells, fmax; 'synth compare' and "
                       "'synth sweep' compare HAD with standard attention")
    _add_block(s)
    s.add_argument("-o", "--output", metavar="DIR", required=True)
    s.add_argument("--no-fmax", action="store_true", help="skip place and route")
    s.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="place and route with nextpnr seeds 1..N; fmax is their median "
                   "(min and max beside it)")
    s.add_argument("--target-mhz", type=float, default=None, metavar="F",
                   help="fail (exit 1, after the report is written) when the ECP5 median "
                   "fmax of a design is below F (synth BLOCK with no ecp5 in --fpga: the "
                   "first family's)")
    s.add_argument("--fpga", default="ice40,ecp5", metavar="FAMILIES",
                   help="synth BLOCK: the FPGA devices, comma-separated, of ice40 (HX8K), "
                   "ecp5 (LFE5U-85F), ecp5_heap (the same, placed by nextpnr's HeAP placer "
                   "instead of the static one), up5k (iCE40UP5K, its multipliers used) "
                   "(default ice40,ecp5)")
    s.add_argument("--fit-lanes", action="store_true",
                   help="compare: a design too large for the ECP5 also gets its fmax at the "
                   "largest power-of-two fraction of lanes that fits")
    s.add_argument("--queries", type=int, default=4, metavar="M",
                   help="compare/sweep: queries in the energy workload")
    s.add_argument("--layer", action="store_true",
                   help="compare: the HAD + ternary encoder layer (--config: an encoder_layer "
                   "config) against the standard int8 layer of the same shape")
    s.add_argument("--sequences", type=int, default=1, metavar="S",
                   help="compare --layer: sequences of n_max tokens in the energy workload")
    s.add_argument("--jobs", type=int, default=2, metavar="J",
                   help="compare/sweep: designs synthesized in parallel")
    _add_scheduler(s, "sweep: ")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("explore", help="design-space exploration: a grid over any config "
                       "fields, cached and resumable, local or on a Dask cluster, Pareto fronts")
    s.add_argument("grid", metavar="GRID.json", help='{"block": B, "base": {...}, "grid": '
                   '{field: [values]}, "points": [...], "figures": [...]} or a list of them')
    s.add_argument("-o", "--output", metavar="DIR", required=True,
                   help="results, cache and report folder (a rerun computes what is missing)")
    s.add_argument("--jobs", type=int, default=2, metavar="N", help="local worker processes")
    _add_scheduler(s, "")
    s.add_argument("--retries", type=int, default=2, metavar="N",
                   help="Dask: extra attempts of a task lost with its workers too often")
    s.add_argument("--queries", type=int, default=4, metavar="M",
                   help="queries in the energy/cycles workload")
    s.add_argument("--seed", type=int, default=0, help="seed of the workload")
    s.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                   help="timeout of each tool run")
    s.add_argument("--clock-mhz", type=float, default=100.0, metavar="F",
                   help="clock for queries per second where no fmax was measured")
    s.add_argument("--front-by", nargs="+", metavar="FIELD",
                   help="one Pareto front per combination of these config fields' values "
                        "(e.g. n_max: context length as a requirement, not a choice)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_explore)

    s = sub.add_parser("train", help="train a teacher and its HAD + ternary student on a "
                       "built-in task", add_arguments=_train_arguments)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("train-sweep", help="top_k sweep on the recall task (table and plot)")
    s.add_argument("--out", metavar="DIR", required=True)
    s.add_argument("--top-ks", metavar="K", type=int, nargs="+", default=[4, 8, 16, 32])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="students trained in parallel (local processes)")
    _add_scheduler(s, "")
    s.set_defaults(func=cmd_train_sweep)

    s = sub.add_parser("export", help="export a trained student into ROM images and configs")
    s.add_argument("checkpoint", metavar="CHECKPOINT", help="student.pt of 'hadware train'")
    s.add_argument("--out", metavar="DIR", required=True)
    s.add_argument("--task", default=None, help="task name (default: from metrics.json)")
    s.add_argument("--lanes", type=int, default=4, help="hardware lanes (default 4)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("rtl", help="Verilog of every block of an exported model, linted")
    s.add_argument("folder", metavar="EXPORT_DIR", help="folder written by 'hadware export'")
    s.add_argument("-o", "--output", metavar="DIR", required=True)
    s.add_argument("--no-lint", action="store_true", help="skip verilator lint")
    s.set_defaults(func=cmd_rtl)

    s = sub.add_parser("run", help="run an exported model on the simulated hardware")
    s.add_argument("folder", metavar="DIR")
    s.add_argument("--golden", action="store_true", help="bit-exact golden models instead")
    s.add_argument("--both", action="store_true", help="hardware and golden, compared")
    s.add_argument("--samples", type=int, default=None, help="first N test samples")
    s.add_argument("--out", metavar="RESULT.json", default=None)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("demo", help="the built-in demonstration (make demo)")
    s.add_argument("-o", "--output", metavar="DIR", default="build/demo")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--samples", type=int, default=200, help="test samples on the hardware")
    s.add_argument("--retrain", action="store_true", help="train again even if a run exists")
    s.add_argument("--no-synth", action="store_true", help="skip the synthesis step")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except (HadwareError, TypeError, ValueError) as e:
        if args.debug:
            raise
        msg = str(e).strip().splitlines()
        print(f"hadware: error: {msg[0] if msg else type(e).__name__}", file=sys.stderr)
        for line in msg[1:]:
            print(f"  {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hadware: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
