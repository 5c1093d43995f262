"""The package's layout rules, checked on its source with ``ast`` (nothing is imported).

* No import cycles among headstart's modules. Every import counts: at module level, inside
  a function, or under ``TYPE_CHECKING``, since each is a dependency a reader has to follow.
  A module's import of its own parent package, or of ``headstart`` itself, is not an edge.
* No module uses another headstart module's ``_private`` names (one leading underscore;
  dunders are fine): neither ``from x import _name`` nor ``x._name`` on an imported module.
  A name shared between modules is public, with a name that says what it is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "headstart"


class Source(NamedTuple):
    """One module's syntax tree, and whether it is a package's ``__init__.py``."""

    tree: ast.Module
    is_package: bool


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    mods: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _parse(mods: dict[str, Path]) -> dict[str, Source]:
    return {
        m: Source(
            ast.parse(p.read_text(encoding="utf-8"), filename=str(p)), p.name == "__init__.py"
        )
        for m, p in mods.items()
    }


def _resolve(name: str, sources: dict[str, Source]) -> str | None:
    """The module ``name`` lives in: itself, or its nearest enclosing module of the package."""
    while name and name not in sources:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, node: ast.ImportFrom, sources: dict[str, Source]) -> str:
    """The absolute module name of ``from <node.module> import ...`` written in ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if sources[module].is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def import_graph(sources: dict[str, Source]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (same rules as shared/tools/import-cycles.py)."""
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, src in sources.items():
        for node in ast.walk(src.tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node, sources)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = _resolve(t, sources) if _in_package(t) else None
                if r and r not in (module, PACKAGE) and not module.startswith(r + "."):
                    graph[module].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of two or more modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def private_uses(sources: dict[str, Source]) -> list[str]:
    """``module:line ...`` for every use of another module's ``_private`` name."""
    out: list[str] = []
    for module, src in sources.items():
        aliases: dict[str, str] = {}  # local name -> the package module it is bound to
        for node in ast.walk(src.tree):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(module, node, sources)
                if not _in_package(base):
                    continue
                for a in node.names:
                    if f"{base}.{a.name}" in sources:  # a submodule (private modules are fine)
                        aliases[a.asname or a.name] = f"{base}.{a.name}"
                        continue
                    owner = _resolve(base, sources)
                    if _is_private(a.name) and owner not in (None, module):
                        out.append(f"{module}:{node.lineno} imports {a.name} from {owner}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in sources:
                        aliases[a.asname] = a.name
        for node in ast.walk(src.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and aliases.get(node.value.id, module) != module
                and _is_private(node.attr)
            ):
                owner = aliases[node.value.id]
                out.append(f"{module}:{node.lineno} uses {owner}.{node.attr}")
    return sorted(set(out))


def missing_modules(sources: dict[str, Source]) -> list[str]:
    """``module:line ...`` for every import of a package module that does not exist.

    Such an import fails only when it runs (often inside a function), and it would leave
    an edge out of the import graph above, so it is checked here.
    """
    out: list[str] = []
    for module, src in sources.items():
        for node in ast.walk(src.tree):
            if isinstance(node, ast.ImportFrom):
                names = [_absolute(module, node, sources)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if _in_package(name) and name not in sources:
                    out.append(f"{module}:{node.lineno} imports {name}, which does not exist")
    return sorted(set(out))


SOURCES = _parse(_modules())


def test_the_package_has_modules():
    # Guards the two checks below against passing on an empty walk (a wrong SRC path).
    assert f"{PACKAGE}.backbones.registry" in SOURCES
    assert len(SOURCES) > 20


def test_no_import_cycles():
    found = cycles(import_graph(SOURCES))
    assert not found, f"{len(found)} import cycle(s) among headstart's modules:\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_every_import_of_the_package_names_an_existing_module():
    missing = missing_modules(SOURCES)
    assert not missing, f"{len(missing)} import(s) of modules that do not exist:\n" + "\n".join(
        missing
    )


def test_no_private_names_used_across_modules():
    uses = private_uses(SOURCES)
    assert not uses, (
        f"{len(uses)} use(s) of another module's _private name (make the name public, with a "
        "clear name, or move it to the module that uses it):\n" + "\n".join(uses)
    )


# ----------------------------------------------------------------- the checkers themselves


def _fake(modules: dict[str, str]) -> dict[str, Source]:
    """Sources of a made-up package; a module with submodules is a package (``__init__.py``)."""
    return {
        name: Source(ast.parse(code), any(m.startswith(name + ".") for m in modules))
        for name, code in modules.items()
    }


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        (
            {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}, "e": {"a", "c"}},
            [["a", "b"], ["c", "d"]],
        ),
    ],
)
def test_cycle_finder(graph, expected):
    assert cycles(graph) == expected


def test_import_graph_counts_relative_function_level_and_type_checking_imports():
    sources = _fake(
        {
            "headstart": "",
            "headstart.p": "from .a import x",
            "headstart.p.a": "def f():\n    from .b import y\n",
            "headstart.p.b": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from ..p import a\n",
            "headstart.q": "import headstart.p.a as a\nimport headstart\nimport numpy\n",
        }
    )
    graph = import_graph(sources)
    assert graph == {
        "headstart": set(),
        "headstart.p": {"headstart.p.a"},
        "headstart.p.a": {"headstart.p.b"},
        "headstart.p.b": {"headstart.p.a"},  # the parent package itself is not an edge
        "headstart.q": {"headstart.p.a"},
    }
    assert cycles(graph) == [["headstart.p.a", "headstart.p.b"]]


def test_private_uses_finds_imports_and_attributes_but_not_dunders_or_own_names():
    sources = _fake(
        {
            "headstart": "",
            "headstart._io": "def _helper(): ...\ndef public(): ...\n",
            "headstart.a": "from ._io import _helper, public\nfrom . import _io\n_io._helper()\n",
            "headstart.b": "from headstart import _io as io\nio.__name__\nfrom ._io import __doc__\n",
            "headstart.c": "def _mine(): ...\n_mine()\n",
        }
    )
    assert private_uses(sources) == [
        "headstart.a:1 imports _helper from headstart._io",
        "headstart.a:3 uses headstart._io._helper",
    ]


def test_missing_modules_finds_relative_imports_gone_stale():
    sources = _fake(
        {
            "headstart": "",
            "headstart.a": "",
            "headstart.p": "",
            "headstart.p.b": "def f():\n    from .a import x\n    from ..a import y\n",
            "headstart.q": "import headstart.gone\nfrom headstart import a\n",
        }
    )
    assert missing_modules(sources) == [
        "headstart.p.b:2 imports headstart.p.a, which does not exist",
        "headstart.q:1 imports headstart.gone, which does not exist",
    ]


#: A module longer than this says why at the top of its docstring ("Size (over ~600 lines").
MAX_LINES = 600


def test_long_modules_say_why_they_are_long():
    unexplained = []
    for mod, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > MAX_LINES and "Size (over ~600 lines" not in doc:
            unexplained.append(f"{mod} ({n} lines)")
    assert not unexplained, f"split these modules or say why they are long: {unexplained}"
