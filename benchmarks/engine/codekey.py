"""Which code computed a phase: a digest of the source a phase runs, part of its key.

A phase key without its code would let ``--reuse`` (or ``--resume``) bring back numbers computed by an older
version of a method. :func:`code_digest` hashes the source of what a phase calls, found from the objects it
names:

- a function: its own source, then (recursively) every project function, class or module its code names
  through its globals (a factory ``lambda cfg, mean: CRT(...)`` reaches ``CRT``);
- a class: the source files of the project modules of its bases (its MRO) and of the modules they import
  within their own package (``fewshot.methods.crt`` reaches ``linear_head``, ``longtail_functional``, ``base``:
  the maths it runs), so a change to one method's files changes that method's keys and leaves the others';
- a module: its file and the modules it imports within its package (also a module imported inside a
  function);
- a dict, list or tuple the code names (a table of builders): each of its values.

Only project code counts (:data:`PACKAGES`, plus the top-level package of each object given, so that a method
registered from a package of one's own is keyed by that package's code too): torch, NumPy and friends are named
by run.json's package versions. Digests are of source text, so they agree across machines and checkouts.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import types
from collections.abc import Iterable
from typing import Any

PACKAGES: tuple[str, ...] = ("fewshot", "benchmarks", "baselines")


def _in(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def code_digest(*objects: Any) -> str:
    """sha256 (hex, 16 characters) of the source behind ``objects`` (functions, classes, modules)."""
    given = {(getattr(o, "__module__", None) or getattr(o, "__name__", "")).partition(".")[0] for o in objects}
    packages = (*PACKAGES, *sorted(p for p in given if p and p not in ("builtins", "__main__")))
    parts: set[str] = set()
    seen: set[int] = set()
    for obj in objects:
        _collect(obj, parts, seen, packages)
    return hashlib.sha256("\n\0".join(sorted(parts)).encode()).hexdigest()[:16]


def _collect(obj: Any, parts: set[str], seen: set[int], packages: tuple[str, ...]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, functools.partial):
        for value in (obj.func, *obj.args, *obj.keywords.values()):
            _collect(value, parts, seen, packages)
    elif isinstance(obj, (dict, list, tuple)):  # a table of builders: {"maml": _maml, "anil": _anil}
        for value in obj.values() if isinstance(obj, dict) else obj:
            _collect(value, parts, seen, packages)
    elif isinstance(obj, types.ModuleType):
        if _in(obj.__name__, packages):
            parts.update(_module_sources(obj.__name__))
    elif isinstance(obj, type):
        for cls in obj.__mro__:
            if _in(cls.__module__, packages):
                parts.update(_module_sources(cls.__module__))
    elif isinstance(obj, (types.FunctionType, types.MethodType)):
        func = getattr(obj, "__func__", obj)
        if not _in(getattr(func, "__module__", "") or "", packages):
            return
        try:
            parts.add(inspect.getsource(func))
        except (OSError, TypeError):  # defined in an interactive session: its module stands in
            parts.update(_module_sources(func.__module__))
        for name in _names(func.__code__):
            if name in func.__globals__:
                _collect(func.__globals__[name], parts, seen, packages)
            elif "." in name and _in(name, packages):  # ``from fewshot.methods.maml import MAML`` in a function
                parts.update(_module_sources(name))
        for cell in func.__closure__ or ():
            try:
                _collect(cell.cell_contents, parts, seen, packages)
            except ValueError:  # an empty cell
                pass


def _names(code: types.CodeType) -> Iterable[str]:
    """Global names a code object (and the functions, lambdas and comprehensions nested in it) reads."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


@functools.lru_cache(maxsize=None)
def _module_sources(name: str) -> frozenset[str]:
    """Source text of module ``name`` and of the modules it imports within its own package, transitively."""
    package = name.rpartition(".")[0] or name
    todo, done, out = [name], set(), set()
    while todo:
        current = todo.pop()
        if current in done:
            continue
        done.add(current)
        try:
            spec = importlib.util.find_spec(current)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        with open(spec.origin, encoding="utf-8") as fh:
            source = fh.read()
        out.add(f"# {current}\n{source}")
        for target in _imports(current, source, spec.submodule_search_locations is not None):
            if target.startswith(package + ".") and target not in done:
                todo.append(target)
    return frozenset(out)


def _imports(module: str, source: str, is_package: bool) -> set[str]:
    """The modules of its own top-level package that ``module`` imports; ``from package import name`` counts as
    the module defining ``name``."""
    top = module.partition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            if base.partition(".")[0] == top:
                found.update(_defining_module(base, alias.name) for alias in node.names)
    return found


def _defining_module(base: str, name: str) -> str:
    """``base.name`` when that is a module, else the module of the same package that defines ``name`` (a class
    re-exported by ``base``), else ``base`` itself (a constant, or a function it took from elsewhere)."""
    try:
        if importlib.util.find_spec(f"{base}.{name}") is not None:
            return f"{base}.{name}"
    except (ImportError, ValueError):
        pass
    try:
        value = getattr(importlib.import_module(base), name, None)
    except ImportError:
        return base
    defined = getattr(value, "__module__", None) or base
    return defined if defined.partition(".")[0] == base.partition(".")[0] else base
