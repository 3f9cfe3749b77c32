"""Bad input on the command line: one line of error naming the argument or file and the value,
exit status 1, nothing written. And precision honesty: ``config`` and ``generate`` state the
attention error bound, ``golden`` records it beside its output. (The bad export folders,
``export --lanes`` and ``run --samples`` are in tests/test_export.py.)"""

from __future__ import annotations

import json
import logging
import re
import sys
import zipfile

import numpy as np
import pytest

from hadware.blocks import BLOCKS
from hadware.cli import main, report_path
from hadware.config.attention import AttentionConfig
from hadware.config.attention_core import TableExp


def refused(capsys, args, pattern: str, *absent) -> None:
    """``hadware ARGS`` exits with 1 and one line ``hadware: error: ...`` matching
    ``pattern``; none of the paths ``absent`` exists afterwards."""
    rc = main([str(a) for a in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("hadware: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    for p in absent:
        assert not p.exists(), p


@pytest.fixture
def su(tmp_path):
    """A score unit input file (default config: d = 64)."""
    rng = np.random.default_rng(3)
    pm1 = np.array([-1, 1], dtype=np.int8)
    np.savez(tmp_path / "in.npz", q=rng.choice(pm1, (2, 64)), k=rng.choice(pm1, (3, 64)))
    return tmp_path


def _npy(p):
    np.save(p, np.zeros(3))


def _text(p):
    p.write_text("q,k\n1,2\n")


def _pickled(p):
    np.savez(p, q=np.array([{"a": 1}], dtype=object))


def _bad_member(p):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("q.npy", b"not an array")


@pytest.mark.parametrize(("make", "name", "pattern"), [
    (_npy, "in.npy", r"input file '.*in\.npy' is a single \.npy array, not an \.npz file"),
    (_text, "text.npz", r"input file '.*text\.npz' is not a readable \.npz file "
                        r"\(not a zip archive\)"),
    (_pickled, "obj.npz", r"input file '.*obj\.npz' is not a readable \.npz file "
                          r"\(an array holds Python objects\)"),
    (_bad_member, "zip.npz", r"input file '.*zip\.npz' is not a readable \.npz file "
                             r"\(member 'q' is not a \.npy array\)"),
], ids=["npy", "text", "pickle", "member"])
def test_input_file_that_is_not_an_npz(su, capsys, make, name, pattern):
    make(su / name)
    refused(capsys, ["golden", "score_unit", "--inputs", su / name, "--outputs", su / "o.npz"],
            pattern, su / "o.npz", report_path(su / "o.npz"))


def test_input_file_that_is_a_folder(su, capsys):
    refused(capsys, ["golden", "score_unit", "--inputs", su, "--outputs", su / "o.npz"],
            r"input file '.*' is not a file$", su / "o.npz")


@pytest.mark.parametrize(("where", "pattern"), [
    ("missing/o.npz", r"--outputs '.*missing/o\.npz': folder '.*missing' does not exist$"),
    ("plain/o.npz", r"--outputs '.*plain/o\.npz': folder '.*plain' is not a folder$"),
    (".", r"--outputs '.*' is a folder, not a file$"),
], ids=["missing-folder", "folder-is-a-file", "a-folder"])
@pytest.mark.parametrize("command", ["golden", "sim"])
def test_outputs_that_cannot_be_written(su, capsys, command, where, pattern):
    (su / "plain").write_text("a file")
    before = sorted(su.rglob("*"))
    refused(capsys, [command, "score_unit", "--inputs", su / "in.npz", "--outputs", su / where],
            pattern)
    assert sorted(su.rglob("*")) == before  # nothing written, no folder created


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_outputs_in_an_unwritable_folder(su, capsys):
    # /proc refuses new files even for root (a chmod 555 folder would not stop root).
    refused(capsys, ["golden", "score_unit", "--inputs", su / "in.npz", "--outputs",
                     "/proc/o.npz"], r"--outputs '/proc/o\.npz': folder '/proc' is not writable")


TABLE_VARIANTS = sorted(n for n, b in BLOCKS.items()
                        if issubclass(b.config_class(), TableExp))


@pytest.mark.parametrize("name", TABLE_VARIANTS)
def test_temperature_whose_table_is_nan_is_refused(name):
    cls = BLOCKS[name].config_class()
    limit = cls.temperature_max
    assert limit == sys.float_info.max / 2 and np.isfinite(2.0 * limit)
    assert cls(temperature=limit).lut[:2] == (2**19, 0)  # the largest accepted: a finite table
    with pytest.raises(ValueError, match=r"^temperature must be at most 8\.98846567431\d*e\+307, "
                                         r"not 1e\+308 \(the table evaluates "
                                         r"exp\(-2\.0 \* temperature \* a\), and 2\.0 \* "
                                         r"temperature must be a finite float64\)$"):
        cls(temperature=1e308)


def test_temperature_on_the_command_line(su, capsys):
    (su / "t.json").write_text(json.dumps({"temperature": 1e308}))
    refused(capsys, ["generate", "attention", "--config", su / "t.json", "-o", su / "gen"],
            r"config file '.*t\.json': temperature must be at most 8\.98\d*e\+307, not 1e\+308 "
            r"\(the table evaluates", su / "gen")


def test_weights_given_to_a_block_without_weights(su, capsys):
    np.savez(su / "w.npz", w=np.zeros(2))
    refused(capsys, ["golden", "score_unit", "--inputs", su / "in.npz", "--weights", su / "w.npz",
                     "--outputs", su / "o.npz"],
            r"--weights is not used by block score_unit \(blocks that take --weights: "
            r"encoder_layer, mlp, std_layer\)$",
            su / "o.npz")
    refused(capsys, ["synth", "compare", "--weights", su / "w.npz", "-o", su / "cmp"],
            r"--weights is not used by synth compare", su / "cmp")


@pytest.mark.parametrize("value", ["0", "-3"])
@pytest.mark.parametrize("option", ["--queries", "--jobs"])
@pytest.mark.parametrize("what", ["compare", "sweep"])
def test_queries_and_jobs(su, capsys, what, option, value):
    refused(capsys, ["synth", what, option, value, "-o", su / "out"],
            rf"{option} must be an integer of at least 1, not {value}$", su / "out")


def test_train_top_k_beyond_the_keys(tmp_path, capsys):
    refused(capsys, ["train", "digits", "--out", tmp_path / "run", "--top-k", "1000"],
            r"top_k must be an integer between 1 and the keys of a row \(16, from seq_len and "
            r"pool\), not 1000$", tmp_path / "run")


# -- precision honesty -------------------------------------------------------------------------


def test_config_and_generate_state_the_error_bound(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="hadware")
    assert main(["config", "attention", "-o", str(tmp_path / "c.json")]) == 0
    bound = AttentionConfig().error_bound_ulp
    assert bound <= 1.0
    assert f"error bound: {bound:.4g} ulp of out (units of 2**-8)" in caplog.text
    assert "exceeds 1 ulp" not in caplog.text
    caplog.clear()
    coarse = AttentionConfig(exp_frac_bits=8)
    coarse.save(tmp_path / "coarse.json")
    assert main(["generate", "attention", "--config", str(tmp_path / "coarse.json"), "-o",
                 str(tmp_path / "gen"), "--no-lint"]) == 0
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert re.search(rf"error bound {coarse.error_bound_ulp:.4g} ulp exceeds 1 ulp",
                     warned[0].getMessage())
    caplog.clear()
    capsys.readouterr()
    assert main(["config", "score_unit"]) == 0  # no attention config, no bound
    assert "error bound" not in caplog.text
    assert json.loads(capsys.readouterr().out) == {"d": 64, "lanes": 4}


def test_golden_records_the_error_bound(tmp_path, su):
    cfg = AttentionConfig(d=16, n_max=8, top_k=4, d_v=2, lanes=2, exp_frac_bits=10)
    cfg.save(tmp_path / "cfg.json")
    rng = np.random.default_rng(5)
    pm1 = np.array([-1, 1], dtype=np.int8)
    np.savez(tmp_path / "a.npz", q=rng.choice(pm1, (3, 16)), k=rng.choice(pm1, (8, 16)),
             v=rng.integers(-128, 128, (8, 2)).astype(np.int8))
    assert main(["golden", "attention", "--config", str(tmp_path / "cfg.json"), "--inputs",
                 str(tmp_path / "a.npz"), "--outputs", str(tmp_path / "g.npz")]) == 0
    report = json.loads((tmp_path / "g.npz.json").read_text())
    assert report["error_bound_ulp"] == cfg.error_bound_ulp > 1.0
    assert report["block"] == "attention" and report["config"] == cfg.to_dict()
    with np.load(tmp_path / "g.npz") as g:  # the vector file holds the outputs only
        assert sorted(g.files) == ["out", "topk_index", "topk_score"]
        assert report["arrays"]["out"] == {"shape": [3, 2], "dtype": "int32"}
    assert main(["golden", "score_unit", "--inputs", str(su / "in.npz"), "--outputs",
                 str(su / "s.npz")]) == 0
    assert "error_bound_ulp" not in json.loads((su / "s.npz.json").read_text())


@pytest.mark.parametrize("command", ["golden", "sim"])
def test_mlp_token_beyond_the_input_range(tmp_path, capsys, command):
    from hadware.config.mlp import MlpConfig
    from hadware.tb.mlp import latent_weights

    cfg = MlpConfig(d_model=4, d_hidden=4, lanes=2)
    cfg.save(tmp_path / "cfg.json")
    np.savez(tmp_path / "w.npz", **latent_weights(cfg, seed=1))
    x = np.ones((3, 4))
    x[1, 2] = 1e7  # beyond the largest exponent
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / "o.npz"
    refused(capsys, [command, "mlp", "--config", tmp_path / "cfg.json", "--weights",
                     tmp_path / "w.npz", "--inputs", tmp_path / "in.npz", "--outputs", out],
            r"IN\.npz: 'x' token 1, element 2 = 10000000\.0 is outside the input range "
            r"\[-4194308\.0, 4194300\.0\)", out, report_path(out))
