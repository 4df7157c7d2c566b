"""The code's map holds: every import (function-level ones too) is read from the source, and the arrows go one way.

    scripts/ -> recipes/ -> models/ -> trainer/ -> tracking/        data/ -> tracking/; models/, recipes/ -> data/

No module imports a module that imports it back, tracking/ imports none of the others, no script imports another
script (or is imported at all), and scripts/ stays a set of entry points."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tracking", "trainer", "data", "models", "recipes")
# What each package may import besides itself: only what is below it.
ALLOWED = {"tracking": set(), "trainer": {"tracking"}, "data": {"tracking"},
           "models": {"trainer", "tracking", "data"}, "recipes": {"models", "trainer", "tracking", "data"},
           "scripts": {"recipes", "models", "trainer", "tracking", "data"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_homes(init: Path) -> dict[str, str]:
    """A package __init__'s `_HOMES` (name -> module it is imported from on first use), if it has one."""
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_HOMES" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _sources() -> dict[str, Path]:
    files = [p for package in (*PACKAGES, "scripts") for p in (ROOT / package).rglob("*.py")]
    return {_module_name(p): p for p in files}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its body; `from pkg import Name` resolves a package's
    lazily imported names to the module that defines them."""
    sources = _sources()
    homes = {name: _lazy_homes(path) for name, path in sources.items() if path.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = []
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in sources:
                        targets.append(submodule)
                    else:
                        targets.append(homes.get(node.module, {}).get(alias.name, node.module))
            else:
                continue
            edges |= {t for t in targets if t.split(".")[0] in (*PACKAGES, "scripts") and t != name}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 40  # every module was read
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_hidden_cycle():
    """The check itself: a local import that closes a loop (data.sources <-> data.cola, as it was) is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", [*PACKAGES, "scripts"])
def test_each_package_imports_only_what_is_below_it(package):
    wrong = sorted((name, target) for name, targets in import_graph().items() if name.split(".")[0] == package
                   for target in targets if target.split(".")[0] not in ALLOWED[package] | {package})
    assert wrong == []


def test_scripts_are_entry_points_that_nothing_imports():
    graph = import_graph()
    assert not any(t.startswith("scripts") for targets in graph.values() for t in targets)
    assert not (ROOT / "scripts" / "__init__.py").exists()
    lines = sum(len(p.read_text().splitlines()) for p in (ROOT / "scripts").glob("*.py"))
    assert lines <= 900, lines


def test_no_other_installed_distribution_provides_these_top_level_names():
    """The packages are installed under their own top-level names (README "Code layout"); another distribution that
    provides `data` or `models` in the same environment would shadow one of them."""
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    assert {name: set(providers.get(name, ())) - {"text-classifier-monitor"} for name in PACKAGES} == \
        {name: set() for name in PACKAGES}
