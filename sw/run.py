"""Run an exported model with its attention and MLP layers on the simulated hardware.

``hadware run DIR`` loads an export folder (:func:`hadware.sw.export.load_export`) and
classifies the test samples of its task. The host computes what the hardware blocks do not:
the embedding, the pre-norms, the Q/K/V and output projections, the residual additions, the
final norm, pooling and the classifier head, in float32 from ``host.npz``. Each layer's HAD
attention heads and its ternary MLP run on:

* the Verilator simulation of the generated RTL (default): one simulation per head and per
  MLP per layer, covering every sample (the attention testbench's ``batch`` test rewrites the
  context for each sample); or
* the bit-exact golden models (``--golden``).

Interface between host and blocks, per head: ``q_b = +1 where q >= 0 else -1`` (likewise
``k_b``; :func:`~hadware.sw.models.hw_sign`; the sign is that of ``Q / sigma_Q``, so sigma
needs no hardware), values quantized per sample and head to int8 with ``scale = max|v| / 127``
(:func:`~hadware.sw.models.quantize_values`, the fake quantization the student is trained
and evaluated with); the block's ``out`` (units of ``2**-out_frac_bits``) times ``scale`` is
the head output. The MLP takes the float pre-normed tokens (quantized to its input format by
its own vector interface) and returns float.

Every run also scores the student itself on the same samples: its PyTorch forward
(:func:`student_from_export`: the host parameters and the exported ternary MLP weights, V
fake-quantized as above), with its accuracy and how often each backend predicts what it
predicts (``student_pytorch_accuracy``, ``<backend>_student_agreement``,
``<backend>_student_max_logit_diff``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hadware.config.base import atomic_write_text, check_int, check_output_file
from hadware.errors import HadwareError
from hadware.sw.export import ExportedModel, load_export
from hadware.sw.models import Encoder, hw_sign, quantize_values

__all__ = ["BlockTrace", "GoldenBackend", "SimBackend", "forward", "run_exported",
           "student_from_export", "student_logits"]

log = logging.getLogger(__name__)


class GoldenBackend:
    """Attention and MLP blocks by their bit-exact golden models."""

    name = "golden"

    def attention(self, cfg, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        from hadware.golden.attention import run_vectors

        return np.stack([run_vectors(cfg, {"q": q[s], "k": k[s], "v": v[s]})["out"]
                         for s in range(q.shape[0])])

    def mlp(self, cfg, weights, x: np.ndarray) -> np.ndarray:
        from hadware.golden.mlp import run_vectors

        return run_vectors(cfg, weights, {"x": x})["y"]


class SimBackend:
    """Attention and MLP blocks by Verilator simulations of the generated RTL."""

    name = "verilator"

    def attention(self, cfg, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        from hadware.tb.runner import simulate

        r = simulate("attention", cfg, {"q": q, "k": k, "v": v}, testcase="batch", check=False)
        return r.outputs["out"]

    def mlp(self, cfg, weights, x: np.ndarray) -> np.ndarray:
        from hadware.tb.runner import simulate

        r = simulate("mlp", cfg, {"x": x.astype(np.float32)},
                     extras={"weights": weights.export()})
        return r.outputs["y"]


class BlockTrace:
    """Wraps a backend and keeps every block output in call order, labelled ``layer i head j``
    or ``layer i mlp``. Given the trace of a reference run of the same model and samples (the
    golden models), it compares each output with the reference's element by element as it goes
    and keeps the first mismatch (block, sample, element, both values)."""

    def __init__(self, inner: Any, reference: BlockTrace | None = None):
        self.inner = inner
        self.name = inner.name
        self.reference = reference
        self.outputs: list[tuple[str, np.ndarray]] = []
        self.first_mismatch: str | None = None
        self._layer, self._head = 0, 0

    def _keep(self, label: str, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out)
        i = len(self.outputs)
        self.outputs.append((label, out))
        if self.reference is not None and self.first_mismatch is None:
            ref_label, ref = self.reference.outputs[i]
            if ref_label != label or ref.shape != out.shape:
                self.first_mismatch = (f"{label}: the reference run has {ref_label} of shape "
                                       f"{ref.shape} here, not {out.shape}")
            else:
                bad = np.argwhere(out != ref)
                if bad.size:
                    at = tuple(int(v) for v in bad[0])
                    got, want = out[at].item(), ref[at].item()
                    self.first_mismatch = (f"{label}: sample {at[0]}, element {list(at[1:])}: "
                                           f"{self.name} {got!r}, {self.reference.name} "
                                           f"{want!r} ({len(bad)} elements differ)")
        return out

    def attention(self, cfg, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        label = f"layer {self._layer} head {self._head}"
        self._head += 1
        return self._keep(label, self.inner.attention(cfg, q, k, v))

    def mlp(self, cfg, weights, x: np.ndarray) -> np.ndarray:
        label = f"layer {self._layer} mlp"
        self._layer, self._head = self._layer + 1, 0
        return self._keep(label, self.inner.mlp(cfg, weights, x))


def _test_set(task: str, samples: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``samples`` test samples of ``task`` (all with None); ``samples`` must be
    between 1 and their number (a ``ValueError`` naming ``--samples``)."""
    from hadware.sw.tasks import make_data, task_spec

    data = make_data(task_spec(task))
    x, y = data.test_x, data.test_y
    if samples is not None:
        check_int("--samples", samples, lo=1, hi=len(y), what=f"an integer between 1 and "
                  f"{len(y)} (the test samples of task {task})")
        x, y = x[:samples], y[:samples]
    return x, y


def student_from_export(model: ExportedModel) -> Encoder:
    """The trained student rebuilt from an export, in eval mode: ``host.npz`` for everything
    but the MLPs, and for each MLP the exported ternary codes, betas and gains
    (:meth:`~hadware.sw.models.BitLinear.load_ternary`, nothing quantized again). Its
    PyTorch forward is the student's, values fake-quantized as the host quantizes them here.
    Raises :class:`HadwareError` when ``host.npz`` does not fit the model config."""
    enc = Encoder(model.model_config)
    state = {k: torch.from_numpy(v) for k, v in model.host.items()}
    missing, unexpected = enc.load_state_dict(state, strict=False)
    if unexpected or any(".mlp." not in k for k in missing):
        raise HadwareError(f"{model.folder}/host.npz does not fit the model config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for block, weights in zip(enc.blocks, model.mlp, strict=True):
        for name in ("gate_up", "down"):
            p = getattr(weights, name)
            getattr(block.mlp, name).load_ternary(p.codes, p.beta, p.gain)
    enc.eval()
    return enc


def student_logits(student: Encoder, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Logits of the student's PyTorch forward on ``x``, in batches (the attention maps of a
    long sequence are large); the values are per sample, so the batch size does not matter."""
    with torch.no_grad():
        return np.concatenate([student(x[i: i + batch_size])[0].numpy()
                               for i in range(0, len(x), batch_size)])


def forward(model: ExportedModel, x: torch.Tensor, backend: Any, progress: bool = True
            ) -> np.ndarray:
    """Logits of ``x`` with the blocks on ``backend`` and everything else on the host."""
    mc = model.model_config
    enc = student_from_export(model)
    hd, heads = mc.head_dim, mc.n_heads
    with torch.no_grad():
        h = enc.embed_input(x)
        b, n, d = h.shape
        for i, block in enumerate(enc.blocks):
            t0 = time.time()
            qkv = block.attn.qkv(block.norm1(h)).view(b, n, 3, heads, hd)
            outs = []
            for j, cfg in enumerate(model.attention[i]):
                q, k, v = (qkv[:, :, c, j, :] for c in range(3))
                qb = hw_sign(q).to(torch.int8).numpy()
                kb = hw_sign(k).to(torch.int8).numpy()
                codes, scale = quantize_values(v)  # per sample: scale (b, 1, 1)
                out = backend.attention(cfg, qb, kb, codes.numpy()).astype(np.float64)
                outs.append(out * 2.0 ** -cfg.out_frac_bits * scale.numpy().astype(np.float64))
            a = torch.from_numpy(np.concatenate(outs, axis=-1).astype(np.float32))
            h = h + block.attn.proj(a)
            xm = block.norm2(h).reshape(b * n, d).numpy()
            y = backend.mlp(model.mlp[i].cfg, model.mlp[i], xm)
            h = h + torch.from_numpy(np.asarray(y, dtype=np.float32)).view(b, n, d)
            if progress:
                log.info("layer %d on %s: %.0f s", i, backend.name, time.time() - t0)
        h = enc.norm(h)
        pooled = {"mean": lambda: h.mean(dim=1), "cls": lambda: h[:, 0],
                  "last": lambda: h[:, -1]}[mc.pool]()
        return enc.head(pooled).numpy()


def run_exported(folder: str | Path, *, golden: bool = False, both: bool = False,
                 samples: int | None = None, out: str | Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Classify the task's test samples with the exported model; with ``both``, on the golden
    models and then on the simulated hardware, and compare the two bit for bit: every block's
    outputs element by element as the hardware run produces them (the first mismatching block,
    sample and element is reported) and the logits. The student's PyTorch forward runs on the
    same samples: ``student_pytorch_accuracy``, and per backend the fraction of samples where
    its prediction equals the student's (``<backend>_student_agreement``) and the largest
    logit difference (``<backend>_student_max_logit_diff``). ``out`` (``--out``) must be
    writable before any work is done; it receives the returned dictionary as JSON."""
    if out is not None:
        check_output_file("--out", out)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: more threads only contend on a shared machine
    try:
        return _run_exported(folder, golden, both, samples, out, progress)
    finally:
        torch.set_num_threads(old_threads)


def _run_exported(folder: str | Path, golden: bool, both: bool, samples: int | None,
                  out: str | Path | None, progress: bool) -> dict[str, Any]:
    model = load_export(folder)
    task = model.manifest.get("task")
    if task is None:
        raise HadwareError(f"{folder}: the manifest names no task (export with --task)")
    x, y = _test_set(task, samples)
    t0 = time.time()
    result: dict[str, Any] = {"task": task, "samples": len(y),
                              "float_metrics": model.manifest.get("float_metrics", {})}
    backends: list[Any] = [GoldenBackend()] if golden and not both else \
        ([BlockTrace(GoldenBackend()), SimBackend()] if both else [SimBackend()])
    if both:  # the hardware run is checked against the golden run, block by block
        backends[1] = BlockTrace(backends[1], reference=backends[0])
    preds, logits = {}, {}
    for be in backends:
        logits[be.name] = forward(model, x, be, progress)
        preds[be.name] = logits[be.name].argmax(axis=1)
        result[f"{be.name}_accuracy"] = float((preds[be.name] == y.numpy()).mean())
    # The student's own PyTorch forward on the same samples, and how far each backend is from it.
    s_logits = student_logits(student_from_export(model), x)
    s_pred = s_logits.argmax(axis=1)
    result["student_pytorch_accuracy"] = float((s_pred == y.numpy()).mean())
    for be in backends:
        result[f"{be.name}_student_agreement"] = float((preds[be.name] == s_pred).mean())
        result[f"{be.name}_student_max_logit_diff"] = float(
            np.abs(logits[be.name].astype(np.float64) - s_logits).max())
    if both:
        hw = backends[1]
        result["blocks_compared"] = len(hw.outputs)
        result["first_block_mismatch"] = hw.first_mismatch
        result["logits_equal"] = bool(np.array_equal(logits["verilator"], logits["golden"]))
        result["prediction_mismatches"] = int((preds["verilator"] != preds["golden"]).sum())
        result["hw_matches_golden"] = hw.first_mismatch is None and result["logits_equal"]
    result["wall_time_s"] = round(time.time() - t0, 1)
    if out is not None:
        atomic_write_text(Path(out), json.dumps(result, indent=2) + "\n")
    return result
