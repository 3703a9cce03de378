"""The package's import graph: no circle, and no module importing a layer above its own (docs/INTERFACES.md).

Imports inside functions count: a lazy import is still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

from retinanet_testing import REPO

PACKAGE = REPO / "keras_retinanet"
# Layers from the bottom; a module's layer is its subpackage's (or its own name's), the model core by default.
LAYERS = {
    "data": 1,
    "detectors": 2,
    "evaluation": 3,
    "export": 3,
    "convert": 3,
    "training": 5,
    "cli": 6,
    "__main__": 6,
}


def _modules(package: Path) -> dict[str, Path]:
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts).removesuffix(".__init__")] = path
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (a package's ``__init__`` is its face and is skipped)."""
    modules = _modules(package)

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for module, path in modules.items():
        if path.name == "__init__.py":
            continue
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                internal = target.startswith("keras_retinanet.") and target != module
                if internal and modules[target].name != "__init__.py":
                    targets.add(target)
        graph[module] = targets
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Each import circle found by a depth-first walk, as ``a -> b -> a``."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(import_graph()) == []


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_checks_find_a_planted_circle_and_upward_import(tmp_path):
    package = tmp_path / "keras_retinanet"
    (package / "cli").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "cli/__init__.py": "",
        "anchors.py": "from keras_retinanet import boxes\n",
        "boxes.py": "def f():\n    from keras_retinanet.anchors import x\n",  # a lazy import counts
        "model.py": "import keras_retinanet.cli.train\n",
        "cli/train.py": "from keras_retinanet.model import RetinaNet\n",
    }.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert circles(graph) == [
        "keras_retinanet.anchors -> keras_retinanet.boxes -> keras_retinanet.anchors",
        "keras_retinanet.cli.train -> keras_retinanet.model -> keras_retinanet.cli.train",
    ]
    assert upward_imports(graph) == [
        "keras_retinanet.model (layer 0) imports keras_retinanet.cli.train (layer 6)"
    ]
