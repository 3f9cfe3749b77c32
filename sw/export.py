"""Export a trained student into hardware images, and load an export back (never
re-quantizing).

``hadware export CHECKPOINT --out DIR`` writes one folder (atomically, see
:func:`hadware.sw.rom.write_folder`)::

    manifest.json                 format version, task, model config, every block config,
                                  scales, packing layout, size and sha256 of every file
    host.npz                      float parameters the host runs: embeddings, norms, Q/K/V and
                                  output projections, classifier head
    layer<i>/attention_head<h>.json       AttentionConfig of one head (its temperature)
    layer<i>/attention_head<h>_exp_lut.{hex,mif,coe}   the softmax table ROM of that head
    layer<i>/mlp.json                     MlpConfig
    layer<i>/mlp_gate_up.{hex,mif,coe}    ternary codes, packing layout v1, 32-bit words
    layer<i>/mlp_down.{hex,mif,coe}
    layer<i>/mlp_constants.json           betas and RMSNorm gains of the two BitLinear layers

Loading (:func:`load_export`) treats the folder as untrusted: it checks the manifest against
its schema (:data:`MANIFEST_SCHEMA`, every key and type), its version, that every listed path
stays inside the folder, sizes and sha256; it reads only files the manifest lists; it checks
every config (and that it equals its copy in the manifest), the ROM image shapes and codes, and
that each table image equals the table its config generates. Any problem is an
:class:`~hadware.sw.rom.ExportError` naming the file (and the key).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hadware.config.attention import AttentionConfig
from hadware.config.base import check_int
from hadware.config.mlp import MlpConfig
from hadware.errors import HadwareError, InputError
from hadware.sw.rom import (
    ExportError,
    MapOf,
    check_schema,
    read_hex,
    verify_folder,
    write_coe,
    write_folder,
    write_hex,
    write_mif,
)

__all__ = ["ExportedModel", "export_checkpoint", "generate_model", "load_export",
           "model_blocks"]

OUT_FRAC_BITS = 8


def _images(folder: Path, stem: str, words: list[int], width: int) -> None:
    write_hex(folder / f"{stem}.hex", words, width)
    write_mif(folder / f"{stem}.mif", words, width)
    write_coe(folder / f"{stem}.coe", words, width)


def attention_config(head_dim: int, n_max: int, top_k: int, temperature: float,
                     lanes: int = 4) -> AttentionConfig:
    """Hardware config of one head: ``exp_frac_bits`` is the smallest that keeps the output
    within one unit of the last place of the exact softmax (``2**(F - O) >= 291.43 (k - 1)``).
    ``top_k`` and ``lanes`` out of range are errors of :class:`AttentionConfig`, not capped."""
    need = 0 if top_k <= 1 else math.ceil(math.log2(291.43 * (top_k - 1)))
    return AttentionConfig(d=head_dim, n_max=n_max, top_k=top_k, d_v=head_dim,
                           lanes=lanes, temperature=float(temperature),
                           exp_frac_bits=min(24, max(1, OUT_FRAC_BITS + need)),
                           out_frac_bits=OUT_FRAC_BITS)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, task: str | None = None,
                      lanes: int = 4, mlp_lanes: int = 64) -> dict[str, Any]:
    """Write the export folder of a student checkpoint (HAD attention, ternary MLPs).
    ``lanes``: keys scored per cycle by each attention core, 1 to ``min(n_max, 64)`` (a
    ``ValueError`` naming ``--lanes`` otherwise); ``mlp_lanes``: ternary weights per cycle of
    each MLP (the largest common divisor of it and the MLP's sizes)."""
    from hadware.spec.mlp import quantize_weights
    from hadware.sw.models import Encoder

    checkpoint = Path(checkpoint)
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = Encoder.from_checkpoint(ckpt)
    except FileNotFoundError:
        raise HadwareError(f"checkpoint {str(checkpoint)!r} does not exist") from None
    except Exception as e:  # a file that is not one of our checkpoints
        raise HadwareError(f"checkpoint {str(checkpoint)!r} cannot be loaded: {e}") from None
    mc = model.config
    if mc.attention != "had":
        raise HadwareError(f"checkpoint {str(checkpoint)!r} has {mc.attention} attention; "
                           "export needs a HAD student (student.pt of 'hadware train')")
    metrics_path = checkpoint.with_name("metrics.json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    task = task or metrics.get("task")
    n_max = mc.n_keys
    lanes_max = min(n_max, 64)
    check_int("--lanes", lanes, lo=1, hi=lanes_max, what=f"an integer between 1 and "
              f"{lanes_max} (min(n_max, 64), n_max = {n_max} keys per attention row)")
    temps = model.temperatures()
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    mlp_keys = {k for k in state if ".mlp." in k}

    def fill(tmp: Path) -> dict[str, Any]:
        np.savez(tmp / "host.npz", **{k: v for k, v in state.items() if k not in mlp_keys})
        layers = []
        for i in range(len(model.blocks)):
            ld = tmp / f"layer{i}"
            ld.mkdir()
            heads = []
            for h in range(mc.n_heads):
                cfg = attention_config(mc.head_dim, n_max, mc.top_k or n_max, temps[i][h],
                                       lanes)
                cfg.save(ld / f"attention_head{h}.json")
                _images(ld, f"attention_head{h}_exp_lut", list(cfg.lut), cfg.lut_width)
                heads.append(cfg.to_dict())
            mcfg = MlpConfig(d_model=mc.d_model, d_hidden=mc.mlp_hidden,
                             lanes=math.gcd(mlp_lanes, math.gcd(mc.d_model, mc.mlp_hidden)))
            mcfg.save(ld / "mlp.json")
            w = quantize_weights(mcfg, {
                "w_gate_up": state[f"blocks.{i}.mlp.gate_up.weight"],
                "w_down": state[f"blocks.{i}.mlp.down.weight"],
                "g_gate_up": state[f"blocks.{i}.mlp.gate_up.gain"],
                "g_down": state[f"blocks.{i}.mlp.down.gain"],
            })
            exp = w.export()
            consts = {}
            for name in ("gate_up", "down"):
                _images(ld, f"mlp_{name}", [int(x) for x in exp[f"rom_{name}"]], 32)
                consts[f"beta_{name}"] = float(exp[f"beta_{name}"])
                consts[f"g_{name}"] = [float(x) for x in exp[f"g_{name}"]]
            (ld / "mlp_constants.json").write_text(json.dumps(consts, indent=1) + "\n")
            layers.append({"attention_heads": heads, "mlp": mcfg.to_dict(),
                           "mlp_rom_words": {n: len(exp[f"rom_{n}"]) for n in
                                             ("gate_up", "down")}})
        return {
            "task": task,
            "model": mc.to_dict(),
            "float_metrics": {k: metrics[k] for k in ("teacher_accuracy", "student_accuracy",
                                                      "student_ternary_accuracy")
                              if k in metrics},
            "packing_layout": {"version": int(exp["layout_version"]), "word_bits": 32,
                               "codes": "2-bit two's complement: 00=0, 01=+1, 11=-1, 10 invalid",
                               "order": "row-major, 16 codes per word, code j at bits 2j+1:2j"},
            "value_scaling": "per sample and head: v_int8 = round(v * 127 / max|v|)",
            "out_frac_bits": OUT_FRAC_BITS,
            "layers": layers,
        }

    return write_folder(Path(out), fill)


#: The manifest's body as :func:`export_checkpoint` writes it (the schema language is that of
#: :func:`hadware.sw.rom.check_schema`; ``format_version`` and ``files`` are the folder's).
MANIFEST_SCHEMA: dict[str, Any] = {
    "task": (str, None),
    "model": dict,  # a ModelConfig, checked by it
    "float_metrics": MapOf(float),
    "packing_layout": {"version": int, "word_bits": int, "codes": str, "order": str},
    "value_scaling": str,
    "out_frac_bits": int,
    "layers": [{
        "attention_heads": [dict],  # AttentionConfigs, equal to the head's file
        "mlp": dict,  # an MlpConfig, equal to mlp.json
        "mlp_rom_words": {"gate_up": int, "down": int},
    }],
}

#: ``layer<i>/mlp_constants.json``.
MLP_CONSTANTS_SCHEMA: dict[str, Any] = {
    "beta_gate_up": float, "g_gate_up": [float], "beta_down": float, "g_down": [float]}


@dataclasses.dataclass
class ExportedModel:
    folder: Path
    manifest: dict[str, Any]
    host: dict[str, np.ndarray]
    attention: list[list[AttentionConfig]]
    mlp: list[Any]  # MlpWeights per layer

    @property
    def model_config(self):
        from hadware.sw.models import ModelConfig

        return ModelConfig.from_dict(self.manifest["model"])


def _load_json(path: Path, schema: Any) -> Any:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{str(path)!r} is not valid JSON ({getattr(e, 'msg', e)})") from None
    check_schema(data, schema, repr(str(path)))
    return data


def _listed(folder: Path, manifest: dict[str, Any], rel: str) -> Path:
    """``folder / rel``, a file the loader reads: it must be listed in the manifest (and so
    have been checked by :func:`verify_folder`)."""
    if rel not in manifest["files"]:
        raise ExportError(f"file {str(folder / rel)!r} is not listed in the manifest, so its "
                          f"checksum cannot be checked")
    return folder / rel


def _config(cls: Any, path: Path) -> Any:
    try:
        return cls.load(path)
    except (TypeError, ValueError, HadwareError) as e:
        raise ExportError(str(e)) from None


def _check_copy(path: Path, cfg: Any, listed: Any) -> None:
    if listed != cfg.to_dict():
        raise ExportError(f"{str(path)!r} differs from its copy in the manifest")


def load_export(folder: str | Path) -> ExportedModel:
    """Load and check an export folder (see the module docstring)."""
    from hadware.spec.mlp import load_exported
    from hadware.sw.models import ModelConfig
    from hadware.vectors import load_npz

    folder = Path(folder)
    manifest = verify_folder(folder, MANIFEST_SCHEMA)
    mfile = repr(str(folder / "manifest.json"))
    try:
        mc = ModelConfig.from_dict(manifest["model"])
    except (TypeError, ValueError, KeyError) as e:
        raise ExportError(f"{mfile}: model: {e}") from None
    layers = manifest["layers"]
    if len(layers) != mc.n_layers or any(len(ly["attention_heads"]) != mc.n_heads
                                         for ly in layers):
        raise ExportError(f"{mfile}: layers must hold {mc.n_layers} layer(s) of {mc.n_heads} "
                          f"attention head(s), as the model config says")
    try:
        host = load_npz(_listed(folder, manifest, "host.npz"), what="host file")
    except InputError as e:
        raise ExportError(str(e)) from None
    attention, mlps = [], []
    for i, layer in enumerate(layers):
        heads = []
        for h, listed in enumerate(layer["attention_heads"]):
            p = _listed(folder, manifest, f"layer{i}/attention_head{h}.json")
            cfg = _config(AttentionConfig, p)
            img = _listed(folder, manifest, f"layer{i}/attention_head{h}_exp_lut.hex")
            if read_hex(img, cfg.lut_width, cfg.lut_depth) != list(cfg.lut):
                raise ExportError(f"ROM image {str(img)!r} does not hold the table of "
                                  f"{p.name} (temperature {cfg.temperature})")
            _check_copy(p, cfg, listed)
            heads.append(cfg)
        p = _listed(folder, manifest, f"layer{i}/mlp.json")
        mcfg = _config(MlpConfig, p)
        _check_copy(p, mcfg, layer["mlp"])
        consts = _load_json(_listed(folder, manifest, f"layer{i}/mlp_constants.json"),
                            MLP_CONSTANTS_SCHEMA)
        arrays: dict[str, Any] = {"layout_version": np.array(
            manifest["packing_layout"]["version"])}
        for name in ("gate_up", "down"):
            depth = layer["mlp_rom_words"][name]
            img = _listed(folder, manifest, f"layer{i}/mlp_{name}.hex")
            arrays[f"rom_{name}"] = np.array(read_hex(img, 32, depth), dtype=np.uint32)
            arrays[f"beta_{name}"] = np.array(consts[f"beta_{name}"])
            arrays[f"g_{name}"] = np.array(consts[f"g_{name}"])
        try:
            mlps.append(load_exported(mcfg, arrays))
        except HadwareError as e:
            raise ExportError(f"{str(folder / f'layer{i}')!r}: {e}") from None
        attention.append(heads)
    return ExportedModel(folder=folder, manifest=manifest, host=host, attention=attention,
                         mlp=mlps)


def model_blocks(model: ExportedModel) -> list[tuple[str, Any, dict | None, str]]:
    """The hardware blocks of an exported model, in layer order: ``(block, config, extras,
    name)`` with names ``layer<i>_head<h>`` and ``layer<i>_mlp``."""
    blocks: list[tuple[str, Any, dict | None, str]] = []
    for i, heads in enumerate(model.attention):
        for h, cfg in enumerate(heads):
            blocks.append(("attention", cfg, None, f"layer{i}_head{h}"))
        blocks.append(("mlp", model.mlp[i].cfg, {"weights": model.mlp[i].export()},
                       f"layer{i}_mlp"))
    return blocks


def generate_model(folder: str | Path, out_dir: str | Path, *, lint: bool = True
                   ) -> dict[str, Any]:
    """Verilog of every block of the export in ``folder`` (``hadware rtl``): ``out_dir/<name>/``
    holds ``<block>.v`` (the MLP's weight ROMs initialised from the export) and its
    description; each file is linted with the documented waivers. Writes and returns
    ``out_dir/model.json``: per block its name, block, config hash, files and lint warnings."""
    from hadware.config.base import atomic_write_text
    from hadware.hw.generate import generate
    from hadware.hw.generate import lint as run_lint

    model = load_export(folder)
    out_dir = Path(out_dir)
    rows = []
    for block, cfg, extras, name in model_blocks(model):
        paths = generate(block, cfg, out_dir / name, extras)
        warnings = run_lint(paths["verilog"], block) if lint else None
        rows.append({"name": name, "block": block, "config_hash": cfg.stable_hash(),
                     "verilog": str(paths["verilog"].relative_to(out_dir)),
                     "description": str(paths["description"].relative_to(out_dir)),
                     "lint_warnings": warnings})
    index = {"export": str(Path(folder).resolve()), "task": model.manifest.get("task"),
             "blocks": rows}
    atomic_write_text(out_dir / "model.json", json.dumps(index, indent=2) + "\n")
    return index
