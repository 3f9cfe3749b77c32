"""The dependency rule of CONTRIBUTING.md, held on every module's imports (lazy ones too).

Layers by folder: ``hadware/spec`` (numpy-only contracts), ``hadware/config``, ``hw``,
``golden``, ``tb``, ``synth``, ``sw`` and the rest of ``hadware`` (command line, registry).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hadware.blocks import BLOCKS

ROOT = Path(__file__).resolve().parents[1]

#: Folder of each layer, relative to the repository.
FOLDERS = {"spec": "hadware/spec", "config": "hadware/config", "hw": "hw", "golden": "golden",
           "tb": "tb", "synth": "synth", "sw": "sw"}

#: What each layer must not import: other layers, or third-party packages.
FORBIDDEN = {
    "hw": {"golden", "tb", "sw", "synth", "torch"},
    "golden": {"tb", "sw", "hw", "synth", "amaranth"},
    "synth": {"golden", "torch"},
    "config": {"hw", "golden", "tb", "synth", "sw", "torch", "amaranth"},
    # The spec layer: numpy, the standard library, hadware.errors and itself only.
    "spec": {"hw", "golden", "tb", "synth", "sw", "config", "cli", "blocks", "torch",
             "amaranth", "cocotb"},
}


def layer_of_module(name: str) -> str | None:
    """The layer an imported module belongs to (a top-level package name for others)."""
    parts = name.split(".")
    if parts[0] != "hadware":
        return parts[0]
    if len(parts) == 1:
        return "hadware"
    return parts[1]


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """Nodes under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    skip: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(ast.walk(child))
    return skip


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``path`` run at import or call time
    (type-checking-only imports left out)."""
    out = []
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_only(tree)
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "hadware":  # from hadware import golden
                out += [(node.lineno, f"hadware.{a.name}") for a in node.names]
    return out


def violations(root: Path) -> list[str]:
    """Every forbidden arrow below ``root``, as ``file:line: layer imports module``."""
    found = []
    for layer, folder in FOLDERS.items():
        for path in sorted((root / folder).glob("*.py")):
            for line, module in imports(path):
                target = layer_of_module(module)
                if target in FORBIDDEN.get(layer, set()):
                    found.append(f"{path.relative_to(root)}:{line}: {layer} imports {module}")
    return found


def test_the_tree_keeps_the_rule():
    assert violations(ROOT) == []


def test_a_forbidden_import_is_named_with_file_and_line(tmp_path):
    for folder in FOLDERS.values():
        shutil.copytree(ROOT / folder, tmp_path / folder)
    victim = tmp_path / "hw" / "attention.py"
    lines = victim.read_text().splitlines()
    lines.append("from hadware.golden.attention_core import reciprocal")
    victim.write_text("\n".join(lines) + "\n")
    spec = tmp_path / "hadware" / "spec" / "softmax.py"
    spec.write_text(spec.read_text() + "\n\ndef _late():\n    import torch  # noqa\n")
    found = violations(tmp_path)
    assert f"hw/attention.py:{len(lines)}: hw imports hadware.golden.attention_core" in found
    assert any(f.startswith("hadware/spec/softmax.py:") and f.endswith("spec imports torch")
               for f in found)
    assert len(found) == 2


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                          "print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


@pytest.mark.parametrize("block", [n for n, b in BLOCKS.items() if not b.extras])
def test_generating_verilog_does_not_import_torch(block):
    mods = _modules_after(
        "from amaranth.back import verilog\n"
        "from hadware.blocks import get_block\n"
        f"b = get_block({block!r})\n"
        "verilog.convert(b.component_class()(b.config_class()()), name='top')\n")
    assert "torch" not in mods
    assert not any(m.startswith(("hadware.golden", "hadware.sw", "hadware.tb")) for m in mods)


def test_the_spec_layer_imports_only_numpy():
    mods = _modules_after("import hadware.spec.softmax, hadware.spec.attention_vectors, "
                          "hadware.spec.widths")
    assert not {"torch", "amaranth"} & mods
