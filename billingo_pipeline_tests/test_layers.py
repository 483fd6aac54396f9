"""Lower layers never import higher ones, read from the source with ``ast`` (nothing is imported).

From the bottom: the warehouse package, the normalization it builds its columns from, and the
simulator; the plain rules and I/O (client,
normalization, sync, health rules, redaction, alerts, reporting queries); the Dagster layer
(resources, partitions, asset keys, ``defs/``); the runner that drives ``dg.materialize``; the
CLI and the demo on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "billingo_pipeline"
ROOT = "billingo_pipeline"

# Layer of each module, by the longest matching prefix; a higher number may import a lower one.
LAYERS = {
    "billingo_pipeline.simulator": 0,
    "billingo_pipeline.warehouse": 0,
    "billingo_pipeline.settings": 0,
    "billingo_pipeline.iterables": 0,
    # Pure payload -> row functions; the schema takes its columns' limits from their field mapping.
    "billingo_pipeline.normalize": 0,
    # The canonical JSON text change hashes and the raw JSON column are written from.
    "billingo_pipeline.canonical_json": 0,
    "billingo_pipeline": 1,  # every other top-level module: plain code, no Dagster, no click
    "billingo_pipeline.asset_keys": 2,
    "billingo_pipeline.partitions": 2,
    "billingo_pipeline.table_metadata": 2,  # the tables' column schema as Dagster metadata
    "billingo_pipeline.resources": 2,
    "billingo_pipeline.defs": 2,
    "billingo_pipeline.definitions": 2,
    "billingo_pipeline.runner": 3,
    "billingo_pipeline.cli": 4,
    "billingo_pipeline.terminal": 4,  # rich tables, colours and progress bars of the CLI
    "billingo_pipeline.demo": 4,
}
LAYER_NAMES = {0: "warehouse/simulator", 1: "plain code", 2: "Dagster", 3: "runner", 4: "CLI"}
# Third-party packages each layer may not import at all.
FORBIDDEN = {
    0: {"dagster", "click", "pandas", "matplotlib"},
    1: {"dagster", "click", "matplotlib"},
    2: {"click"},
    3: {"click"},
}
# Modules that may not import pandas either: the health rules the checks and sensors build on.
NO_PANDAS = ("billingo_pipeline.health", "billingo_pipeline.defs.billingo.checks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), whatever the nesting."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path)
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from . import settings` imports a module, not a name.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(matches, key=len)]


MODULES = {
    _module_name(path): _imports(path)
    for path in sorted(PACKAGE.rglob("*.py"))
    if "migrations" not in path.parts
}
OWN_MODULES = set(MODULES)


def _own(imported: str) -> str | None:
    """The package module an import refers to (``from .x import name`` names x), or None."""
    while imported and imported not in OWN_MODULES:
        imported = imported.rpartition(".")[0]
    return imported or None


def test_the_walk_sees_the_package():
    assert {"billingo_pipeline.warehouse.sync_log", "billingo_pipeline.defs.billingo.sensors", "billingo_pipeline.cli"} <= OWN_MODULES
    assert "billingo_pipeline.health" in MODULES["billingo_pipeline.defs.billingo.checks"] or any(
        _own(i) == "billingo_pipeline.health" for i in MODULES["billingo_pipeline.defs.billingo.checks"]
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
    layer = _layer(module)
    upward = sorted(
        {own for imported in MODULES[module] if (own := _own(imported)) and _layer(own) > layer}
    )
    assert not upward, f"{module} ({LAYER_NAMES[layer]}) imports higher layers: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_library_its_layer_must_not(module):
    forbidden = set(FORBIDDEN.get(_layer(module), ()))
    if module in NO_PANDAS:
        forbidden.add("pandas")
    used = sorted({imported.split(".")[0] for imported in MODULES[module]} & forbidden)
    assert not used, f"{module} imports {used}"


def test_the_simulator_imports_no_pipeline_code():
    for module, imports in MODULES.items():
        if module.startswith(f"{ROOT}.simulator"):
            outside = sorted({own for i in imports if (own := _own(i)) and not own.startswith(f"{ROOT}.simulator")})
            assert not outside, f"{module} imports pipeline code: {outside}"


def test_the_warehouse_imports_only_itself_the_settings_and_the_normalization():
    allowed = {f"{ROOT}.settings", f"{ROOT}.normalize", f"{ROOT}.canonical_json"}
    for module, imports in MODULES.items():
        if module.startswith(f"{ROOT}.warehouse"):
            outside = sorted(
                {own for i in imports if (own := _own(i)) and not own.startswith(f"{ROOT}.warehouse") and own not in allowed}
            )
            assert not outside, f"{module} imports {outside}"


def test_only_the_cli_layer_imports_the_cli():
    for module, imports in MODULES.items():
        if _layer(module) < 4:
            assert not any((_own(i) or "").startswith(f"{ROOT}.cli") for i in imports), module
