"""The built-in demonstration run by ``make demo`` (``hadware demo``).

On the built-in ``digits`` task it goes from data to verified hardware:

1. trains the teacher and the HAD + ternary student (``hadware train digits``; reused when
   ``<out>/train`` already holds a finished run with the same settings, unless ``--retrain``);
2. exports the student (``hadware export``): ROM images, block configs, manifest;
3. generates and lints the Verilog of every block the model uses (one attention core per layer
   and head, one MLP per layer);
4. classifies ``samples`` test images with every attention and MLP layer simulated by
   Verilator, and again with the bit-exact golden models, and compares the predictions (and
   both with the student's PyTorch forward on the same images);
5. synthesizes the first layer's blocks (CMOS area, iCE40/ECP5 cells) in a second
   process while step 4 runs;
6. prints a summary table and writes ``<out>/summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hadware.config.base import atomic_write_text
from hadware.errors import HadwareError

__all__ = ["run_demo"]

log = logging.getLogger(__name__)


def _train(out: Path, seed: int, retrain: bool) -> dict[str, Any]:
    from hadware.sw.train import VALUE_QUANTIZATION, train

    metrics = out / "metrics.json"
    if not retrain and metrics.exists() and (out / "student.pt").exists():
        m = json.loads(metrics.read_text())
        # A run from before V was quantized in training is not the model the hardware runs.
        if (m.get("task") == "digits" and m.get("seed") == seed
                and m.get("value_quantization") == VALUE_QUANTIZATION):
            log.info("reusing the training run in %s (--retrain to train again)", out)
            return m
    out.parent.mkdir(parents=True, exist_ok=True)
    return train("digits", out, seed=seed, progress=True)


def _build(item: tuple) -> None:
    from hadware.tb.runner import build

    build(item[0], item[1], extras=item[2])


def _synth(block: str, cfg: Any, extras: dict | None, out: str) -> dict[str, Any]:
    from hadware.synth.flow import synthesize

    fpga = block != "mlp"
    r = synthesize(block, cfg, out, fmax=False, extras=extras, fpga=fpga)
    f = r["fpga"]
    return {"transistors": r["area_cmos"]["transistors"],
            "storage_bits": r["area_cmos"]["storage_bits"],
            "ice40_lut": f["ice40"]["lut"] if fpga else None,
            "ecp5_lut": f["ecp5"]["lut"] if fpga else None,
            "ecp5_dsp": f["ecp5"]["dsp"] if fpga else None}


def run_demo(out_dir: str | Path = "build/demo", *, seed: int = 0, samples: int = 200,
             retrain: bool = False, synth: bool = True) -> dict[str, Any]:
    from hadware.sw.export import export_checkpoint, generate_model, load_export, model_blocks
    from hadware.sw.run import run_exported
    out = Path(out_dir)
    t0 = time.time()
    timings: dict[str, float] = {}

    def lap(name: str, start: float) -> None:
        timings[name] = round(time.time() - start, 1)
        log.info("%s: %.0f s", name, timings[name])

    t = time.time()
    metrics = _train(out / "train", seed, retrain)
    lap("train", t)

    t = time.time()
    export_checkpoint(out / "train" / "student.pt", out / "export", task="digits")
    model = load_export(out / "export")
    lap("export", t)

    t = time.time()
    blocks = model_blocks(model)
    rtl = generate_model(out / "export", out / "rtl")
    warnings = sum(len(b["lint_warnings"]) for b in rtl["blocks"])
    lap("generate", t)

    t = time.time()
    # Separate processes: a build redirects its process's console output to its log.
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_build, blocks))
    lap("build simulators", t)

    # Synthesis of the first layer's first attention head (area and FPGA cells) and of its
    # MLP (area; its FPGA flows take minutes at this size: 'hadware synth mlp' runs them)
    # runs in a second process while this one simulates the test samples.
    to_synth = [blocks[0], blocks[len(model.attention[0])]] if synth else []
    t_all = time.time()
    with ProcessPoolExecutor(max_workers=1) as pool:
        jobs = [pool.submit(_synth, block, cfg, extras, str(out / "synth" / name))
                for block, cfg, extras, name in to_synth]
        t = time.time()
        run = run_exported(out / "export", both=True, samples=samples,
                           out=out / "hw_run.json")
        lap("hardware simulation", t)
        synth_rows = [{"block": name, **job.result()}
                      for job, (_, _, _, name) in zip(jobs, to_synth, strict=True)]
    if synth:
        lap("synthesis (beside the simulation)", t_all)

    summary = {
        "task": "digits",
        "teacher_accuracy": metrics["teacher_accuracy"],
        "student_accuracy": metrics["student_ternary_accuracy"],
        "student_had_float_mlp_accuracy": metrics["student_accuracy"],
        "hw_sim_accuracy": run["verilator_accuracy"],
        "golden_accuracy": run["golden_accuracy"],
        "student_pytorch_accuracy_hw_samples": run["student_pytorch_accuracy"],
        "hw_student_agreement": run["verilator_student_agreement"],
        "hw_samples": run["samples"],
        "hw_matches_golden": run["hw_matches_golden"],
        "lint_warnings": warnings,
        "blocks": [name for _, _, _, name in blocks],
        "synthesis": synth_rows,
        "timings_s": timings,
        "wall_time_s": round(time.time() - t0, 1),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print("\nhadware demo: digits, HAD attention + ternary MLP on simulated hardware")
    rows = [
        ("teacher accuracy (float)", f"{100 * summary['teacher_accuracy']:.2f} %"),
        ("student accuracy (HAD + ternary, float)", f"{100 * summary['student_accuracy']:.2f} %"),
        ("hardware simulation accuracy", f"{100 * summary['hw_sim_accuracy']:.2f} %"),
        ("golden model accuracy", f"{100 * summary['golden_accuracy']:.2f} %"),
        ("student accuracy on the same samples (PyTorch)",
         f"{100 * summary['student_pytorch_accuracy_hw_samples']:.2f} %"),
        ("hardware predicts as the student", f"{100 * summary['hw_student_agreement']:.2f} %"),
        ("test samples on hardware", str(summary["hw_samples"])),
        ("hardware == golden (every block, logits)", str(summary["hw_matches_golden"])),
        ("Verilator lint warnings", str(warnings)),
    ]
    for r in synth_rows:
        rows.append((f"{r['block']}: transistors / storage bits",
                     f"{r['transistors']:,} / {r['storage_bits']:,}"))
        if r["ice40_lut"] is not None:
            rows.append((f"{r['block']}: iCE40 LUT / ECP5 LUT / ECP5 DSP",
                         f"{r['ice40_lut']:,} / {r['ecp5_lut']:,} / {r['ecp5_dsp']}"))
    rows.append(("wall time", f"{summary['wall_time_s']:.0f} s"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"  {'summary':<{width}}  {out / 'summary.json'}")
    if not summary["hw_matches_golden"]:
        raise HadwareError("hardware and golden predictions differ; see "
                           f"{out / 'hw_run.json'}")
    return summary
