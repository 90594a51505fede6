"""The test suite itself: it writes no cache outside pytest's temporary folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fewshot.data.cache import default_cache_root


@pytest.fixture(scope="module")
def cache_root_seen_by_a_module_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[str | None, Path, Path]:
    # What a module-scoped fixture (such as the benchmark smoke run, a subprocess) sees when it runs:
    # before any function-scoped fixture of the first test that uses it.
    return os.environ.get("FEWSHOT_CACHE"), default_cache_root(), tmp_path_factory.getbasetemp()


def test_module_fixtures_already_see_a_cache_root_under_pytest_basetemp(cache_root_seen_by_a_module_fixture):
    env, root, base = cache_root_seen_by_a_module_fixture
    assert env is not None, "FEWSHOT_CACHE is unset: a subprocess would write into ~/.cache/fewshot"
    assert Path(env).resolve().is_relative_to(base.resolve())
    assert root.resolve().is_relative_to(base.resolve())
