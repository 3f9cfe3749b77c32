"""Teacher training, HAD distillation and ternary quantization-aware fine-tuning.

Pipeline (see :func:`hadware.sw.train.train`):

1. :func:`train_teacher`: the full-precision model (softmax attention, float GLU MLPs) with
   cross-entropy.
2. :func:`distill_had`: the student starts as a copy of the teacher; :func:`calibrate_sigma`
   freezes sigma_Q and sigma_K; every head becomes a HAD head and four stages follow
   (:data:`STAGES`). The loss is ``KL(teacher || student)`` on the class outputs plus
   ``attn_kl_weight`` times the attention-map KL (stages 1-3), with the teacher run on the
   same batch.
3. :func:`finetune_ternary`: the MLPs switch to BitLinear; the loss is the output KL to the
   teacher plus the task cross-entropy.

Each phase uses AdamW with a short linear warm-up and a cosine decay to a tenth of the rate.
Randomness comes only from the ``torch.Generator`` passed in (batch order, augmentation,
generated data); dropout, when enabled, draws from the global torch generator.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hadware.sw.models import Encoder, calibrate_sigma

__all__ = [
    "STAGES",
    "PhaseResult",
    "Stage",
    "TrainData",
    "attention_kl",
    "distill_had",
    "evaluate",
    "finetune_ternary",
    "output_kl",
    "train_teacher",
]

#: Batches used to estimate sigma_Q and sigma_K.
CALIBRATION_BATCHES = 100
#: Floor of the student probabilities inside the attention KL (dropped entries are 0).
ATTN_EPS = 1e-6


class TrainData(Protocol):
    """What the training loops need from a task's data (see :mod:`hadware.sw.tasks`)."""

    steps_per_epoch: int
    test_x: torch.Tensor
    test_y: torch.Tensor

    def train_epoch(self, gen: torch.Generator,
                    augment: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def calibration_batches(self, n: int) -> Iterator[torch.Tensor]: ...


@dataclasses.dataclass(frozen=True)
class Stage:
    """One HAD distillation stage.

    ``binarize`` is ``"soft"`` (tanh, ``c`` decaying geometrically from ``c_start`` to
    ``c_end`` over the stage; ``scaled`` selects ``c * tanh(x / c)``) or ``"sign"`` (sign with
    the clipped straight-through estimator). ``attn_kl`` enables the attention-map loss.
    """

    name: str
    binarize: str
    attn_kl: bool
    c_start: float = 1.0
    c_end: float = 1.0
    scaled: bool = False

    def mode(self, frac: float) -> tuple:
        """The :class:`HadAttention` binarization mode at fraction ``frac`` of the stage."""
        if self.binarize == "sign":
            return ("sign",)
        c = self.c_start * (self.c_end / self.c_start) ** min(max(frac, 0.0), 1.0)
        return ("soft", c, self.scaled)


STAGES = (
    Stage("stage1", "soft", True, 5.0, 1.0, scaled=True),
    Stage("stage2", "soft", True, 1.0, 0.05, scaled=False),
    Stage("stage3", "sign", True),
    Stage("stage4", "sign", False),
)


@dataclasses.dataclass
class PhaseResult:
    """Summary of one training phase.

    ``final_loss`` is an exponential moving average (0.9) of the training loss at the end;
    ``test_accuracy`` is measured after the phase, HAD heads in sign mode; for the soft stages
    ``soft_accuracy`` is the accuracy in the stage's final soft mode.
    """

    name: str
    epochs: int
    steps: int
    final_loss: float
    test_accuracy: float
    seconds: float
    soft_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Losses and evaluation
# --------------------------------------------------------------------------------------------


def output_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))``, summed over classes, mean over the batch."""
    return F.kl_div(F.log_softmax(student_logits, dim=-1), F.log_softmax(teacher_logits, dim=-1),
                    log_target=True, reduction="batchmean")


def attention_kl(student_probs: list[torch.Tensor],
                 teacher_probs: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers, heads and query rows of ``KL(teacher row || student row)``.

    Student probabilities are floored at :data:`ATTN_EPS` inside the logarithm, since the
    top-k sets most of them to exactly zero; the teacher mass on dropped keys then adds a
    constant and the gradient acts on the kept entries.
    """
    total = student_probs[0].new_zeros(())
    for ps, pt in zip(student_probs, teacher_probs, strict=True):
        pt = pt.detach()
        kl = torch.xlogy(pt, pt) - pt * torch.log(ps.clamp_min(ATTN_EPS))
        total = total + kl.sum(dim=-1).mean()
    return total / len(student_probs)


@torch.no_grad()
def evaluate(model: Encoder, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Classification accuracy (a fraction in [0, 1]) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        logits, _ = model(x[i: i + batch_size])
        correct += int((logits.argmax(dim=-1) == y[i: i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(y), 1)


# --------------------------------------------------------------------------------------------
# The generic loop
# --------------------------------------------------------------------------------------------


def _lr_factor(step: int, total: int) -> float:
    warm = max(1, min(20, total // 10))
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t))


def _run_phase(
    name: str,
    model: Encoder,
    data: TrainData,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    gen: torch.Generator,
    progress: bool,
    max_steps: int | None = None,
    on_step: Callable[[float], None] | None = None,
) -> PhaseResult:
    """Train ``model`` on ``loss_fn(x, y)`` for ``epochs`` epochs (at most ``max_steps``
    optimizer steps), then score it on the test set."""
    start = time.perf_counter()
    total = epochs * data.steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total))
    model.train()
    step = 0
    loss_ema = float("nan")
    bar = tqdm(total=total, desc=name, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for _ in range(epochs):
            for x, y in data.train_epoch(gen):
                if step >= total:
                    break
                if on_step is not None:
                    on_step(step / max(1, total - 1))
                loss = loss_fn(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                value = float(loss.detach())
                loss_ema = value if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * value
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.4f}", refresh=False)
            if step >= total:
                break
    finally:
        bar.close()
    acc = evaluate(model, data.test_x, data.test_y)
    return PhaseResult(name, epochs, step, loss_ema, acc, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def train_teacher(model: Encoder, data: TrainData, *, epochs: int, lr: float,
                  weight_decay: float, gen: torch.Generator, progress: bool = True,
                  max_steps: int | None = None) -> PhaseResult:
    """Train the full-precision teacher with cross-entropy; returns the phase summary."""
    model.set_attention("softmax")
    model.set_mlp("float")

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x)[0], y)

    return _run_phase("teacher", model, data, loss_fn, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, gen=gen, progress=progress,
                      max_steps=max_steps)


def make_student(teacher: Encoder, data: TrainData,
                 n_batches: int = CALIBRATION_BATCHES) -> Encoder:
    """A copy of ``teacher`` with sigma_Q/sigma_K calibrated and frozen and every head HAD."""
    student = copy.deepcopy(teacher)
    student.requires_grad_(True)
    calibrate_sigma(student, data.calibration_batches(n_batches), n_batches)
    student.set_attention("had")
    return student


def distill_had(student: Encoder, teacher: Encoder, data: TrainData, *,
                stage_epochs: tuple[int, int, int, int], lr: float, weight_decay: float,
                attn_kl_weight: float, gen: torch.Generator, progress: bool = True,
                max_steps: int | None = None) -> list[PhaseResult]:
    """Run the four HAD stages of :data:`STAGES` on ``student`` (calibrated, all heads HAD).

    The teacher runs in eval mode under ``no_grad`` and is not changed. After the call the
    student is in ``("sign",)`` mode, as the hardware computes. Returns one summary per stage.
    """
    teacher.eval()
    results = []
    for stage, epochs in zip(STAGES, stage_epochs, strict=True):

        def loss_fn(x: torch.Tensor, y: torch.Tensor, stage: Stage = stage) -> torch.Tensor:
            with torch.no_grad():
                t_logits, t_probs = teacher(x)
            s_logits, s_probs = student(x)
            loss = output_kl(s_logits, t_logits)
            if stage.attn_kl and attn_kl_weight > 0:
                loss = loss + attn_kl_weight * attention_kl(s_probs, t_probs)
            return loss

        def on_step(frac: float, stage: Stage = stage) -> None:
            student.set_binarize(stage.mode(frac))

        student.set_binarize(stage.mode(0.0))
        res = _run_phase(stage.name, student, data, loss_fn, epochs=epochs, lr=lr,
                         weight_decay=weight_decay, gen=gen, progress=progress,
                         max_steps=max_steps, on_step=on_step)
        if stage.binarize == "soft":
            # Score every stage as the hardware computes (sign); keep the soft score too.
            res.soft_accuracy = res.test_accuracy
            student.set_binarize(("sign",))
            res.test_accuracy = evaluate(student, data.test_x, data.test_y)
        results.append(res)
    student.set_binarize(("sign",))
    return results


def finetune_ternary(student: Encoder, teacher: Encoder, data: TrainData, *, epochs: int,
                     lr: float, weight_decay: float, gen: torch.Generator,
                     progress: bool = True, max_steps: int | None = None) -> PhaseResult:
    """Switch the student's MLPs to ternary BitLinear and fine-tune with the straight-through
    estimator on ``KL(teacher || student) + cross-entropy``; attention stays HAD (sign)."""
    teacher.eval()
    student.set_mlp("ternary")
    student.set_binarize(("sign",))

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits, _ = teacher(x)
        s_logits, _ = student(x)
        return output_kl(s_logits, t_logits) + F.cross_entropy(s_logits, y)

    return _run_phase("ternary", student, data, loss_fn, epochs=epochs, lr=lr,
                      weight_decay=weight_decay, gen=gen, progress=progress,
                      max_steps=max_steps)
