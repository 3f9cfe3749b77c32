"""The command line: each subcommand on the score unit, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hadware.cli import main


def hadware(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hadware.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture
def files(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"d": 16, "lanes": 3}))
    rng = np.random.default_rng(11)
    pm1 = np.array([-1, 1], dtype=np.int8)
    np.savez(tmp_path / "in.npz", q=rng.choice(pm1, (4, 16)), k=rng.choice(pm1, (8, 16)))
    return tmp_path


def test_blocks_and_config(tmp_path, capsys):
    assert main(["blocks"]) == 0
    assert "score_unit" in capsys.readouterr().out
    assert main(["config", "score_unit", "-o", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text()) == {"d": 64, "lanes": 4}


def test_generate(files):
    assert main(["generate", "score_unit", "--config", str(files / "cfg.json"),
                 "-o", str(files / "gen")]) == 0
    assert (files / "gen" / "score_unit.v").exists()
    assert json.loads((files / "gen" / "score_unit.json").read_text())["config"]["d"] == 16


@pytest.mark.sim
def test_sim_equals_golden(files):
    common = ["score_unit", "--config", str(files / "cfg.json"), "--inputs",
              str(files / "in.npz")]
    assert main(["golden", *common, "--outputs", str(files / "g.npz")]) == 0
    assert main(["sim", *common, "--outputs", str(files / "s.npz"), "--stall", "0.3",
                 "--idle", "0.2", "--seed", "4"]) == 0
    g, s = np.load(files / "g.npz"), np.load(files / "s.npz")
    assert g.files == s.files == ["s"]
    np.testing.assert_array_equal(g["s"], s["s"])


@pytest.mark.parametrize(("content", "pattern"), [
    ('{"d": "16"}', r"d must be an integer, not '16' \(str\)"),
    ('{"d": 12}', r"d must be a positive multiple of 8, at most 1024, not 12"),
    ('{"lanes": 0}', r"lanes must be an integer between 1 and 64, not 0"),
    ('{"d": 16, "extra": 1}', r"unknown key\(s\) 'extra'"),
    ("{not json", r"is not valid JSON"),
])
def test_bad_config_one_line_error(files, content, pattern):
    (files / "bad.json").write_text(content)
    p = hadware("golden", "score_unit", "--config", str(files / "bad.json"), "--inputs",
                str(files / "in.npz"), "--outputs", str(files / "o.npz"))
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hadware: error: ")
    assert __import__("re").search(pattern, lines[0])
    assert not (files / "o.npz").exists()


@pytest.mark.parametrize(("args", "pattern"), [
    (["--config", "missing.json"], r"config file 'missing.json' does not exist"),
    (["--inputs", "missing.npz"], r"input file 'missing.npz' does not exist"),
])
def test_missing_files(files, args, pattern):
    base = {"--config": "cfg.json", "--inputs": "in.npz"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    p = hadware("golden", "score_unit", *flat, "--outputs", "o.npz", cwd=files)
    assert p.returncode == 1
    assert p.stderr.strip() == f"hadware: error: {pattern.replace(chr(92), '')}"


def test_bad_inputs_and_block(files):
    np.savez(files / "bad.npz", q=np.zeros((2, 16), np.int8), k=np.ones((2, 16), np.int8))
    p = hadware("golden", "score_unit", "--inputs", str(files / "bad.npz"), "--config",
                str(files / "cfg.json"), "--outputs", str(files / "o.npz"))
    assert p.returncode == 1 and "array 'q' must hold only -1 and +1" in p.stderr
    (files / "junk.npz").write_text("not a zip")
    p = hadware("golden", "score_unit", "--inputs", str(files / "junk.npz"), "--outputs", "o")
    assert p.returncode == 1 and "is not a readable .npz file" in p.stderr
    p = hadware("generate", "no_such_block", "-o", str(files))
    assert p.returncode == 1 and "unknown block 'no_such_block'" in p.stderr


def test_rtl_of_a_missing_export(tmp_path):
    p = hadware("rtl", str(tmp_path / "nowhere"), "-o", str(tmp_path / "rtl"))
    assert p.returncode == 1
    assert p.stderr.strip() == f"hadware: error: export folder '{tmp_path / 'nowhere'}' " \
                               "does not exist"
    assert not (tmp_path / "rtl").exists()
