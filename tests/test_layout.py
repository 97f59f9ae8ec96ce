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
