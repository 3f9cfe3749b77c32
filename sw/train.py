"""Training entry points: :func:`train` (one task), :func:`sweep_recall` (top-k sweep) and the
command-line hooks :func:`add_arguments` / :func:`run`.

A run writes, in its output folder:

``metrics.json``
    Accuracies of the teacher, the HAD student with float MLPs and the HAD student with
    ternary MLPs, the wall time, the model configuration with the per-layer, per-head
    temperatures the hardware lookup tables are built from, and one summary per phase.
    Written atomically (temporary file, then ``os.replace``). The HAD students are trained and
    scored with their values V fake-quantized to int8 as deployed (per sample and head,
    :func:`hadware.sw.models.quantize_values`; ``value_quantization``), so
    ``student_ternary_int8_v_accuracy`` equals ``student_ternary_accuracy``;
    ``student_ternary_float_v_accuracy`` is the same student with float V, what the
    quantization costs.
``teacher.pt``, ``student_had.pt``, ``student.pt``
    ``{"config": ..., "state_dict": ...}`` of the teacher, the HAD student before ternary
    fine-tuning, and the final student (HAD + ternary MLPs), for
    :meth:`hadware.sw.models.Encoder.from_checkpoint`.

Runs are reproducible: the seed fixes the initialization, the batch order, the augmentation
and the generated data; the digits split and the recall test set do not depend on it. Results
are bit-identical for the same seed and thread count (float reductions may differ between
thread counts).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hadware.errors import HadwareError
from hadware.sw.distill import (
    PhaseResult,
    distill_had,
    evaluate,
    finetune_ternary,
    make_student,
    train_teacher,
)
from hadware.sw.models import Encoder
from hadware.sw.tasks import TASKS, Phases, TaskSpec, make_data, task_spec

__all__ = ["add_arguments", "run", "sweep_recall", "train"]

log = logging.getLogger(__name__)

#: How the HAD students' values are quantized in training and evaluation (``metrics.json``;
#: ``hadware demo`` reuses only a run trained this way).
VALUE_QUANTIZATION = "int8, one scale max|v|/127 per sample and head, as deployed"

#: Top-k values of the default recall sweep.
SWEEP_TOP_KS = (4, 8, 16, 32)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_choice(option: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise HadwareError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


def _check_int(option: str, value: Any, lo: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise HadwareError(f"{option} must be an integer of at least {lo}, not {value!r}")


def _check_out_dir(option: str, out_dir: Any) -> Path:
    """Check that ``out_dir`` is a folder or can be created as one; create it."""
    if not isinstance(out_dir, str | os.PathLike) or not str(out_dir):
        raise HadwareError(f"{option} must be a folder path, not {out_dir!r}")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise HadwareError(f"{option} {str(path)!r} exists and is not a folder")
    # The nearest existing ancestor must be a writable folder; missing folders are created.
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not path.exists():
        if not ancestor.is_dir():
            raise HadwareError(f"{option} {str(path)!r}: {str(ancestor)!r} is not a folder")
        if not os.access(ancestor, os.W_OK):
            raise HadwareError(f"{option} {str(path)!r}: folder {str(ancestor)!r} "
                               f"is not writable")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
            pass
    except OSError as e:
        raise HadwareError(f"{option} {str(path)!r} is not a writable folder: "
                           f"{e.strerror or e}") from None
    return path


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``, so
    readers never see a partial file. The file gets the usual permissions (umask applied)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save_model(path: Path, model: Encoder, **extra: Any) -> None:
    _atomic_write(path, lambda tmp: torch.save({**model.checkpoint(), **extra}, tmp))


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _model_summary(model: Encoder) -> dict[str, Any]:
    cfg = model.config
    return {
        "d_model": cfg.d_model,
        "heads": cfg.n_heads,
        "head_dim": cfg.head_dim,
        "layers": cfg.n_layers,
        "mlp_hidden": cfg.mlp_hidden,
        "seq_len": cfg.seq_len,
        "n_classes": cfg.n_classes,
        "top_k": cfg.top_k,
        "sigma_scope": cfg.sigma_scope,
        "temperatures": model.temperatures(),
        "sigma_q": [[float(s) for s in a.sigma_q] for a in model.attentions],
        "sigma_k": [[float(s) for s in a.sigma_k] for a in model.attentions],
        "model": cfg.to_dict(),
    }


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def _spec(task: str, top_k: int | None, epochs: int | None,
          overrides: Mapping[str, Any] | None) -> TaskSpec:
    extra = dict(overrides or {})
    if epochs is not None:
        extra["phases"] = Phases.uniform(epochs)
    try:
        return task_spec(task, top_k, **extra)
    except (TypeError, ValueError) as e:
        raise HadwareError(f"task {task!r}: {e}") from None


def _train_teacher(spec: TaskSpec, data: Any, seed: int, progress: bool,
                   max_steps: int | None) -> tuple[Encoder, PhaseResult]:
    torch.manual_seed(seed)
    teacher = Encoder(spec.model)
    gen = torch.Generator().manual_seed(seed)
    res = train_teacher(teacher, data, epochs=spec.phases.teacher, lr=spec.lr_teacher,
                        weight_decay=spec.weight_decay, gen=gen, progress=progress,
                        max_steps=max_steps)
    return teacher, res


def _train_student(spec: TaskSpec, data: Any, teacher: Encoder, seed: int, progress: bool,
                   max_steps: int | None) -> tuple[Encoder, Encoder, list[PhaseResult]]:
    """HAD distillation and ternary fine-tuning; returns (HAD float-MLP copy, final, phases)."""
    torch.manual_seed(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    student = make_student(teacher, data)
    for a in student.attentions:
        a.top_k = spec.model.top_k
    student.config = dataclasses.replace(student.config, top_k=spec.model.top_k)
    p = spec.phases
    phases = distill_had(student, teacher, data,
                         stage_epochs=(p.stage1, p.stage2, p.stage3, p.stage4),
                         lr=spec.lr_student, weight_decay=spec.weight_decay,
                         attn_kl_weight=spec.attn_kl_weight, gen=gen, progress=progress,
                         max_steps=max_steps)
    had_float = Encoder.from_checkpoint(student.checkpoint())
    had_float.set_binarize(("sign",))
    phases.append(finetune_ternary(student, teacher, data, epochs=p.ternary,
                                   lr=spec.lr_ternary, weight_decay=spec.weight_decay, gen=gen,
                                   progress=progress, max_steps=max_steps))
    return had_float, student, phases


def _finish(out: Path, spec: TaskSpec, seed: int, teacher: Encoder, had_float: Encoder,
            student: Encoder, phases: list[PhaseResult], wall: float, teacher_acc: float,
            data: Any) -> dict[str, Any]:
    x, y = data.test_x, data.test_y
    student_acc = evaluate(had_float, x, y)
    ternary_acc = evaluate(student, x, y)  # V int8 as deployed, as trained
    student.set_v_int8(False)
    ternary_float_v_acc = evaluate(student, x, y)
    student.set_v_int8(True)
    metrics = {
        "task": spec.name,
        "seed": seed,
        "top_k": spec.model.top_k,
        "teacher_accuracy": teacher_acc,
        "student_accuracy": student_acc,
        "student_ternary_accuracy": ternary_acc,
        "student_ternary_int8_v_accuracy": ternary_acc,
        "student_ternary_float_v_accuracy": ternary_float_v_acc,
        "value_quantization": VALUE_QUANTIZATION,
        "drop_points": round(100.0 * (teacher_acc - ternary_acc), 4),
        "n_test": len(y),
        "wall_time_s": round(wall, 3),
        "config": _model_summary(student),
        "phases": [r.to_dict() for r in phases],
        "epochs": {k: getattr(spec.phases, k) for k in spec.phases.__dataclass_fields__},
        "batch_size": spec.batch_size,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    _save_model(out / "teacher.pt", teacher)
    _save_model(out / "student_had.pt", had_float)
    _save_model(out / "student.pt", student, temperatures=student.temperatures())
    _write_json(out / "metrics.json", metrics)
    return metrics


def _validate(task: Any, out_dir: Any, top_k: Any, seed: Any, epochs: Any,
              threads: Any = None, max_steps: Any = None) -> None:
    _check_choice("TASK", task, TASKS)
    _check_int("--top-k", top_k, 1, optional=True)
    _check_int("--seed", seed, 0)
    _check_int("--epochs", epochs, 1, optional=True)
    _check_int("--threads", threads, 1, optional=True)
    _check_int("max_steps", max_steps, 1, optional=True)


def train(task: str, out_dir: str | os.PathLike, top_k: int | None = None, seed: int = 0,
          epochs: int | None = None, progress: bool = True, *, threads: int | None = 1,
          max_steps: int | None = None,
          overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train the teacher, distill the HAD student, fine-tune its MLPs to ternary; write
    ``metrics.json`` and the checkpoints into ``out_dir`` (created with its parents).

    Parameters
    ----------
    task : ``"digits"`` or ``"recall"``.
    top_k : HAD keys kept per query row; ``None`` takes the task's default.
    seed : fixes initialization, batch order, augmentation and generated training data.
    epochs : when given, every phase (teacher, four stages, ternary) runs this many epochs.
    progress : show tqdm progress bars.
    threads : torch CPU threads during the run (restored afterwards); ``None`` leaves the
        current setting. The models are small enough that one thread is about as fast as two,
        and one thread does not stall when other jobs load the machine (two OpenMP threads
        competing for busy cores can run many times slower).
    max_steps : cap on optimizer steps per phase (smoke tests).
    overrides : task-spec overrides (see :func:`hadware.sw.tasks.task_spec`).

    Returns the metrics dictionary written to ``metrics.json``.

    Raises :class:`HadwareError` naming the option for an unknown task, ``top_k < 1``, a bad
    seed/epochs/threads value, or an output folder that cannot be created or written.
    """
    _validate(task, out_dir, top_k, seed, epochs, threads, max_steps)
    spec = _spec(task, top_k, epochs, overrides)  # before --out is created: top_k <= keys
    out = _check_out_dir("--out", out_dir)
    with _threads(threads):
        start = time.perf_counter()
        data = make_data(spec)
        teacher, t_res = _train_teacher(spec, data, seed, progress, max_steps)
        had_float, student, phases = _train_student(spec, data, teacher, seed, progress,
                                                    max_steps)
        wall = time.perf_counter() - start
        metrics = _finish(out, spec, seed, teacher, had_float, student, [t_res, *phases], wall,
                          t_res.test_accuracy, data)
    log.info("%s: teacher %.4f, HAD student %.4f, HAD + ternary %.4f, %.1f s", task,
             metrics["teacher_accuracy"], metrics["student_accuracy"],
             metrics["student_ternary_accuracy"], wall)
    return metrics


def sweep_recall(out_dir: str | os.PathLike, top_ks: Sequence[int] = SWEEP_TOP_KS,
                 seed: int = 0, *, epochs: int | None = None, progress: bool = True,
                 threads: int | None = 1, max_steps: int | None = None,
                 overrides: Mapping[str, Any] | None = None, jobs: int = 1,
                 scheduler: str | None = None) -> dict[str, Any]:
    """Sweep the HAD top-k on the ``recall`` task: a grid of the exploration engine
    (:mod:`hadware.synth.explore`) over ``top_k`` with the figure ``accuracy`` (the target
    :mod:`hadware.sw.explore`), cached and resumable in ``out_dir`` (``cache/``,
    ``results.jsonl``, ``results.csv``), its points on ``jobs`` local processes or the Dask
    cluster at ``scheduler``.

    One teacher is trained and shared (``out_dir/teacher.pt``); for each ``k`` a student is
    distilled and fine-tuned into ``out_dir/k<k>/`` (full run outputs, as :func:`train`; there
    ``wall_time_s`` counts the student phases only, the teacher's time is ``teacher_time_s`` of
    the sweep; both are links into the engine's ``points/`` folder).
    Writes ``sweep.json`` (machine-readable), ``sweep.md`` (a table) and ``sweep.png``
    (accuracy against top-k) into ``out_dir`` and returns the JSON content. Each row also
    carries ``vote_reference``, the accuracy of a plurality vote over the first ``k`` copies
    of the queried key: what an ideal reader limited to ``k`` keys would reach.
    """
    from hadware.synth.explore import parse_grid, run_points

    if isinstance(top_ks, int) or not top_ks:
        raise HadwareError(f"top_ks must be a non-empty list of integers, not {top_ks!r}")
    for k in top_ks:
        _check_int("--top-k", k, 1)
    _validate("recall", out_dir, None, seed, epochs, threads, max_steps)
    out = _check_out_dir("--out", out_dir)
    start = time.perf_counter()
    base = {"seed": seed, "epochs": epochs, "max_steps": max_steps, "threads": threads,
            "overrides": dict(overrides or {})}
    points = parse_grid({"block": "recall", "base": base, "grid": {"top_k": list(top_ks)},
                         "figures": ["accuracy"]}, "train-sweep")
    for p in points:
        if p.error:
            raise HadwareError(p.error)
    summary = run_points(points, out, jobs=jobs, scheduler=scheduler, progress=progress)
    failed = [r for r in summary["rows"] if r["status"] != "ok"]
    if failed:
        raise HadwareError(f"train-sweep: {failed[0]['label']} failed: {failed[0]['error']} "
                           f"(see {out / 'results.jsonl'})")
    rows = []
    for p, r in zip(points, summary["rows"], strict=True):
        v = r["values"]
        rows.append({key: v[key] for key in (
            "top_k", "teacher_accuracy", "student_accuracy", "student_ternary_accuracy",
            "student_ternary_int8_v_accuracy", "wall_time_s", "vote_reference")})
        _link(out / f"k{v['top_k']}", Path("points") / p.folder_name)
        log.info("recall top_k=%d: HAD %.4f, HAD + ternary %.4f", v["top_k"],
                 v["student_accuracy"], v["student_ternary_accuracy"])
    first = summary["rows"][0]["values"]
    _link(out / "teacher.pt", Path(first["teacher_dir"]).relative_to(out.resolve()) / "teacher.pt")
    result = {
        "task": "recall",
        "seed": seed,
        "seq_len": first["seq_len"],
        "n_test": first["n_test"],
        "teacher_accuracy": first["teacher_accuracy"],
        "vote_reference_all_copies": first["vote_reference_all_copies"],
        "repeats": first["repeats"],
        "teacher_time_s": first["teacher_time_s"],
        "wall_time_s": round(time.perf_counter() - start, 3),
        "computed": summary["computed"],
        "rows": rows,
    }
    _write_json(out / "sweep.json", result)
    _write_sweep_table(out / "sweep.md", result)
    _plot_sweep(out / "sweep.png", result)
    return result


def _link(path: Path, target: Path) -> None:
    """``path`` made (atomically) a relative symbolic link to ``target``."""
    tmp = path.with_name(f".{path.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, path)


def _write_sweep_table(path: Path, result: Mapping[str, Any]) -> None:
    lines = [
        f"# HAD top-k sweep on recall (seq_len {result['seq_len']}, seed {result['seed']}, "
        f"{result['n_test']} test sequences)",
        "",
        f"Teacher (softmax attention, float MLP): {100 * result['teacher_accuracy']:.2f} %. "
        f"Each queried key has {result['repeats']} noisy copies; a plurality vote over all of "
        f"them scores {100 * result['vote_reference_all_copies']:.2f} %, over the first k "
        f"copies the 'vote@k' column.",
        "",
        "| top_k | HAD, float MLP (%) | HAD, ternary MLP (%) | + int8 V (%) | vote@k (%) "
        "| time (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['top_k']} | {100 * r['student_accuracy']:.2f} | "
                     f"{100 * r['student_ternary_accuracy']:.2f} | "
                     f"{100 * r['student_ternary_int8_v_accuracy']:.2f} | "
                     f"{100 * r['vote_reference']:.2f} | {r['wall_time_s']:.1f} |")
    _write_text(path, "\n".join(lines) + "\n")


def _plot_sweep(path: Path, result: Mapping[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["top_k"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.axhline(100 * result["teacher_accuracy"], color="gray", ls="--", label="teacher")
    ax.plot(ks, [100 * r["student_accuracy"] for r in result["rows"]], "o-",
            label="HAD, float MLP")
    ax.plot(ks, [100 * r["student_ternary_accuracy"] for r in result["rows"]], "s-",
            label="HAD, ternary MLP")
    ax.plot(ks, [100 * r["vote_reference"] for r in result["rows"]], "x:", color="black",
            label="vote over k copies")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("top_k (keys kept per query)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"recall, {result['seq_len']} tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` command's arguments to ``parser``."""
    parser.add_argument("task", metavar="TASK", choices=TASKS,
                        help=f"built-in task: {', '.join(TASKS)}")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="output folder (created with its parents)")
    parser.add_argument("--top-k", metavar="K", type=int, default=None,
                        help="HAD keys kept per query row (default: the task's)")
    parser.add_argument("--seed", metavar="S", type=int, default=0, help="random seed (0)")
    parser.add_argument("--epochs", metavar="N", type=int, default=None,
                        help="run every training phase for N epochs (default: per task)")
    parser.add_argument("--threads", metavar="N", type=int, default=1,
                        help="torch CPU threads (default: 1)")


def run(args: argparse.Namespace) -> int:
    """Run :func:`train` from parsed arguments; returns the exit status (0 on success).
    Bad option values raise :class:`HadwareError`."""
    metrics = train(args.task, args.out, top_k=args.top_k, seed=args.seed, epochs=args.epochs,
                    progress=True, threads=args.threads)
    print(f"{args.task}: teacher {100 * metrics['teacher_accuracy']:.2f} %, "
          f"HAD {100 * metrics['student_accuracy']:.2f} %, "
          f"HAD + ternary {100 * metrics['student_ternary_accuracy']:.2f} % "
          f"({metrics['wall_time_s']:.0f} s) -> {Path(args.out) / 'metrics.json'}")
    return 0
