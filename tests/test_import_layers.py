"""The package layout is layered: a module-level import only goes to a lower layer (no package cycles).

Imports inside functions (lazy imports of heavy or optional parts) and under ``TYPE_CHECKING`` are
not counted: they do not run at import time. The layers are drawn in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "recapture"

# lowest first; a package may import (at module level) only from packages of an earlier layer
LAYERS: list[set[str]] = [
    {"utils"},
    {"checksums", "caching", "host_memory", "hub", "io", "cameras", "depth", "metrics"},
    {"anchor", "adaptation"},
    {"sampling"},
    {"data"},
    {"benchmark"},
    {"training"},
    {"commands"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "recapture" and len(parts) > 1 else None


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recapture"):
            if node.module == "recapture":  # from recapture import caching
                found += [(f"recapture.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("recapture.")]
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
                if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.stem != "__init__")}
    packages -= {"__main__"}
    assert packages - set(RANK) == set(), "add new packages to LAYERS (and docs/architecture.md)"


def test_module_level_imports_go_down_the_layers() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        src = rel.parts[0].removesuffix(".py")
        if src == "__init__":
            continue
        for module, line in _module_level_imports(path):
            dst = _top(module)
            if dst is None or dst == src or dst not in RANK or src not in RANK:
                continue
            if RANK[dst] >= RANK[src]:
                bad.append(f"{rel}:{line} imports {module} (layer {RANK[dst]} >= {src}'s {RANK[src]})")
    assert not bad, "\n".join(bad)


def _all_imports(path: Path) -> list[tuple[str, int]]:
    """Every import in a module, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def test_only_training_imports_lightning() -> None:
    """Stages below ``training`` are plain torch: not even a lazy import of Lightning elsewhere."""
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for path in sorted(ROOT.rglob("*.py")) if path.relative_to(ROOT).parts[0] not in ("training", "cli.py")
           for module, line in _all_imports(path) if module.split(".")[0] in ("lightning", "pytorch_lightning")]
    assert not bad, "\n".join(bad)
    assert any(m.startswith("lightning") for m, _ in _all_imports(ROOT / "training" / "module.py"))  # the check sees imports
