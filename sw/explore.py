"""The ``recall`` target of the exploration engine (:mod:`hadware.synth.explore`): the trained
accuracy of the HAD student at a given ``top_k``, the figure ``accuracy``.

A point's configuration: ``top_k`` (default 16, the task's), ``seed`` (0), ``epochs`` (None:
the task's schedule), ``max_steps`` (None), ``threads`` (1, torch CPU threads) and
``overrides`` (task-spec overrides, :func:`hadware.sw.tasks.task_spec`). Points that differ only
in ``top_k`` share one teacher, trained once (``prepare``, in the driver) into
``<work>/recall-teacher-<hash>/``; a worker that does not find it trains the same teacher
itself (training is reproducible for a seed and thread count). Each point distils and
fine-tunes its student into its own folder (the outputs of :func:`hadware.sw.train.train`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from hadware.errors import HadwareError
from hadware.sw.distill import PhaseResult
from hadware.sw.models import Encoder
from hadware.sw.tasks import make_data
from hadware.sw.train import (
    VALUE_QUANTIZATION,
    _check_int,
    _finish,
    _save_model,
    _spec,
    _threads,
    _train_student,
    _train_teacher,
    _write_json,
)

__all__ = ["RECALL", "RecallTarget"]

_DEFAULTS = {"top_k": 16, "seed": 0, "epochs": None, "max_steps": None, "threads": 1,
             "overrides": {}}


def _hash(data: dict[str, Any]) -> str:
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


class RecallTarget:
    """The recall task as an exploration target (see the module docstring)."""

    name = "recall"
    figures = ("accuracy",)

    def defaults(self) -> dict[str, Any]:
        return dict(_DEFAULTS)

    def config(self, data: dict[str, Any], source: str) -> dict[str, Any]:
        unknown = sorted(set(data) - set(_DEFAULTS))
        if unknown:
            raise HadwareError(f"{source}: unknown field {unknown[0]!r} of the recall target "
                               f"(fields: {', '.join(_DEFAULTS)})")
        cfg = {**_DEFAULTS, **data}
        _check_int("top_k", cfg["top_k"], 1)
        _check_int("seed", cfg["seed"], 0)
        _check_int("epochs", cfg["epochs"], 1, optional=True)
        _check_int("max_steps", cfg["max_steps"], 1, optional=True)
        _check_int("threads", cfg["threads"], 1, optional=True)
        if not isinstance(cfg["overrides"], dict):
            raise HadwareError(f"overrides must be an object of task-spec fields, "
                               f"not {cfg['overrides']!r}")
        _spec("recall", cfg["top_k"], cfg["epochs"], cfg["overrides"])  # (checks them)
        return cfg

    def config_hash(self, cfg: dict[str, Any]) -> str:
        # The training rules are part of a point: a student trained with another value
        # quantization is another result.
        return _hash({"target": "recall", "value_quantization": VALUE_QUANTIZATION, **cfg})

    @staticmethod
    def _teacher_dir(cfg: dict[str, Any], work: Path) -> Path:
        return work / f"recall-teacher-{_hash({k: v for k, v in cfg.items() if k != 'top_k'})}"

    def _teacher(self, cfg: dict[str, Any], work: Path) -> tuple[Encoder, PhaseResult, float]:
        folder = self._teacher_dir(cfg, work)
        meta = folder / "teacher.json"
        if meta.is_file():
            m = json.loads(meta.read_text())
            teacher = Encoder.from_checkpoint(torch.load(folder / "teacher.pt"))
            return teacher, PhaseResult(**m["phase"]), m["teacher_time_s"]
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with _threads(cfg["threads"]):
            base = _spec("recall", None, cfg["epochs"], cfg["overrides"])
            teacher, res = _train_teacher(base, make_data(base), cfg["seed"], False,
                                          cfg["max_steps"])
        wall = round(time.perf_counter() - t0, 3)
        _save_model(folder / "teacher.pt", teacher)
        _write_json(meta, {"phase": res.to_dict(), "teacher_time_s": wall})
        return teacher, res, wall

    def prepare(self, configs: list[dict[str, Any]], work: Path, options: dict[str, Any]
                ) -> None:
        """Train each distinct teacher once, before the points run."""
        for cfg in configs:
            self._teacher(cfg, Path(work))

    def run(self, cfg: dict[str, Any], figures: list[str], folder: str,
            options: dict[str, Any]) -> dict[str, Any]:
        folder_p = Path(folder)
        teacher, t_res, teacher_time = self._teacher(cfg, folder_p.parent)
        folder_p.mkdir(parents=True, exist_ok=True)
        with _threads(cfg["threads"]):
            base = _spec("recall", None, cfg["epochs"], cfg["overrides"])
            data = make_data(base)
            spec = _spec("recall", cfg["top_k"], cfg["epochs"], cfg["overrides"])
            t0 = time.perf_counter()
            had_float, student, phases = _train_student(spec, data, teacher, cfg["seed"],
                                                        False, cfg["max_steps"])
            wall = time.perf_counter() - t0
            m = _finish(folder_p, spec, cfg["seed"], teacher, had_float, student,
                        [t_res, *phases], wall, t_res.test_accuracy, data)
        row = {key: m[key] for key in (
            "top_k", "teacher_accuracy", "student_accuracy", "student_ternary_accuracy",
            "student_ternary_int8_v_accuracy", "wall_time_s")}
        row["vote_reference"] = data.vote_accuracy(data.test_x, data.test_y, first=cfg["top_k"])
        row.update(seq_len=base.model.seq_len, n_test=len(data.test_y), repeats=data.repeats,
                   vote_reference_all_copies=data.vote_accuracy(data.test_x, data.test_y),
                   teacher_time_s=teacher_time,
                   teacher_dir=str(self._teacher_dir(cfg, folder_p.parent)))
        return row


RECALL = RecallTarget()
