"""Smoke, reproducibility and error tests of the training pipeline (hadware.sw.train).

Models are shrunk and every phase is capped at two optimizer steps; the full training runs
are not tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from hadware.errors import HadwareError
from hadware.sw.distill import STAGES, attention_kl, output_kl
from hadware.sw.models import Encoder
from hadware.sw.tasks import RecallData, task_spec
from hadware.sw.train import add_arguments, run, sweep_recall, train

TINY_MODEL = {"model.d_model": 16, "model.n_heads": 2, "model.mlp_hidden": 16}
TINY = {
    "digits": {**TINY_MODEL, "data.n_train": 96},
    "recall": {**TINY_MODEL, "batch_size": 4, "data.n_test": 16},
}
PHASES = ["teacher", "stage1", "stage2", "stage3", "stage4", "ternary"]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_train(task: str, out: Path, **kw) -> dict:
    return train(task, out, epochs=1, progress=False, max_steps=2, overrides=TINY[task], **kw)


@pytest.mark.parametrize("task", ["digits", "recall"])
def test_two_step_smoke_run_of_every_stage_writes_outputs(task: str, tmp_path: Path):
    out = tmp_path / "run"
    metrics = tiny_train(task, out, top_k=4)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert [p["name"] for p in on_disk["phases"]] == PHASES
    assert all(p["steps"] == 2 for p in on_disk["phases"])
    for key in ("teacher_accuracy", "student_accuracy", "student_ternary_accuracy",
                "student_ternary_float_v_accuracy"):
        assert 0.0 <= on_disk[key] <= 1.0
    # The student is trained and scored with V quantized as the hardware's host does it.
    assert on_disk["student_ternary_int8_v_accuracy"] == on_disk["student_ternary_accuracy"]
    assert "per sample and head" in on_disk["value_quantization"]
    cfg = on_disk["config"]
    assert (cfg["d_model"], cfg["heads"], cfg["head_dim"], cfg["top_k"]) == (16, 2, 8, 4)
    assert len(cfg["temperatures"]) == cfg["layers"]
    assert all(len(t) == 2 and all(v > 0 for v in t) for t in cfg["temperatures"])
    assert on_disk["wall_time_s"] > 0
    assert not list(out.glob(".*.tmp"))
    ckpt = torch.load(out / "student.pt")
    student = Encoder.from_checkpoint(ckpt)
    assert student.config.attention == "had" and student.config.mlp == "ternary"
    assert student.config.top_k == 4
    assert student.temperatures() == cfg["temperatures"]
    for block in student.blocks:
        for layer in (block.mlp.gate_up, block.mlp.down):
            assert layer.quantize
            assert set(layer.export_ternary()[0].unique().tolist()) <= {-1, 0, 1}
    teacher = Encoder.from_checkpoint(torch.load(out / "teacher.pt"))
    assert teacher.config.attention == "softmax" and teacher.config.mlp == "float"


def test_the_student_trains_with_v_quantized_as_deployed(tmp_path: Path, monkeypatch):
    import hadware.sw.models as models

    real, with_grad = models.fake_quantize_values, []

    def spy(v):
        with_grad.append(v.requires_grad)
        return real(v)

    monkeypatch.setattr(models, "fake_quantize_values", spy)
    metrics = tiny_train("digits", tmp_path / "run")
    # Every optimizer step of the five student phases (two each), in each of the two layers;
    # the teacher's softmax heads keep float V.
    assert sum(with_grad) == 5 * 2 * metrics["config"]["layers"]


def test_same_seed_same_losses_other_seed_differs(tmp_path: Path):
    a = tiny_train("digits", tmp_path / "a", seed=3)
    b = tiny_train("digits", tmp_path / "b", seed=3)
    c = tiny_train("digits", tmp_path / "c", seed=4)
    losses = [[p["final_loss"] for p in m["phases"]] for m in (a, b, c)]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]
    sa = torch.load(tmp_path / "a" / "student.pt")["state_dict"]
    sb = torch.load(tmp_path / "b" / "student.pt")["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage_schedule():
    s1, s2, s3, s4 = STAGES
    assert s1.mode(0.0) == ("soft", 5.0, True)
    assert s1.mode(1.0)[1] == pytest.approx(1.0)
    assert s2.mode(0.0) == ("soft", 1.0, False)
    assert s2.mode(1.0)[1] == pytest.approx(0.05)
    assert s3.mode(0.5) == ("sign",) and s3.attn_kl
    assert s4.mode(0.5) == ("sign",) and not s4.attn_kl


def test_losses_vanish_for_identical_inputs():
    logits = torch.randn(3, 5)
    assert float(output_kl(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    p = torch.softmax(torch.randn(2, 2, 4, 4), dim=-1)
    assert float(attention_kl([p], [p])) == pytest.approx(0.0, abs=1e-6)


def test_recall_labels_are_the_true_value_of_the_query_key():
    spec = task_spec("recall", **{"data.n_test": 8, "data.noise": 0.0})
    data = RecallData(spec)
    x, y = data.test_x, data.test_y
    for i in range(8):
        sym, val = x[i, :, 0], x[i, :, 1]
        hits = (sym[:-1] == sym[-1]).nonzero().flatten()
        assert len(hits) == data.repeats
        assert set(val[hits].tolist()) == {int(y[i])}
        assert int(val[-1]) == data.n_values + 1
    assert data.vote_accuracy(x, y) == 1.0


def test_sweep_writes_table_json_and_plot(tmp_path: Path):
    out = tmp_path / "sweep"
    over = {**TINY["recall"], "model.seq_len": 64, "data.repeats": 4}
    result = sweep_recall(out, top_ks=(2, 4), epochs=1, progress=False, max_steps=1,
                          overrides=over)
    assert [r["top_k"] for r in result["rows"]] == [2, 4]
    assert json.loads((out / "sweep.json").read_text())["rows"] == result["rows"]
    assert "| 2 |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "k4" / "metrics.json").is_file()
    # A grid of the exploration engine: a rerun trains nothing and gives the same rows.
    again = sweep_recall(out, top_ks=(2, 4), epochs=1, progress=False, max_steps=1,
                         overrides=over)
    assert again["computed"] == 0 and again["rows"] == result["rows"]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "mnist"}, r"^TASK must be one of digits, recall, not 'mnist'$"),
        ({"top_k": 0}, r"^--top-k must be an integer of at least 1, not 0$"),
        ({"top_k": 2.5}, r"^--top-k must be an integer of at least 1, not 2\.5$"),
        ({"seed": -1}, r"^--seed must be an integer of at least 0, not -1$"),
        ({"epochs": 0}, r"^--epochs must be an integer of at least 1, not 0$"),
    ],
)
def test_bad_options_raise_one_line_errors(tmp_path: Path, kwargs: dict, message: str):
    args = {"task": "digits", "out_dir": tmp_path / "out", "progress": False, **kwargs}
    with pytest.raises(HadwareError, match=message):
        train(**args)
    assert not (tmp_path / "out").exists()


def test_parent_is_a_file(tmp_path: Path):
    (tmp_path / "plain").write_text("")
    out = tmp_path / "plain" / "sub" / "out"
    with pytest.raises(HadwareError, match=r"^--out '.*out': '.*plain' is not a folder$"):
        train("digits", out, progress=False)
    assert not (tmp_path / "plain").is_dir()


def test_missing_parents_are_created(tmp_path: Path):
    from hadware.sw.train import _check_out_dir

    out = _check_out_dir("--out", tmp_path / "a" / "b" / "out")
    assert out.is_dir() and list(out.iterdir()) == []


def test_out_is_a_file(tmp_path: Path):
    out = tmp_path / "file"
    out.write_text("")
    with pytest.raises(HadwareError, match=r"^--out '.*file' exists and is not a folder$"):
        train("digits", out, progress=False)


def test_cli_hooks(tmp_path: Path):
    parser = argparse.ArgumentParser(prog="hadware train")
    add_arguments(parser)
    args = parser.parse_args(["recall", "--out", str(tmp_path / "o"), "--top-k", "8",
                              "--seed", "2", "--epochs", "3", "--threads", "1"])
    assert (args.task, args.top_k, args.seed, args.epochs, args.threads) == ("recall", 8, 2, 3, 1)
    args = parser.parse_args(["digits", "--out", str(tmp_path / "o"), "--top-k", "0"])
    with pytest.raises(HadwareError, match="--top-k"):
        run(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["digits"])  # --out is required
