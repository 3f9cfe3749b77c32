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
``k_b``; the sign is that of ``Q / sigma_Q``, so sigma needs no hardware), values quantized per
sample and head to int8 with ``scale = max|v| / 127``; the block's ``out`` (units of
``2**-out_frac_bits``) times ``scale`` is the head output. The MLP takes the float pre-normed
tokens (quantized to its input format by its own vector interface) and returns float.
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

__all__ = ["GoldenBackend", "SimBackend", "run_exported"]

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


def forward(model: ExportedModel, x: torch.Tensor, backend: Any, progress: bool = True
            ) -> np.ndarray:
    """Logits of ``x`` with the blocks on ``backend`` and everything else on the host."""
    from hadware.sw.models import Encoder

    mc = model.model_config
    enc = Encoder(mc)
    state = {k: torch.from_numpy(v) for k, v in model.host.items()}
    missing, unexpected = enc.load_state_dict(state, strict=False)
    if unexpected or any(".mlp." not in k for k in missing):
        raise HadwareError(f"{model.folder}/host.npz does not fit the model config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    enc.eval()
    hd, heads = mc.head_dim, mc.n_heads
    with torch.no_grad():
        h = enc.embed_input(x)
        b, n, d = h.shape
        for i, block in enumerate(enc.blocks):
            t0 = time.time()
            qkv = block.attn.qkv(block.norm1(h)).view(b, n, 3, heads, hd)
            outs = []
            for j, cfg in enumerate(model.attention[i]):
                q, k, v = (qkv[:, :, c, j, :].numpy() for c in range(3))
                qb = np.where(q >= 0, 1, -1).astype(np.int8)
                kb = np.where(k >= 0, 1, -1).astype(np.int8)
                amax = np.abs(v).reshape(b, -1).max(axis=1)
                scale = np.where(amax > 0, amax / 127.0, 1.0)
                vq = np.clip(np.round(v / scale[:, None, None]), -127, 127).astype(np.int8)
                out = backend.attention(cfg, qb, kb, vq).astype(np.float64)
                outs.append(out * 2.0 ** -cfg.out_frac_bits * scale[:, None, None])
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
    """Classify the task's test samples with the exported model; with ``both``, on the
    simulated hardware and on the golden models, and compare their predictions. ``out``
    (``--out``) must be writable before any work is done."""
    if out is not None:
        check_output_file("--out", out)
    model = load_export(folder)
    task = model.manifest.get("task")
    if task is None:
        raise HadwareError(f"{folder}: the manifest names no task (export with --task)")
    x, y = _test_set(task, samples)
    t0 = time.time()
    result: dict[str, Any] = {"task": task, "samples": len(y),
                              "float_metrics": model.manifest.get("float_metrics", {})}
    backends = [GoldenBackend()] if golden and not both else \
        ([SimBackend(), GoldenBackend()] if both else [SimBackend()])
    preds = {}
    for be in backends:
        logits = forward(model, x, be, progress)
        preds[be.name] = logits.argmax(axis=1)
        result[f"{be.name}_accuracy"] = float((preds[be.name] == y.numpy()).mean())
    if both:
        result["hw_matches_golden"] = bool(np.array_equal(preds["verilator"], preds["golden"]))
        result["prediction_mismatches"] = int((preds["verilator"] != preds["golden"]).sum())
    result["wall_time_s"] = round(time.time() - t0, 1)
    if out is not None:
        atomic_write_text(Path(out), json.dumps(result, indent=2) + "\n")
    return result
