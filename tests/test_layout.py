"""The package layout is the architecture: strict layering between folders, a small top level."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fewshot"
# Lower layers first: a folder may import only from folders before it (and from itself).
LAYERS = ("utils", "data", "text", "sampling", "models", "methods", "images", "evaluation", "training")


def _imported_folders(path: Path) -> set[str]:
    """The fewshot sub-folders that ``path`` imports from (any import, also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "fewshot" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
    return found


@pytest.mark.parametrize("folder", LAYERS)
def test_a_folder_imports_only_from_the_layers_below_it(folder):
    allowed = set(LAYERS[: LAYERS.index(folder) + 1])
    for path in (PACKAGE / folder).rglob("*.py"):
        above = _imported_folders(path) - allowed
        assert not above, f"{path.relative_to(PACKAGE)} imports from {sorted(above)}, a layer above {folder}/"


def test_every_library_folder_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS)


def test_the_top_level_keeps_only_the_cli_the_config_and_the_package_face():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "cli.py", "config.py"]


def test_the_layer_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from fewshot.training.loop import fit\n")
    assert _imported_folders(bad) == {"training"}
