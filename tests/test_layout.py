"""The layout of the package: the README's Layout section names every module of zsad/ and cli/ (and
nothing else); every third-party import is declared; the import graph has no cycle and no edge from the
engine to the command line."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_MODULE = re.compile(r"[\w/]+\.py\b")


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Layout\n"):]
    start = section.index("```\n") + 4
    return section[start:section.index("```", start)].splitlines()


def named_modules(lines: list[str]) -> set[str]:
    """Paths named by the block: indented lines are under ``zsad/``, the others under the repository root;
    a bare name after ``pkg/name.py`` on the same line is in ``pkg/`` too."""
    named = set()
    for line in lines:
        base = "zsad/" if line.startswith(" ") else ""
        folder = ""
        for token in _MODULE.findall(line):
            if "/" in token:
                folder = token.rsplit("/", 1)[0] + "/"
                named.add(base + token)
            else:
                named.add(base + folder + token)
    return named


def tree_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for top in ("zsad", "cli") for p in (ROOT / top).rglob("*.py")
            if p.name != "__init__.py" and "__pycache__" not in p.parts}


def test_parser_reads_folders_and_indentation():
    lines = ["zsad/   the engine", "  a.py, b.py   two", "  pkg/c.py, d.py   two in pkg", "cli/e.py, f.py   cli"]
    assert named_modules(lines) == {"zsad/a.py", "zsad/b.py", "zsad/pkg/c.py", "zsad/pkg/d.py", "cli/e.py", "cli/f.py"}


def test_readme_layout_matches_the_tree():
    named, tree = named_modules(_layout_block()), tree_modules()
    assert len(tree) > 30
    assert not tree - named, f"modules missing from the README's Layout: {sorted(tree - named)}"
    assert not named - tree, f"the README's Layout names modules that do not exist: {sorted(named - tree)}"


# --------------------------------------------------------------------------- dependencies


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(top-level module, at module level)`` of every absolute import in a file."""
    import ast

    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], id(node) in top))
    return found


#: Imported inside a function only, with a one-line error naming the package when it is missing, and in no
#: extra: pyarrow, for Parquet results files (README, "Results files, resume, reproducibility").
UNDECLARED_OPTIONAL = {"pyarrow"}


def test_every_import_is_declared():
    """A third-party module imported at module level is a runtime dependency; one imported inside a
    function is a runtime dependency, in an optional extra, or in :data:`UNDECLARED_OPTIONAL`."""
    import importlib.metadata
    import sys
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    runtime = names(project["dependencies"])
    optional = set().union(*(names(reqs) for reqs in project["optional-dependencies"].values()))
    distributions = importlib.metadata.packages_distributions()
    for path in sorted(tree_modules()):
        for module, module_level in _imports(ROOT / path):
            if module in sys.stdlib_module_names or module in ("zsad", "zsad_cli", "__future__"):
                continue
            if module in UNDECLARED_OPTIONAL and not module_level:
                continue
            dists = {d.lower() for d in distributions.get(module, [module])}
            allowed = runtime if module_level else runtime | optional
            assert dists & allowed, f"{path}: imports {module} ({', '.join(sorted(dists))}), not declared"


# --------------------------------------------------------------------------- the import graph


def _module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    parts[0] = "zsad_cli" if parts[0] == "cli" else parts[0]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    import ast

    inside = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
            inside |= {id(n) for n in ast.walk(node)}
    return inside


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``({module: modules of zsad and zsad_cli it imports}, [(module, from module, private name)])``, every
    import counted (inside functions too) except those under ``if TYPE_CHECKING:``."""
    import ast

    paths = {_module_name(p): ROOT / p for p in tree_modules()}
    paths.update({_module_name(p.relative_to(ROOT).as_posix()): p for top in ("zsad", "cli")
                  for p in (ROOT / top).rglob("__init__.py")})

    def owner(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph, private = {}, []
    for module, path in paths.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        aliases = {}  # local name -> zsad module, of ``from zsad.x import y [as z]`` with y a module
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {owner(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = owner(full) if full in paths else owner(base)
                    targets.add(target)
                    if target and full not in paths and alias.name.startswith("_") and target != module:
                        private.append((module, target, alias.name))
                    if full in paths:
                        aliases[alias.asname or alias.name] = full
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                target = aliases.get(node.value.id)
                if target and node.attr.startswith("_") and not node.attr.startswith("__"):
                    private.append((module, target, node.attr))
        graph[module] = targets - {None, module}
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle_and_no_edge_from_the_engine_to_the_cli():
    graph, _ = import_graph()
    assert {"zsad.rank", "zsad.results", "zsad.ranking", "zsad.cluster", "zsad_cli.render"} <= set(graph)
    assert "zsad.results" in graph["zsad.rank"] and "zsad.rank" not in graph["zsad.cluster"]
    found = cycles(graph)
    assert not found, f"import cycles: {found}"
    to_cli = sorted((m, t) for m, ts in graph.items() if m.split(".")[0] == "zsad" for t in ts
                    if t.split(".")[0] == "zsad_cli")
    assert not to_cli, f"the engine imports the command line: {to_cli}"


def test_no_private_name_is_imported_from_another_module():
    _, private = import_graph()
    assert not private, sorted(set(private))
