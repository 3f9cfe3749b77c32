"""ROM image formats and checksummed export folders."""

from __future__ import annotations

import json

import pytest

from hadware.sw.rom import (
    FORMAT_VERSION,
    ExportError,
    read_hex,
    verify_folder,
    write_coe,
    write_folder,
    write_hex,
    write_mif,
)

WORDS = [0, 1, 0xABC, 0xFFF]


def test_formats_by_hand(tmp_path):
    write_hex(tmp_path / "a.hex", WORDS, 12)
    assert (tmp_path / "a.hex").read_text() == "000\n001\nabc\nfff\n"
    write_mif(tmp_path / "a.mif", WORDS, 12)
    mif = (tmp_path / "a.mif").read_text()
    assert "WIDTH=12;" in mif and "DEPTH=4;" in mif and "  2 : ABC;" in mif
    assert mif.rstrip().endswith("END;")
    write_coe(tmp_path / "a.coe", WORDS, 12)
    assert (tmp_path / "a.coe").read_text() == (
        "memory_initialization_radix=16;\nmemory_initialization_vector=\n000,\n001,\nABC,\nFFF;\n")
    assert read_hex(tmp_path / "a.hex", 12, 4) == WORDS
    with pytest.raises(ValueError, match="word 2 = 2748 does not fit 11 bits"):
        write_hex(tmp_path / "b.hex", WORDS, 11)


def test_read_hex_refuses_bad_images(tmp_path):
    p = tmp_path / "r.hex"
    p.write_text("00\n01\n")
    with pytest.raises(ExportError, match=r"holds 2 words, expected 3 \(truncated"):
        read_hex(p, 8, 3)
    p.write_text("00\nzz\n")
    with pytest.raises(ExportError, match="line 2: 'zz' is not hex"):
        read_hex(p, 8, 2)
    p.write_text("00\n1ff\n")
    with pytest.raises(ExportError, match="line 2: 1ff exceeds 8 bits"):
        read_hex(p, 8, 2)
    with pytest.raises(ExportError, match="is missing"):
        read_hex(tmp_path / "nope.hex", 8, 2)


def make(tmp_path):
    def fill(d):
        write_hex(d / "w.hex", WORDS, 12)
        (d / "sub").mkdir()
        (d / "sub" / "cfg.json").write_text('{"a": 1}')
        return {"note": "x"}

    return write_folder(tmp_path / "exp", fill)


def test_folder_round_trip_and_corruption(tmp_path):
    m = make(tmp_path)
    assert m["format_version"] == FORMAT_VERSION and set(m["files"]) == {"w.hex", "sub/cfg.json"}
    assert verify_folder(tmp_path / "exp")["note"] == "x"
    f = tmp_path / "exp" / "w.hex"
    f.write_text("000\n001\nabd\nfff\n")  # same size, different content
    with pytest.raises(ExportError, match=r"w\.hex' does not match its sha256"):
        verify_folder(tmp_path / "exp")
    f.write_text("000\n")
    with pytest.raises(ExportError, match=r"w\.hex' has 4 bytes.*truncated"):
        verify_folder(tmp_path / "exp")
    f.unlink()
    with pytest.raises(ExportError, match=r"w\.hex' listed in the manifest is missing"):
        verify_folder(tmp_path / "exp")
    make(tmp_path)  # rewriting replaces the folder atomically
    mp = tmp_path / "exp" / "manifest.json"
    mp.write_text(json.dumps({**json.loads(mp.read_text()), "format_version": 99}))
    with pytest.raises(ExportError, match="unknown format version 99"):
        verify_folder(tmp_path / "exp")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_write_leaves_nothing(tmp_path):
    def fill(d):
        (d / "part.hex").write_text("00\n")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_folder(tmp_path / "exp", fill)
    assert list(tmp_path.iterdir()) == []
