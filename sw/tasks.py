"""The built-in training tasks; nothing is downloaded.

``digits``
    scikit-learn's 8x8 handwritten digits (1797 images, 10 classes). A fixed stratified split
    (seed :data:`SPLIT_SEED`, 20 % test) independent of the training seed, so runs with other
    seeds are scored on the same test images. Each image becomes 16 tokens of 2x2 pixels.
    Training batches are shifted by up to one pixel (zero fill) as augmentation.

``recall``
    Synthetic associative recall over 256 tokens. Each token has two fields: a symbol (a key
    or a filler) and a value slot. ``n_pairs`` positions carry a key-value pair (distinct keys,
    random values), the other positions carry random filler symbols with an empty value slot,
    and the last token carries the query key with a query marker. The label is the value of
    the pair whose key equals the query. A model answers by attending from the last token to
    one key among 255, which is exactly what the HAD top-k must keep. Training batches are
    drawn fresh every step from the run's generator; the test set is fixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hadware.sw.models import ModelConfig

__all__ = ["TASKS", "DigitsData", "Phases", "RecallData", "TaskSpec", "make_data", "task_spec"]

#: Seed of the digits train/test split (fixed, independent of the training seed).
SPLIT_SEED = 0
#: Seed of the recall test set (fixed).
RECALL_TEST_SEED = 1_000_003

TASKS = ("digits", "recall")


@dataclasses.dataclass(frozen=True)
class Phases:
    """Epochs of each training phase (teacher, the four HAD stages, ternary fine-tuning)."""

    teacher: int
    stage1: int
    stage2: int
    stage3: int
    stage4: int
    ternary: int

    @classmethod
    def uniform(cls, n: int) -> Phases:
        return cls(*(n,) * 6)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything a training run of a task needs besides the seed.

    ``steps_per_epoch`` is ``None`` for a data set read once per epoch (digits) and a step
    count for generated data (recall).
    """

    name: str
    model: ModelConfig
    phases: Phases
    batch_size: int
    lr_teacher: float
    lr_student: float
    lr_ternary: float
    attn_kl_weight: float
    weight_decay: float = 0.05
    steps_per_epoch: int | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def task_spec(name: str, top_k: int | None = None, **overrides: Any) -> TaskSpec:
    """The spec of task ``name`` with the HAD ``top_k`` (``None``: the task's default).

    ``overrides`` replace fields of the spec; keys ``model.<field>`` replace model fields and
    ``data.<key>`` data parameters (used by the tests to shrink a task).
    """
    if name == "digits":
        spec = TaskSpec(
            name="digits",
            model=ModelConfig(input_kind="patches", input_dim=4, seq_len=16, n_classes=10,
                              d_model=64, n_heads=2, n_layers=2, mlp_hidden=128,
                              pool="mean", top_k=8),
            phases=Phases(teacher=60, stage1=8, stage2=8, stage3=12, stage4=8, ternary=24),
            batch_size=64, lr_teacher=2e-3, lr_student=5e-4, lr_ternary=1e-3,
            attn_kl_weight=1.0,
            data={"patch": 2, "shift": 1},
        )
    elif name == "recall":
        spec = TaskSpec(
            name="recall",
            model=ModelConfig(input_kind="tokens", vocab_sizes=(64, 10), seq_len=256,
                              n_classes=8, d_model=64, n_heads=2, n_layers=1,
                              mlp_hidden=128, pool="last", top_k=16),
            phases=Phases(teacher=6, stage1=1, stage2=1, stage3=2, stage4=1, ternary=1),
            batch_size=32, lr_teacher=2e-3, lr_student=5e-4, lr_ternary=5e-4,
            attn_kl_weight=1.0, steps_per_epoch=50,
            data={"n_keys": 32, "n_values": 8, "n_fillers": 32, "n_pairs": 4,
                  "repeats": 12, "noise": 0.5, "n_test": 1024},
        )
    else:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, not {name!r}")
    model_over = {k[6:]: v for k, v in overrides.items() if k.startswith("model.")}
    data_over = {k[5:]: v for k, v in overrides.items() if k.startswith("data.")}
    plain = {k: v for k, v in overrides.items() if "." not in k}
    if top_k is not None:
        model_over["top_k"] = top_k
    model = dataclasses.replace(spec.model, **model_over)
    return dataclasses.replace(spec, model=model, data={**spec.data, **data_over}, **plain)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class DigitsData:
    """The digits task data: fixed split, 2x2 patches, normalized with train statistics."""

    def __init__(self, spec: TaskSpec) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        self.batch_size = spec.batch_size
        self.patch = int(spec.data.get("patch", 2))
        self.shift = int(spec.data.get("shift", 1))
        digits = load_digits()
        images = digits.images.astype(np.float32) / 16.0
        x_tr, x_te, y_tr, y_te = train_test_split(
            images, digits.target, test_size=0.2, stratify=digits.target,
            random_state=SPLIT_SEED)
        n_train = spec.data.get("n_train")
        if n_train is not None:
            x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
        self.mean = float(x_tr.mean())
        self.std = float(x_tr.std())
        self.train_images = torch.from_numpy(x_tr)
        self.train_y = torch.from_numpy(y_tr).long()
        self.test_x = self.to_patches(torch.from_numpy(x_te))
        self.test_y = torch.from_numpy(y_te).long()
        self.steps_per_epoch = -(-len(self.train_y) // self.batch_size)

    def to_patches(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 8, 8)`` images -> ``(N, 16, 4)`` normalized 2x2 patches in raster order."""
        p = self.patch
        n, h, w = images.shape
        x = (images - self.mean) / self.std
        x = x.view(n, h // p, p, w // p, p).permute(0, 1, 3, 2, 4)
        return x.reshape(n, (h // p) * (w // p), p * p)

    def _shift(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        s = self.shift
        if s == 0:
            return images
        n, h, w = images.shape
        padded = torch.nn.functional.pad(images, (s, s, s, s))
        dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
        rows = (dy.view(n, 1) + torch.arange(h)).view(n, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, w)
        return padded[torch.arange(n).view(n, 1, 1), rows, cols]

    def train_epoch(self, gen: torch.Generator,
                    augment: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass over the training set (the last batch may be smaller)."""
        order = torch.randperm(len(self.train_y), generator=gen)
        for i in range(0, len(order), self.batch_size):
            idx = order[i: i + self.batch_size]
            images = self.train_images[idx]
            if augment:
                images = self._shift(images, gen)
            yield self.to_patches(images), self.train_y[idx]

    def calibration_batches(self, n: int) -> Iterator[torch.Tensor]:
        """``n`` batches of un-augmented training inputs (cycling through the set)."""
        x = self.to_patches(self.train_images)
        count = 0
        while count < n:
            for i in range(0, len(x), self.batch_size):
                if count >= n:
                    return
                yield x[i: i + self.batch_size]
                count += 1


class RecallData:
    """Associative recall sequences with repeated, noisy pairs.

    Field 0 (symbol): keys ``0 .. n_keys-1``, fillers ``n_keys .. n_keys+n_fillers-1``.
    Field 1 (value slot): values ``0 .. n_values-1``, ``n_values`` = empty, ``n_values+1`` =
    query marker.

    Each sequence holds ``n_pairs`` distinct keys, each with a true value and written
    ``repeats`` times at random positions; each copy shows the true value with probability
    ``1 - noise`` and otherwise a uniformly drawn different value. The last token asks for one
    of the keys; the label is its true value. The best answer is the most frequent value among
    the copies, so a model must attend to (nearly) all ``repeats`` copies: the HAD ``top_k``
    below ``repeats`` drops votes, a ``top_k`` far above it admits fillers.
    """

    def __init__(self, spec: TaskSpec) -> None:
        d = spec.data
        self.seq_len = spec.model.seq_len
        self.batch_size = spec.batch_size
        self.n_keys = int(d["n_keys"])
        self.n_values = int(d["n_values"])
        self.n_fillers = int(d["n_fillers"])
        self.n_pairs = int(d["n_pairs"])
        self.repeats = int(d.get("repeats", 1))
        self.noise = float(d.get("noise", 0.0))
        self.steps_per_epoch = int(spec.steps_per_epoch or 1)
        if spec.model.vocab_sizes != (self.n_keys + self.n_fillers, self.n_values + 2):
            raise ValueError("recall: model.vocab_sizes must be (n_keys + n_fillers, "
                             f"n_values + 2), not {spec.model.vocab_sizes}")
        if spec.model.n_classes != self.n_values:
            raise ValueError("recall: model.n_classes must equal n_values")
        if not 1 <= self.n_pairs <= self.n_keys:
            raise ValueError(f"recall: n_pairs must be between 1 and n_keys, not {self.n_pairs}")
        if self.n_pairs * self.repeats > self.seq_len - 1:
            raise ValueError("recall: n_pairs * repeats must leave room for the query token")
        if not 0.0 <= self.noise < 1.0 or (self.noise > 0 and self.n_values < 2):
            raise ValueError(f"recall: noise must be in [0, 1), not {self.noise}")
        gen = torch.Generator().manual_seed(RECALL_TEST_SEED)
        self.test_x, self.test_y = self.sample(int(d.get("n_test", 1024)), gen)

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` sequences ``(n, seq_len, 2)`` (int64) and their labels ``(n,)``."""
        length, copies = self.seq_len, self.n_pairs * self.repeats
        sym = self.n_keys + torch.randint(0, self.n_fillers, (n, length), generator=gen)
        val = torch.full((n, length), self.n_values, dtype=torch.long)
        keys = torch.rand(n, self.n_keys, generator=gen).argsort(dim=1)[:, : self.n_pairs]
        truth = torch.randint(0, self.n_values, (n, self.n_pairs), generator=gen)
        pos = torch.rand(n, length - 1, generator=gen).argsort(dim=1)[:, :copies]
        copy_keys = keys.repeat(1, self.repeats)
        copy_vals = truth.repeat(1, self.repeats)
        if self.noise > 0:
            flip = torch.rand(n, copies, generator=gen) < self.noise
            other = torch.randint(1, self.n_values, (n, copies), generator=gen)
            copy_vals = torch.where(flip, (copy_vals + other) % self.n_values, copy_vals)
        sym.scatter_(1, pos, copy_keys)
        val.scatter_(1, pos, copy_vals)
        which = torch.randint(0, self.n_pairs, (n,), generator=gen)
        rows = torch.arange(n)
        sym[:, -1] = keys[rows, which]
        val[:, -1] = self.n_values + 1
        return torch.stack([sym, val], dim=-1), truth[rows, which]

    def vote_accuracy(self, x: torch.Tensor, y: torch.Tensor, first: int | None = None) -> float:
        """Accuracy of the plurality vote over the copies of the query key (the first
        ``first`` copies by position when given; ties go to the lower value): the reference
        a perfect reader of ``first`` copies reaches."""
        sym, val = x[..., 0], x[..., 1]
        match = sym[:, :-1] == sym[:, -1:]
        if first is not None:
            match &= torch.cumsum(match.to(torch.int64), dim=1) <= first
        votes = torch.zeros(len(y), self.n_values + 2, dtype=torch.int64)
        votes.scatter_add_(1, val[:, :-1], match.to(torch.int64))
        pred = votes[:, : self.n_values].argmax(dim=1)
        return float((pred == y).double().mean())

    def train_epoch(self, gen: torch.Generator,
                    augment: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``steps_per_epoch`` freshly drawn batches."""
        for _ in range(self.steps_per_epoch):
            yield self.sample(self.batch_size, gen)

    def calibration_batches(self, n: int) -> Iterator[torch.Tensor]:
        """``n`` batches from a fixed generator (the same for every run)."""
        gen = torch.Generator().manual_seed(RECALL_TEST_SEED + 1)
        for _ in range(n):
            yield self.sample(self.batch_size, gen)[0]


def make_data(spec: TaskSpec) -> DigitsData | RecallData:
    """The data object of ``spec``'s task."""
    return DigitsData(spec) if spec.name == "digits" else RecallData(spec)
