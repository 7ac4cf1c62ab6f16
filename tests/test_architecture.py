"""The package's layout rules (docs/architecture.md), checked on the source so that they stay true."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ioi_anti"

# Each top-level module or package of ioi_anti, by layer: a module may import its own layer and those below,
# never one above (tasks and measure share a layer: a task may define a per-head score with the ablation hooks,
# and the sweep runs tasks).
LAYERS = {
    "params": -1, "models": 0, "execution": 1, "tasks": 2, "measure": 2, "analysis": 3, "hero": 4, "figures": 5,
    "report": 6, "toy": 7, "run": 8, "pipelines": 9, "settings": 10, "pipeline_registry": 10, "__main__": 10,
    "__init__": 10,
}


def _part(module: str) -> str:
    """The top-level part of ``ioi_anti`` a dotted module name belongs to."""
    return module.split(".")[1]


def _imports(path: Path) -> list[str]:
    """Every ``ioi_anti`` module a file imports (``from ioi_anti import x`` counts as ``ioi_anti.x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ioi_anti":
            if node.module == "ioi_anti":
                found += [f"ioi_anti.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("ioi_anti.")]
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(("ioi_anti", *path.relative_to(PACKAGE).with_suffix("").parts)), path)
            for path in sorted(PACKAGE.rglob("*.py"))]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {_part(module) for module, _ in _modules() if module.count(".")}
    assert parts <= set(LAYERS), f"add {sorted(parts - set(LAYERS))} to LAYERS and to docs/architecture.md"


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_imports_a_layer_above_its_own(module: str, path: Path) -> None:
    own = LAYERS[_part(module)]
    above = [name for name in _imports(path) if LAYERS[_part(name)] > own]
    assert not above, f"{module} (layer {own}) imports {above} from above it"


def test_no_pipeline_imports_another_pipeline() -> None:
    for module, path in _modules():
        if not module.startswith("ioi_anti.pipelines."):
            continue
        own = module.split(".")[2]
        others = [name for name in _imports(path)
                  if name.startswith("ioi_anti.pipelines.") and name.split(".")[2] != own]
        assert not others, f"{module} imports {others}"


def test_node_files_hold_nothing_but_their_pipeline_s_nodes() -> None:
    """Library code lives in the library: every function of a ``nodes.py`` is a node of its own pipeline."""
    for nodes_file in sorted(PACKAGE.glob("pipelines/*/nodes.py")):
        name = nodes_file.parent.name
        pipeline = importlib.import_module(f"ioi_anti.pipelines.{name}").create_pipeline()
        used = {node.func.__name__ for node in pipeline.nodes}
        defined = {node.name for node in ast.parse(nodes_file.read_text()).body if isinstance(node, ast.FunctionDef)}
        assert defined <= used, f"{name}/nodes.py defines {sorted(defined - used)}, which no node runs: move them to " \
                                "the library"
