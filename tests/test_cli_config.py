"""``hadware config BLOCK [--from CFG] [--set NAME=VALUE ...] [-o CFG.json]``: values parsed as
JSON when they parse and as plain strings otherwise, validated as a ``--config`` file is; an
unknown name, a bad value, a name set twice are one-line errors and nothing is written; the
written file loads back equal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from test_inputs import refused  # the error convention: one line, exit status 1, nothing written

from hadware.blocks import BLOCKS
from hadware.cli import main, parse_assignments
from hadware.config.attention import AttentionConfig
from hadware.config.score_unit import ScoreUnitConfig
from hadware.errors import HadwareError


def config_json(capsys, *args) -> dict:
    """The config ``hadware config ARGS`` prints on stdout."""
    assert main(["config", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("item", "value"), [
    ("x=16", 16),
    ("x=-3", -3),
    ("x=0.5", 0.5),
    ("x=1e3", 1000.0),
    ("x=true", True),
    ("x=false", False),
    ("x=null", None),
    ('x="16"', "16"),  # a string in quotes stays a string
    ("x=abc", "abc"),  # not JSON: the plain string
    ("x=", ""),
    ("x=a=b", "a=b"),  # the name ends at the first '='
    ("x=[1, 2]", [1, 2]),  # any JSON; the config's validation decides
])
def test_values_are_json_when_they_parse(item, value):
    assert parse_assignments([item]) == {"x": value}


@pytest.mark.parametrize("item", ["d", "=16", ""])
def test_an_item_without_a_name_and_value(item):
    with pytest.raises(HadwareError, match=rf"^--set {item!r}: expected NAME=VALUE$"):
        parse_assignments([item])


# -- the command -------------------------------------------------------------------------------


def test_defaults_as_before(capsys, tmp_path):
    assert config_json(capsys, "score_unit") == {"d": 64, "lanes": 4}
    assert main(["config", "attention", "-o", str(tmp_path / "a.json")]) == 0
    assert AttentionConfig.load(tmp_path / "a.json") == AttentionConfig()


def test_set_writes_a_file_that_loads_back_equal(tmp_path):
    out = tmp_path / "a.json"
    assert main(["config", "attention", "--set", "d=16", "n_max=8", "top_k=4", "d_v=2",
                 "temperature=0.25", "--set", "lanes=2", "-o", str(out)]) == 0
    expected = AttentionConfig(d=16, n_max=8, top_k=4, d_v=2, temperature=0.25, lanes=2)
    assert AttentionConfig.load(out) == expected
    assert json.loads(out.read_text()) == expected.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_set_to_stdout(capsys):
    assert config_json(capsys, "score_unit", "--set", "d=16") == {"d": 16, "lanes": 4}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_every_block_round_trips(tmp_path, name):
    cls = BLOCKS[name].config_class()
    first = cls.field_names()[0]
    value = json.dumps(getattr(cls(), first))
    out = tmp_path / "c.json"
    assert main(["config", name, "--set", f"{first}={value}", "-o", str(out)]) == 0
    assert cls.load(out) == cls()


def test_from_file(capsys, tmp_path):
    ScoreUnitConfig(d=128, lanes=7).save(tmp_path / "base.json")
    assert config_json(capsys, "score_unit", "--from", tmp_path / "base.json") == \
        {"d": 128, "lanes": 7}
    out = tmp_path / "new.json"
    assert main(["config", "score_unit", "--from", str(tmp_path / "base.json"), "--set",
                 "lanes=2", "-o", str(out)]) == 0
    assert ScoreUnitConfig.load(out) == ScoreUnitConfig(d=128, lanes=2)  # d from the file
    assert ScoreUnitConfig.load(tmp_path / "base.json") == ScoreUnitConfig(d=128, lanes=7)


def test_from_a_partial_file_and_a_description(capsys, tmp_path):
    # A file may leave keys to their defaults and may carry its block name, as --config allows.
    (tmp_path / "part.json").write_text('{"block": "score_unit", "d": 16}')
    assert config_json(capsys, "score_unit", "--from", tmp_path / "part.json", "--set",
                       "lanes=9") == {"d": 16, "lanes": 9}


def test_from_and_output_the_same_file(tmp_path):
    path = tmp_path / "c.json"
    ScoreUnitConfig(d=16).save(path)
    assert main(["config", "score_unit", "--from", str(path), "--set", "lanes=5", "-o",
                 str(path)]) == 0
    assert ScoreUnitConfig.load(path) == ScoreUnitConfig(d=16, lanes=5)


# -- refused: one line, exit status 1, nothing written -----------------------------------------


@pytest.mark.parametrize(("sets", "pattern"), [
    (["lane=2"], r"--set: unknown parameter 'lane'; score_unit accepts d, lanes$"),
    (["x=1", "y=2"], r"--set: unknown parameters 'x', 'y'; score_unit accepts d, lanes$"),
    (["block=topk"], r"--set: unknown parameter 'block'; score_unit accepts d, lanes$"),
    (["d=12"], r"--set: d must be a positive multiple of 8, at most 1024, not 12$"),
    (["lanes=0"], r"--set: lanes must be an integer between 1 and 64, not 0$"),
    (['d="16"'], r"--set: d must be an integer, not '16' \(str\)$"),
    (["d=sixteen"], r"--set: d must be an integer, not 'sixteen' \(str\)$"),
    (["d=16.0"], r"--set: d must be an integer, not 16\.0 \(float\)$"),
    (["lanes=true"], r"--set: lanes must be an integer, not True \(bool\)$"),
    (["lanes=null"], r"--set: lanes must be an integer, not None \(NoneType\)$"),
    (["d"], r"--set 'd': expected NAME=VALUE$"),
    (["=16"], r"--set '=16': expected NAME=VALUE$"),
], ids=["unknown", "unknowns", "block", "range", "range-lanes", "quoted", "plain-string",
        "float", "bool", "null", "no-equals", "no-name"])
def test_bad_set_refused(capsys, tmp_path, sets, pattern):
    out = tmp_path / "c.json"
    refused(capsys, ["config", "score_unit", "--set", *sets, "-o", out], pattern, out)


@pytest.mark.parametrize("args", [
    ["--set", "temperature=abc"],
    ["--set", "temperature=NaN"],
    ["--set", "top_k=100"],
    ["--set", "n_max=4"],  # top_k (8, the default) is then beyond n_max
], ids=["string", "nan", "top_k", "n_max"])
def test_bad_attention_values_name_the_parameter(capsys, tmp_path, args):
    out = tmp_path / "c.json"
    pattern = {"temperature=abc": r"--set: temperature must be a number, not 'abc' \(str\)$",
               "temperature=NaN": r"--set: temperature must be a finite number, not nan$",
               "top_k=100": r"--set: top_k must be an integer between 1 and n_max \(64\), "
                            r"not 100$",
               "n_max=4": r"--set: top_k must be an integer between 1 and n_max \(4\), "
                          r"not 8$"}[args[1]]
    refused(capsys, ["config", "attention", *args, "-o", out], pattern, out)


@pytest.mark.parametrize("sets", [["--set", "d=16", "d=32"], ["--set", "d=16", "--set", "d=32"],
                                  ["--set", "d=16", "d=16"]],
                         ids=["one-option", "two-options", "same-value"])
def test_a_name_set_twice_is_refused(capsys, tmp_path, sets):
    out = tmp_path / "c.json"
    refused(capsys, ["config", "score_unit", *sets, "-o", out],
            rf"--set: d is set twice \(d=16, {sets[-1]}\); set each parameter once$", out)


def test_bad_from_file_refused(capsys, tmp_path):
    out = tmp_path / "c.json"
    refused(capsys, ["config", "score_unit", "--from", tmp_path / "none.json", "-o", out],
            r"config file '.*none\.json' does not exist$", out)
    (tmp_path / "bad.json").write_text('{"d": 12}')  # --set does not mend a bad file
    refused(capsys, ["config", "score_unit", "--from", tmp_path / "bad.json", "--set", "d=16",
                     "-o", out], r"config file '.*bad\.json': d must be a positive multiple of 8",
            out)
    (tmp_path / "junk.json").write_text("{not json")
    refused(capsys, ["config", "score_unit", "--from", tmp_path / "junk.json", "-o", out],
            r"config file '.*junk\.json' is not valid JSON", out)
    AttentionConfig().save(tmp_path / "att.json")
    refused(capsys, ["config", "score_unit", "--from", tmp_path / "att.json", "-o", out],
            r"config file '.*att\.json': unknown key\(s\) 'd_v', .*; score_unit accepts d, "
            r"lanes$", out)
    (tmp_path / "named.json").write_text('{"block": "topk"}')
    refused(capsys, ["config", "score_unit", "--from", tmp_path / "named.json", "-o", out],
            r"config file '.*named\.json': is a configuration of block 'topk', not "
            r"'score_unit'$", out)


def test_unknown_block_and_bad_output_refused(capsys, tmp_path):
    refused(capsys, ["config", "no_such_block", "--set", "d=16"],
            r"unknown block 'no_such_block'; known blocks: attention, ")
    refused(capsys, ["config", "score_unit", "--set", "d=16", "-o", tmp_path / "no" / "c.json"],
            r"-o '.*c\.json': folder '.*no' does not exist$", tmp_path / "no")
    refused(capsys, ["config", "score_unit", "-o", tmp_path],
            r"-o '.*' is a folder, not a file$")


def test_a_refused_change_leaves_an_existing_output_alone(capsys, tmp_path):
    out = tmp_path / "c.json"
    ScoreUnitConfig(d=16).save(out)
    before = out.read_text()
    refused(capsys, ["config", "score_unit", "--set", "d=12", "-o", out], r"--set: d must be")
    assert out.read_text() == before


def test_output_is_written_atomically(tmp_path, monkeypatch):
    """The file is written through a temporary file and a rename: when the rename fails, the
    old file is intact and no temporary file is left."""
    out = tmp_path / "c.json"
    ScoreUnitConfig(d=16).save(out)
    before = out.read_text()
    renames = []

    def failing_replace(src, dst):
        renames.append((os.path.dirname(src), dst))
        raise OSError("disk full")

    monkeypatch.setattr("hadware.config.base.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        main(["config", "score_unit", "--set", "d=32", "-o", str(out)])
    assert renames == [(str(tmp_path), out)]  # a temporary file beside the output, renamed
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


# -- what config logs ----------------------------------------------------------------------------


def test_error_bound_of_the_changed_config(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hadware")
    out = tmp_path / "c.json"
    assert main(["config", "attention", "--set", "exp_frac_bits=8", "-o", str(out)]) == 0
    coarse = AttentionConfig(exp_frac_bits=8)
    assert AttentionConfig.load(out) == coarse
    assert f"error bound: {coarse.error_bound_ulp:.4g} ulp of out" in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "exceeds 1 ulp" in warned[0]
    caplog.clear()
    assert main(["config", "score_unit", "--set", "d=16", "-o", str(tmp_path / "s.json")]) == 0
    assert "error bound" not in caplog.text


def hadware(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hadware.cli", *map(str, args)],
                          capture_output=True, text=True)


def test_command_line_error_is_one_line_without_the_bound(tmp_path):
    """In a real process the log goes to stderr too: a refused attention config states the
    error, not the error bound of a config that is not written."""
    p = hadware("config", "attention", "--set", "exp_frac_bits=8", "-o",
                tmp_path / "no" / "c.json")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        f"hadware: error: -o '{tmp_path / 'no' / 'c.json'}': folder '{tmp_path / 'no'}' "
        "does not exist"]
    p = hadware("config", "attention", "--set", "exp_frac_bits=8", "-o", tmp_path / "c.json")
    assert p.returncode == 0
    assert [line.split(":")[1].strip() for line in p.stderr.splitlines()] == \
        ["error bound", "warning", "wrote " + str(tmp_path / "c.json")]


def test_written_config_is_what_config_accepts(tmp_path):
    """The file ``config --set`` writes is read by ``--config`` of the other commands."""
    assert main(["config", "score_unit", "--set", "d=16", "lanes=3", "-o",
                 str(tmp_path / "c.json")]) == 0
    assert BLOCKS["score_unit"].load_config(str(tmp_path / "c.json")) == \
        ScoreUnitConfig(d=16, lanes=3)
