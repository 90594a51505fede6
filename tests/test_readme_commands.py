"""Every ``python -m MODULE`` the README (and the committed results' READMEs) document names a module of this
checkout that runs as a command: a module path that moves must move in the docs too."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "benchmarks" / "results").glob("*/README.md"))]
OURS = ("benchmarks", "baselines", "fewshot", "tools")


def documented() -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for module in re.findall(r"python -m\s+([\w.]+)", doc.read_text()):
            if module.split(".")[0] in OURS:
                found.add((doc.relative_to(ROOT).as_posix(), module))
    return sorted(found)


def test_the_docs_document_commands():
    assert len({m for _, m in documented()}) >= 6


@pytest.mark.parametrize(("doc", "module"), documented())
def test_each_documented_command_is_a_runnable_module(doc: str, module: str):
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"{doc}: python -m {module}: no such module"
    source = Path(spec.origin).read_text()
    assert 'if __name__ == "__main__":' in source, f"{doc}: python -m {module} has no command-line entry"
