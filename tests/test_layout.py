"""The README's Layout section names every module of zsad/ and cli/, and nothing that is not there."""

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
