"""The layering rules of docs/architecture.md, read from the import statements of the sources themselves."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRANSPORT_MODULES = {"gadgetron", "socket", "socketserver", "gadgets.protocol", "gadgets.gadget", "gadgets.server",
                     "gadgets.replay", "gadgets.wire"}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                names.add(module)
                if node.module is None:                                    # from . import assembly, images
                    names.update(f"{base}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def _within(name: str, roots) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


@pytest.mark.timeout(60)
def test_imported_modules_resolves_relative_imports():
    """The reader itself, on a file whose imports are known."""
    assert {"gadgets.assembly", "gadgets.images", "gadgets.config", "numpy", "gadgets"} <= \
        imported_modules(REPO / "gadgets" / "pipeline.py")


@pytest.mark.timeout(60)
def test_dpm_core_imports_neither_gadgets_nor_training():
    for path in sorted((REPO / "dpm_core").rglob("*.py")):
        bad = [m for m in imported_modules(path) if _within(m, ("gadgets", "training"))]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.timeout(60)
def test_gadgets_never_import_training():
    for path in sorted((REPO / "gadgets").rglob("*.py")):
        bad = [m for m in imported_modules(path) if _within(m, ("training",))]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["pipeline", "config", "assembly", "images", "mrd_io"])
def test_pipeline_and_format_layer_import_no_transport(module):
    """The one pipeline and what it stands on know no socket, no protocol and no transport: every transport is an
    adapter over them."""
    path = REPO / "gadgets" / f"{module}.py"
    bad = [m for m in imported_modules(path) if _within(m, TRANSPORT_MODULES)]
    assert not bad, f"gadgets/{module}.py imports transport module(s) {bad}"
