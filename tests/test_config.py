"""Block configuration: validation messages, JSON round trip, unknown keys, stable hashes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hadware.config.base import ConfigFileError
from hadware.config.score_unit import ScoreUnitConfig


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), [
    ({"d": 12}, ValueError, r"^d must be a positive multiple of 8, at most 1024, not 12$"),
    ({"d": 0}, ValueError, r"^d must be a positive multiple of 8.*not 0$"),
    ({"d": -8}, ValueError, r"^d must be .* not -8$"),
    ({"d": 1032}, ValueError, r"^d must be .* not 1032$"),
    ({"d": "64"}, TypeError, r"^d must be an integer, not '64' \(str\)$"),
    ({"d": 64.0}, TypeError, r"^d must be an integer, not 64.0 \(float\)$"),
    ({"d": True}, TypeError, r"^d must be an integer, not True \(bool\)$"),
    ({"lanes": 0}, ValueError, r"^lanes must be an integer between 1 and 64, not 0$"),
    ({"lanes": 65}, ValueError, r"^lanes must be an integer between 1 and 64, not 65$"),
    ({"lanes": None}, TypeError, r"^lanes must be an integer, not None"),
])
def test_bad_values_name_parameter_and_value(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        ScoreUnitConfig(**kwargs)


def test_frozen():
    cfg = ScoreUnitConfig()
    with pytest.raises(AttributeError):
        cfg.d = 16  # type: ignore[misc]


def test_json_round_trip(tmp_path):
    cfg = ScoreUnitConfig(d=128, lanes=7)
    path = tmp_path / "cfg.json"
    cfg.save(path)
    assert json.loads(path.read_text()) == {"d": 128, "lanes": 7}
    assert ScoreUnitConfig.load(path) == cfg


def test_defaults_fill_missing_keys(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"d": 16}')
    assert ScoreUnitConfig.load(path) == ScoreUnitConfig(d=16, lanes=ScoreUnitConfig().lanes)


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"d": 16, "lane": 2}')
    with pytest.raises(ConfigFileError, match=r"unknown key\(s\) 'lane'"):
        ScoreUnitConfig.load(path)


def test_other_block_name_is_an_error():
    with pytest.raises(ConfigFileError, match=r"block 'attention', not 'score_unit'"):
        ScoreUnitConfig.from_dict({"block": "attention", "d": 8})


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigFileError, match=r"'.*nope\.json' does not exist"):
        ScoreUnitConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{d: 8")
    with pytest.raises(ConfigFileError, match=r"'.*bad\.json' is not valid JSON"):
        ScoreUnitConfig.load(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[8, 2]")
    with pytest.raises(ConfigFileError, match=r"expected a JSON object, not list"):
        ScoreUnitConfig.load(arr)


def test_value_errors_from_files_name_the_file(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"d": 20}')
    with pytest.raises(ValueError, match=r"cfg\.json'.*d must be a positive multiple of 8"):
        ScoreUnitConfig.load(path)


def test_hash_is_stable_and_distinguishes():
    a, b = ScoreUnitConfig(d=64, lanes=4), ScoreUnitConfig(lanes=4, d=64)
    assert a.stable_hash() == b.stable_hash()
    assert a.stable_hash() != ScoreUnitConfig(d=64, lanes=5).stable_hash()
    assert a.build_name == f"score_unit-{a.stable_hash()}"
    # Same value in a fresh interpreter (no dependence on hash randomisation or ids).
    code = ("from hadware.config.score_unit import ScoreUnitConfig as C;"
            "print(C(d=64, lanes=4).stable_hash())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONHASHSEED": "123"}, check=True).stdout.strip()
    assert out == a.stable_hash()
