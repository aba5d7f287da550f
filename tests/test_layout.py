"""The house rules of ARCHITECTURE.md, checked on the source: imports point one way (core <-
features <- integrations <- apps), nothing in fhir_server imports an integration (plugins are
found by entry point, fhir_server/plugins.py), integrations write through the interactions and
never touch storage, and the modules form no import circle."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fhir_server"
PACKAGES = (PACKAGE, ROOT / "integrations", ROOT / "apps")
#: feature packages: the core may not import them
FEATURES = (
    "fhir_server.referral", "fhir_server.consultation", "fhir_server.auth", "fhir_server.audit",
    "fhir_server.subscriptions",
)  # fmt: skip
#: the wiring (app factory, console script, process set-up): may import everything
APPS = ("fhir_server.app", "fhir_server.cli", "fhir_server.serve")
INTEGRATIONS = ("integrations",)
#: the SMART apps (the top of the layers): nothing below imports them
SMART_APPS = ("apps",)
#: what an integration may not import: it writes through the interactions, like REST
STORAGE = ("fhir_server.storage",)
#: one backend: the layers above reach it through the contract (storage/contract.py), the
#: selector (storage/select.py) and the SQLite-only features (storage/features.py)
BACKENDS = ("fhir_server.storage.sqlite", "fhir_server.storage.mongo")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement (also inside functions), except typing-only ones."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    walk(other)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            walk(child)

    walk(tree)
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules an import statement loads (a `from x import y` counts y when y is a module)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = set()
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        as_path = ROOT / candidate.replace(".", "/")
        out.add(candidate if as_path.with_suffix(".py").exists() or as_path.is_dir() else target)
    return out


@cache  # one parse of the source for all the checks below (none changes the graph)
def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        module = _module(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in _runtime_imports(tree):
            targets |= _targets(module, path.name == "__init__.py", node)
        graph[module] = {
            t for t in targets if t.split(".")[0] in ("fhir_server", "integrations", "apps")
        }
    return graph


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_core_imports_no_feature_and_features_no_app_or_integration() -> None:
    wrong = []
    for module, targets in import_graph().items():
        if _within(module, APPS + INTEGRATIONS + SMART_APPS):
            continue
        for target in targets:
            if _within(module, FEATURES):
                if _within(target, APPS + INTEGRATIONS):
                    wrong.append(f"feature {module} imports {target}")
            elif _within(target, FEATURES + APPS + INTEGRATIONS):
                wrong.append(f"core module {module} imports {target}")
    assert wrong == []


def test_nothing_in_fhir_server_imports_an_integration() -> None:
    """Not even the wiring (app, console script, serve): plugins are found by entry point."""
    graph = import_graph()
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("fhir_server")
        for target in targets
        if _within(target, INTEGRATIONS)
    ]
    assert wrong == []


def test_nothing_below_the_apps_imports_them() -> None:
    """apps/ is the top layer: plugged in by entry point like the integrations."""
    graph = import_graph()
    assert any(_within(m, SMART_APPS) for m in graph), "the apps were not walked"
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not _within(module, SMART_APPS)
        for target in targets
        if _within(target, SMART_APPS)
    ]
    assert wrong == []


def test_the_apps_reach_data_through_features_never_storage() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if _within(module, SMART_APPS)
        for target in targets
        if _within(target, STORAGE + INTEGRATIONS)
    ]
    assert wrong == []


def test_integrations_write_through_the_interactions_never_storage() -> None:
    graph = import_graph()
    assert any(_within(m, INTEGRATIONS) for m in graph), "the integrations were not walked"
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if _within(module, INTEGRATIONS)
        for target in targets
        if _within(target, STORAGE + APPS)
    ]
    assert wrong == []


def test_nothing_above_storage_imports_a_backend() -> None:
    """Interactions, search, policy, features and the wiring know the storage contract, never
    which backend serves it (ARCHITECTURE.md, Storage): the backend is chosen by the setting;
    and only the selector loads the MongoDB backend (an optional extra) at all."""
    graph = import_graph()
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not _within(module, STORAGE)
        for target in targets
        if _within(target, BACKENDS)
    ]
    wrong += [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not _within(module, ("fhir_server.storage.mongo", "fhir_server.storage.select"))
        for target in targets
        if _within(target, ("fhir_server.storage.mongo",))
    ]
    assert wrong == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_modules_form_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_see_a_circle_and_a_wrong_direction() -> None:
    """The checker itself: a planted circle and a planted core -> feature import are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "fhir_server.interactions.hooks" in graph["fhir_server.interactions.write"]
    assert "fhir_server.referral.guard" in graph["fhir_server.referral"]
    # integrations are walked too: the HL7 v2 writer goes through interactions/write
    assert "fhir_server.interactions.write" in graph["integrations.hl7v2.apply"]
