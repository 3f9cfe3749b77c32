"""Export of a trained student, loading without re-quantizing, every corruption refused, and
the exported model run through the golden models (and the simulated hardware)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import torch

from hadware.sw.export import export_checkpoint, load_export
from hadware.sw.models import Encoder
from hadware.sw.rom import ExportError
from hadware.sw.train import train

TINY = {"model.d_model": 16, "model.n_heads": 2, "model.mlp_hidden": 16, "data.n_train": 96}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "digits"
    torch.set_num_threads(1)
    train("digits", out, epochs=1, progress=False, max_steps=2, overrides=TINY)
    return out


@pytest.fixture
def exported(trained, tmp_path):
    export_checkpoint(trained / "student.pt", tmp_path / "exp")
    return tmp_path / "exp"


@pytest.fixture(scope="module")
def exported_one_block_each(tmp_path_factory):
    """One layer of one head: the smallest export with an attention and an MLP block."""
    out = tmp_path_factory.mktemp("train1") / "digits"
    torch.set_num_threads(1)
    train("digits", out, epochs=1, progress=False, max_steps=2,
          overrides={**TINY, "model.n_heads": 1, "model.n_layers": 1})
    export_checkpoint(out / "student.pt", out.parent / "exp")
    return out.parent / "exp"


def resign(folder, rel):
    """Update the manifest entry of ``rel`` after a deliberate change (a consistent but wrong
    export, so that the content checks behind the checksums are exercised)."""
    m = json.loads((folder / "manifest.json").read_text())
    data = (folder / rel).read_bytes()
    m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(m))


def test_round_trip_keeps_codes_and_betas(trained, exported):
    model = Encoder.from_checkpoint(torch.load(trained / "student.pt", weights_only=False))
    m = load_export(exported)
    assert m.manifest["task"] == "digits"
    for i, block in enumerate(model.blocks):
        for name in ("gate_up", "down"):
            codes, beta = getattr(block.mlp, name).export_ternary()
            params = getattr(m.mlp[i], name)
            np.testing.assert_array_equal(params.codes, codes.numpy())
            assert params.beta == pytest.approx(beta, rel=1e-6)
        for h, cfg in enumerate(m.attention[i]):
            assert cfg.temperature == pytest.approx(model.temperatures()[i][h])
            assert cfg.d == model.config.head_dim and cfg.n_max == model.config.seq_len
    # Loading twice gives the same weights: nothing is quantized again.
    again = load_export(exported)
    for a, b in zip(m.mlp, again.mlp, strict=True):
        assert a.gate_up.beta == b.gate_up.beta
        np.testing.assert_array_equal(a.gate_up.codes, b.gate_up.codes)


def test_corruptions_are_refused(exported, tmp_path):
    def fresh():
        d = tmp_path / "c"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(exported, d)
        return d

    d = fresh()
    (d / "layer0" / "mlp_down.hex").unlink()
    with pytest.raises(ExportError, match=r"mlp_down\.hex' listed in the manifest is missing"):
        load_export(d)

    d = fresh()
    p = d / "layer1" / "mlp_gate_up.hex"
    text = p.read_text()
    p.write_text(text[:-2] + ("0" if text[-2] != "0" else "1") + "\n")
    with pytest.raises(ExportError, match=r"mlp_gate_up\.hex' does not match its sha256"):
        load_export(d)

    d = fresh()
    p = d / "layer0" / "mlp_gate_up.hex"
    p.write_text("\n".join(p.read_text().splitlines()[:-3]) + "\n")
    with pytest.raises(ExportError, match=r"mlp_gate_up\.hex' has \d+ bytes.*truncated"):
        load_export(d)
    resign(d, "layer0/mlp_gate_up.hex")
    with pytest.raises(ExportError, match=r"mlp_gate_up\.hex' holds \d+ words, expected"):
        load_export(d)

    d = fresh()
    p = d / "layer0" / "mlp_down.hex"
    lines = p.read_text().splitlines()
    lines[0] = "00000002"  # code 0b10 is not a ternary code
    p.write_text("\n".join(lines) + "\n")
    resign(d, "layer0/mlp_down.hex")
    with pytest.raises(ExportError, match=r"layer0.*invalid code 0b10 at bits \[1:0\]"):
        load_export(d)

    d = fresh()
    p = d / "layer0" / "mlp.json"
    cfg = json.loads(p.read_text())
    cfg["d_hidden"] = 32
    p.write_text(json.dumps(cfg))
    resign(d, "layer0/mlp.json")
    with pytest.raises(ExportError):
        load_export(d)

    d = fresh()
    p = d / "layer0" / "attention_head0.json"
    cfg = json.loads(p.read_text())
    cfg["temperature"] *= 2
    p.write_text(json.dumps(cfg))
    resign(d, "layer0/attention_head0.json")
    with pytest.raises(ExportError, match="does not hold the table"):
        load_export(d)

    d = fresh()
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 7
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="unknown format version 7"):
        load_export(d)


def _rom_inits(verilog: str) -> list[dict[int, int]]:
    """Initial contents of every 32-bit memory in a Verilog file, per (module, memory)."""
    import re

    mems: dict[tuple[str, str], dict[int, int]] = {}
    module = ""
    for line in verilog.splitlines():
        if line.startswith("module "):
            module = line.split()[1]
        m = re.match(r"\s*(\\\S+|\w+)\s*\[(\d+)\] = 32'd(\d+);", line)
        if m:
            mems.setdefault((module, m.group(1)), {})[int(m.group(2))] = int(m.group(3))
    return list(mems.values())


def test_rtl_of_an_export(exported, tmp_path):
    from hadware.sw.export import generate_model
    from hadware.sw.rom import read_hex

    out = tmp_path / "rtl"
    r = generate_model(exported, out)
    names = [b["name"] for b in r["blocks"]]
    assert names == ["layer0_head0", "layer0_head1", "layer0_mlp",
                     "layer1_head0", "layer1_head1", "layer1_mlp"][:len(names)]
    assert json.loads((out / "model.json").read_text()) == r
    assert all(b["lint_warnings"] == [] for b in r["blocks"])
    # The MLP's weight ROMs carry the exported images, word for word.
    manifest = json.loads((exported / "manifest.json").read_text())
    inits = _rom_inits((out / "layer0_mlp" / "mlp.v").read_text())
    for rom in ("gate_up", "down"):
        words = read_hex(exported / "layer0" / f"mlp_{rom}.hex", 32,
                         manifest["layers"][0]["mlp_rom_words"][rom])
        assert any([mem.get(i, 0) for i in range(len(words))] == words for mem in inits), rom


def test_run_on_golden_models(exported):
    from hadware.sw.run import run_exported

    r = run_exported(exported, golden=True, samples=6, progress=False)
    assert r["samples"] == 6 and 0.0 <= r["golden_accuracy"] <= 1.0


def _logit_exact(folder):
    from hadware.sw.run import run_exported

    r = run_exported(folder, both=True, samples=3, progress=False)
    layers = len(load_export(folder).attention)
    heads = len(load_export(folder).attention[0])
    assert r["blocks_compared"] == layers * (heads + 1)
    return r


@pytest.mark.sim
def test_one_block_each_on_simulated_hardware_is_logit_exact(exported_one_block_each):
    r = _logit_exact(exported_one_block_each)
    assert r["blocks_compared"] == 2
    assert r["first_block_mismatch"] is None and r["logits_equal"] is True
    assert r["hw_matches_golden"] is True and r["prediction_mismatches"] == 0
    assert r["verilator_accuracy"] == r["golden_accuracy"]


@pytest.mark.sim
@pytest.mark.full
def test_run_on_simulated_hardware_is_logit_exact(exported):
    """Two layers of two heads (six Verilator runs, four minutes)."""
    r = _logit_exact(exported)
    assert r["first_block_mismatch"] is None and r["logits_equal"] is True
    assert r["hw_matches_golden"] is True and r["prediction_mismatches"] == 0
    assert r["verilator_accuracy"] == r["golden_accuracy"]


class _OneLsbOff:
    """The golden models with one element of one block's output changed by one unit."""

    name = "perturbed"

    def __init__(self, calls_before: int, at: tuple[int, ...]):
        from hadware.sw.run import GoldenBackend

        self.inner, self.calls_before, self.at, self.calls = GoldenBackend(), calls_before, at, 0

    def _maybe(self, out):
        self.calls += 1
        if self.calls == self.calls_before + 1:
            out = out.copy()
            out[self.at] += 1
        return out

    def attention(self, cfg, q, k, v):
        return self._maybe(self.inner.attention(cfg, q, k, v))

    def mlp(self, cfg, weights, x):
        return self._maybe(self.inner.mlp(cfg, weights, x))


def test_the_first_mismatching_block_sample_and_element_are_named(exported):
    from hadware.sw.run import BlockTrace, GoldenBackend, _test_set, forward

    model = load_export(exported)
    x, _ = _test_set(model.manifest["task"], 3)
    ref = BlockTrace(GoldenBackend())
    forward(model, x, ref, progress=False)
    # One unit of the last place in layer 0, head 1, sample 2, query 1, column 0.
    bad = BlockTrace(_OneLsbOff(1, (2, 1, 0)), reference=ref)
    forward(model, x, bad, progress=False)
    assert re.fullmatch(r"layer 0 head 1: sample 2, element \[1, 0\]: perturbed -?\d+, golden "
                        r"-?\d+ \(1 elements differ\)", bad.first_mismatch)
    same = BlockTrace(GoldenBackend(), reference=ref)
    forward(model, x, same, progress=False)
    assert same.first_mismatch is None and len(same.outputs) == len(ref.outputs)


# -- the export folder is untrusted input --------------------------------------------------


def _tampered(exported, tmp_path, change) -> object:
    """A copy of the export whose manifest ``change(m)`` edits (in place)."""
    d = tmp_path / "t"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(exported, d)
    m = json.loads((d / "manifest.json").read_text())
    change(m)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def _set(path: str, value):
    def change(m):
        *parents, last = path.split(".")
        for key in parents:
            m = m[int(key)] if isinstance(m, list) else m[key]
        if value is _DELETE:
            del m[last]
        else:
            m[last] = value
    return change


_DELETE = object()


def _host_unlisted(m):
    del m["files"]["host.npz"]


def _no_bytes(m):
    del m["files"]["host.npz"]["bytes"]


def _outside(m):
    m["files"]["../../../etc/hostname"] = {"sha256": "0" * 64, "bytes": 1}


@pytest.mark.parametrize(("change", "pattern"), [
    (_set("layers", _DELETE), r"manifest\.json': layers is missing$"),
    (_set("files", ["host.npz"]), r"manifest\.json': files must be an object, not a list$"),
    (_no_bytes, r"manifest\.json': files\['host\.npz'\]\.bytes is missing$"),
    (_set("layers.0.mlp", []), r"manifest\.json': layers\[0\]\.mlp must be an object, "
                               r"not a list$"),
    (_set("layers.0.mlp_rom_words.down", "12"), r"layers\[0\]\.mlp_rom_words\.down must be "
                                                r"an integer, not a string$"),
    (_set("task", 3), r"task must be a string or null, not an integer$"),
    (_set("extra", 1), r"manifest\.json': extra is not a known key"),
    (_set("model", {"seq_len": 4}), r"manifest\.json': model: "),
    (_outside, r"manifest\.json': file '\.\./\.\./\.\./etc/hostname' is outside the export "
               r"folder \(refused\)$"),
    (_host_unlisted, r"file '.*host\.npz' is not listed in the manifest, so its checksum "
                     r"cannot be checked$"),
], ids=["no-layers", "files-list", "no-bytes", "mlp-list", "words-str", "task-int", "extra-key",
        "bad-model", "outside", "host-unlisted"])
def test_bad_manifests_are_refused(exported, tmp_path, capsys, change, pattern):
    from hadware.cli import main

    d = _tampered(exported, tmp_path, change)
    with pytest.raises(ExportError, match=pattern):
        load_export(d)
    rc = main(["run", str(d), "--golden", "--samples", "1", "--out", str(tmp_path / "r.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("hadware: error: ")
    assert not (tmp_path / "r.json").exists()


def test_a_symbolic_link_out_of_the_folder_is_refused(exported, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(exported, d)
    (tmp_path / "elsewhere.npz").write_bytes((d / "host.npz").read_bytes())
    (d / "host.npz").unlink()
    (d / "host.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(ExportError, match=r"file 'host\.npz' is outside the export folder"):
        load_export(d)


def test_a_manifest_copy_that_differs_from_the_config_file(exported, tmp_path):
    d = _tampered(exported, tmp_path, lambda m: m["layers"][0]["mlp"].update(lanes=1))
    with pytest.raises(ExportError, match=r"mlp\.json' differs from its copy in the manifest"):
        load_export(d)


def test_export_lanes_out_of_range(trained, tmp_path, capsys):
    from hadware.cli import main

    for lanes in ("1000", "0"):
        assert main(["export", str(trained / "student.pt"), "--out", str(tmp_path / "e"),
                     "--lanes", lanes]) == 1
        assert capsys.readouterr().err.strip() == (
            "hadware: error: --lanes must be an integer between 1 and 16 (min(n_max, 64), "
            f"n_max = 16 keys per attention row), not {lanes}")
        assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("samples", ["0", "-350", "100000"])
def test_run_samples_out_of_range(exported, tmp_path, capsys, samples):
    from hadware.cli import main

    out = tmp_path / "r.json"
    assert main(["run", str(exported), "--golden", "--samples", samples, "--out",
                 str(out)]) == 1
    assert re.fullmatch(rf"hadware: error: --samples must be an integer between 1 and \d+ "
                        rf"\(the test samples of task digits\), not {samples}",
                        capsys.readouterr().err.strip())
    assert not out.exists()


def test_run_out_in_a_missing_folder(exported, tmp_path, capsys):
    from hadware.cli import main

    assert main(["run", str(exported), "--golden", "--samples", "1", "--out",
                 str(tmp_path / "no" / "r.json")]) == 1
    assert re.fullmatch(r"hadware: error: --out '.*no/r\.json': folder '.*no' does not exist",
                        capsys.readouterr().err.strip())
    assert not (tmp_path / "no").exists()
